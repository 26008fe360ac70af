//! The `tcp` checker: connects to `host:port`, and optionally sends a request and waits for a reply that contains
//! what it expects (a banner, a `PONG`, a status line). What every uptime monitor's port check does, with the
//! reply's first line in the summary.
//!
//! ```toml
//! [[check]]
//! name = "redis"
//! plugin = "tcp"
//! target = "cache.internal:6379"
//! [check.config]
//! send = "PING\r\n"
//! expect = "+PONG"
//! ```

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use selfmon_sdk::prelude::*;
use selfmon_sdk::tcp;

/// The most of a reply read while looking for `expect`.
const MAX_REPLY: usize = 64 * 1024;
/// How long before the call's deadline reading gives up.
const READ_MARGIN: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
pub struct Config {
    /// Sent once connected (TOML escapes: `"PING\r\n"`).
    send: Option<String>,
    /// Text the reply must contain; without it, a connection is enough (after `send`, when set).
    expect: Option<String>,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

pub struct Tcp;

impl Checker for Tcp {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "tcp",
            env!("CARGO_PKG_VERSION"),
            "Connects to host:port; optionally sends a request and expects text in the reply",
        )
        .config(Setting::text("send", "Text to send once connected, such as \"PING\\r\\n\""))
        .config(Setting::text("expect", "Text the reply must contain (read up to 64 KiB), such as \"+PONG\""))
        .config(
            Setting::duration("degraded_after", "Report degraded when connecting and the exchange take longer")
                .default("1s"),
        )
    }

    fn validate(config: &Config, ctx: &Context) -> Result<(), Error> {
        address(ctx)?;
        if config.expect.as_deref() == Some("") {
            return Err("`expect` is empty: leave it out to accept any reply".into());
        }
        Ok(())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let address = address(ctx)?;
        let started = Instant::now();
        let mut stream = match tcp::connect(&address, ctx.time_left()) {
            Ok(stream) => stream,
            Err(error) => return Ok(CheckResult::unhealthy(error.to_string()).detail("address", &address)),
        };
        let connected = started.elapsed();
        // A reply that does not come (or comes a byte at a time) is this check's finding, not a call stopped at its
        // deadline: stop reading a little before it.
        let give_up = Instant::now() + ctx.time_left().saturating_sub(READ_MARGIN).max(READ_MARGIN);
        let mut result = exchange(&config, &mut stream, &address, connected, give_up);
        let elapsed = started.elapsed();
        if result.status == Status::Healthy && elapsed > config.degraded_after {
            result.status = Status::Degraded;
            result.summary = format!("{} (slower than {} ms)", result.summary, config.degraded_after.as_millis());
        }
        Ok(result
            .detail("address", &address)
            .metric("connect_time_seconds", connected.as_secs_f64())
            .metric("response_time_seconds", elapsed.as_secs_f64()))
    }
}

/// Send the request, read the reply until it holds `expect`, ends, or reaches [`MAX_REPLY`]; judge it.
fn exchange(
    config: &Config,
    stream: &mut std::net::TcpStream,
    address: &str,
    connected: Duration,
    give_up: Instant,
) -> CheckResult {
    let head = format!("TCP {address} connected in {} ms", connected.as_millis());
    if let Some(send) = &config.send
        && let Err(error) = stream.write_all(send.as_bytes()).and_then(|()| stream.flush())
    {
        return CheckResult::unhealthy(format!("{head}, but sending failed: {error}"));
    }
    let Some(expect) = config.expect.as_ref().filter(|expect| !expect.is_empty()) else {
        return CheckResult::healthy(head);
    };
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut searched: usize = 0;
    let found = loop {
        // Only what arrived since the last search, with the tail a match could start in.
        if contains(&reply[searched.saturating_sub(expect.len().saturating_sub(1))..], expect.as_bytes()) {
            break Ok(());
        }
        searched = reply.len();
        if reply.len() >= MAX_REPLY {
            break Err("no match in the first 64 KiB".to_string());
        }
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break Err("no more reply in time".to_string());
        }
        match stream.read(&mut chunk) {
            Ok(0) => break Err("the server closed the connection".to_string()),
            Ok(read) => reply.extend_from_slice(&chunk[..read.min(MAX_REPLY - reply.len())]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break Err("no more reply in time".to_string());
            }
            Err(e) => break Err(format!("reading failed: {e}")),
        }
    };
    let first_line = first_line(&reply);
    let result = match found {
        Ok(()) => CheckResult::healthy(format!("{head}, reply `{first_line}`")),
        Err(why) if reply.is_empty() => CheckResult::unhealthy(format!("{head}, but no reply: {why}")),
        Err(why) => CheckResult::unhealthy(format!("{head}, but the reply lacks `{expect}` ({why}): `{first_line}`")),
    };
    result.metric("bytes_received", reply.len() as f64)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The reply's first line, printable and at most 120 characters.
fn first_line(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let line = text.lines().next().unwrap_or_default();
    let printable: String = line.chars().map(|c| if c.is_control() { '.' } else { c }).take(120).collect();
    printable
}

/// `host:port` from the check's target.
fn address(ctx: &Context) -> Result<String, Error> {
    let target = ctx.target().ok_or("set `target` to host:port")?;
    if target.contains("://") {
        // Not quoted: a URL may carry a password.
        return Err("`target` is a URL: write host:port, without a scheme".into());
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(target.to_string()),
        _ => Err(format!("`target` `{target}` is not host:port").into()),
    }
}

selfmon_sdk::export_checker!(Tcp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_searched_and_shown_safely() {
        assert!(contains(b"+PONG\r\n", b"+PONG"));
        assert!(!contains(b"-ERR", b"+PONG"));
        assert_eq!(first_line(b"220 mail ready\r\nmore"), "220 mail ready");
        assert_eq!(first_line(b"\x1b[31mred\x07"), ".[31mred.");
        assert_eq!(first_line(&[b'x'; 500]).len(), 120);
    }
}
