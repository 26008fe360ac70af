//! Python's `logging` in its common format, `%(asctime)s - %(name)s - %(levelname)s - %(message)s`:
//!
//! ```text
//! 2026-11-26 10:00:00,123 - bot.handlers - ERROR - Reply failed
//! Traceback (most recent call last):
//!   File "/app/bot/handlers.py", line 42, in reply
//! TimeoutError: read timed out
//! ```
//!
//! A line in that format starts a record; any other non-blank line (a traceback, a multi-line message) continues
//! the record before it. `asctime` has no zone: it is read as UTC (set `logging.Formatter.converter =
//! time.gmtime` in the service, or log in UTC).

use selfmon_sdk::parse::{self, Batch, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;

pub struct Python;

impl Parser for Python {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("python", env!("CARGO_PKG_VERSION"), "Python logging lines (asctime - name - level - message)")
    }

    fn parse(_: &Self::Config, batch: &Batch) -> Vec<Outcome> {
        batch.lines.iter().map(|line| parse_line(line)).collect()
    }
}

selfmon_sdk::export_parser!(Python);

pub fn parse_line(line: &str) -> Outcome {
    if line.trim().is_empty() {
        return Outcome::Skip;
    }
    let mut parts = line.splitn(4, " - ");
    let (Some(time), Some(name), Some(level), Some(message)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Outcome::Continuation;
    };
    let (Some(timestamp), Some(level)) = (parse::timestamp_ns(time), parse::level(level)) else {
        return Outcome::Continuation;
    };
    let mut record = Record::new(level, message.to_string());
    record.timestamp_ns = Some(timestamp);
    record.logger = Some(name.trim().to_string());
    Outcome::Parsed(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfmon_sdk::parse::Level;

    #[test]
    fn records_and_their_tracebacks() {
        let Outcome::Parsed(record) = parse_line("2026-11-26 10:00:00,123 - bot.handlers - ERROR - Reply - failed")
        else {
            panic!("not parsed")
        };
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.message, "Reply - failed");
        assert_eq!(record.logger.as_deref(), Some("bot.handlers"));
        assert_eq!(record.timestamp_ns, Some(1_795_687_200_123_000_000));
        for line in ["Traceback (most recent call last):", "  File \"x.py\", line 1", "ValueError: a - b - c - d"] {
            assert!(matches!(parse_line(line), Outcome::Continuation), "{line}");
        }
        assert!(matches!(parse_line(""), Outcome::Skip));
    }
}

/// Fuzz targets (`scripts/fuzz` runs them for as long as it is given; the suite runs them briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Lines of the shapes this parser reads, to be damaged.
    const VALID: &[&str] = &[
        r#"2026-11-26 10:00:00,123 - bot.handlers - ERROR - Reply - failed"#,
        r#"Traceback (most recent call last):"#,
        r#"  File "bot.py", line 3, in <module>"#,
        r#"[2026-11-26 10:00:00,123] WARNING in app: slow"#,
    ];

    proptest! {
        /// Any line is parsed, refused or skipped: never a panic.
        #[test]
        fn any_line(line in any::<String>()) {
            let _ = parse_line(&line);
        }

        /// A line of a known shape with anything put in anywhere.
        #[test]
        fn a_damaged_line(valid in prop::sample::select(VALID), at in any::<prop::sample::Index>(), junk in any::<String>()) {
            let line = selfmon_sdk::parse::damaged(valid, at.index(valid.len() + 1), &junk);
            let _ = parse_line(&line);
        }
    }
}
