//! Notifications between nodes: a connection of its own that `LISTEN`s on some channels and hands on what any
//! node sends there (`pg_notify`, delivered when the sender's transaction commits). When the connection drops it is
//! made again; a [`Heard::Reconnected`] then says that notifications may have been missed in between.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::Target;

/// How long to wait before connecting again after the connection dropped or could not be made.
const RETRY: Duration = Duration::from_secs(1);
/// Notifications waiting for the listener; past this the newest are dropped and [`Heard::Reconnected`] is reported
/// once there is room, so a listener that falls behind catches up from the store.
const BACKLOG: usize = 4096;
/// Idle time before a keepalive probe, and between probes.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What the listening connection heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A notification: its channel and payload.
    Notice { channel: String, payload: String },
    /// Listening (again) after a gap in which notifications may have been missed.
    Reconnected,
}

/// Listen on `channels` until `stop`.
pub fn listen(target: Target, channels: &[&str], stop: CancellationToken) -> mpsc::Receiver<Heard> {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    let statement: String = channels.iter().map(|channel| format!("LISTEN {channel};")).collect();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                ended = session(&target, &statement, &sender) => match ended {
                    Ended::ListenerGone => return,
                    Ended::Dropped(error) => {
                        tracing::warn!(target = %target.name, %error, "Lost the connection that hears other nodes; connecting again");
                    }
                },
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    });
    receiver
}

enum Ended {
    ListenerGone,
    Dropped(String),
}

/// One connection's life: connect, listen, hand on notifications until it drops.
async fn session(target: &Target, statement: &str, sender: &mpsc::Sender<Heard>) -> Ended {
    // A connection that only listens sends nothing: keepalives find out when the server is gone without a word
    // (a crash, a network cut), in about a minute rather than the system's two hours.
    let mut config = target.config.clone();
    config.keepalives(true).keepalives_idle(KEEPALIVE).keepalives_interval(KEEPALIVE).keepalives_retries(3);
    let (client, mut connection) = match config.connect(target.tls.clone()).await {
        Ok(connected) => connected,
        Err(error) => return Ended::Dropped(crate::storage::sql::postgres_message(&error)),
    };
    let (messages, mut heard) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notice))) => {
                    let notice = Heard::Notice { channel: notice.channel().into(), payload: notice.payload().into() };
                    if messages.send(Ok(notice)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = messages.send(Err(crate::storage::sql::postgres_message(&error)));
                    return;
                }
                None => {
                    let _ = messages.send(Err("the server closed the connection".to_string()));
                    return;
                }
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    if let Err(error) = client.batch_execute(statement).await {
        return Ended::Dropped(crate::storage::sql::postgres_message(&error));
    }
    if sender.send(Heard::Reconnected).await.is_err() {
        return Ended::ListenerGone;
    }
    // Whether notices were dropped since the listener was last told.
    let mut behind = false;
    while let Some(message) = heard.recv().await {
        let notice = match message {
            Ok(notice) => notice,
            Err(error) => return Ended::Dropped(error),
        };
        let notice = if behind { Heard::Reconnected } else { notice };
        match sender.try_send(notice) {
            Ok(()) => behind = false,
            Err(mpsc::error::TrySendError::Closed(_)) => return Ended::ListenerGone,
            // What is dropped is read from the store once the listener has caught up.
            Err(mpsc::error::TrySendError::Full(_)) => behind = true,
        }
    }
    drop(client);
    Ended::Dropped("the connection ended".into())
}

/// Stops the connection's task with the session that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
