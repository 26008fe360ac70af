//! Telling the service manager how selfmon is, where one asked (systemd's `Type=notify`, which sets
//! `NOTIFY_SOCKET`): ready once the API listens and every check, source and rule has started, stopping when it
//! shuts down, and, under `WatchdogSec=`, alive at half that interval. The heartbeat comes from the async runtime
//! that serves everything, so a runtime that stopped turning gets selfmon restarted. Without `NOTIFY_SOCKET` each
//! call does nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shortest watchdog interval heartbeats are sent for.
const MIN_WATCHDOG: std::time::Duration = std::time::Duration::from_millis(20);

/// Serving: `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutting down: systemd waits for the exit instead of counting it a failure.
pub fn stopping() {
    tell(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog's heartbeat, at half the interval systemd gave (`WATCHDOG_USEC`), until `stop`.
pub fn spawn_watchdog(tasks: &TaskTracker, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    if interval < MIN_WATCHDOG {
        tracing::warn!(?interval, "WatchdogSec is too short to keep up with: no heartbeats are sent");
        return;
    }
    tasks.spawn(async move {
        let mut beats = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = beats.tick() => tell(&[NotifyState::Watchdog]),
            }
        }
    });
}

fn tell(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "Cannot tell the service manager (NOTIFY_SOCKET) how selfmon is");
    }
}
