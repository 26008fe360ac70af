//! Log parsers: a batch of raw lines in, one [`Outcome`] per line out.
//!
//! A parser never sees files or the network: the host reads the lines (from files it tails, the HTTP API or
//! syslog) and hands them over in batches. A record spread over several lines (a Python traceback) is joined by
//! answering [`Outcome::Continuation`] for its later lines; the host appends them to the record before, even across
//! batches. A line the parser does not understand is [`Outcome::Invalid`]: the host keeps it, raw and flagged.
//!
//! The helpers here are what every parser needs and should agree on: [`level`] maps the many spellings of a level
//! (and numeric ones) to [`Level`], and [`timestamp_ns`] reads the usual ways of writing a time.
//!
//! ```no_run
//! use selfmon_sdk::parse::*;
//! use selfmon_sdk::prelude::*;
//!
//! struct Plain;
//!
//! impl Parser for Plain {
//!     type Config = serde_json::Value;
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("plain", "0.1.0", "Every line is an info record")
//!     }
//!
//!     fn parse(_config: &Self::Config, batch: &Batch) -> Vec<Outcome> {
//!         batch.lines.iter().map(|line| Outcome::Parsed(Record::new(Level::Info, line.clone()))).collect()
//!     }
//! }
//!
//! selfmon_sdk::export_parser!(Plain);
//! ```

use serde::de::DeserializeOwned;

pub use crate::__private::types::{Level, LogRecord as Record, ParseOutcome as Outcome};
use crate::info::PluginInfo;

/// The names under which structured logs (JSON, logfmt) usually write each record field, most usual first. Parsers
/// share them so every format normalizes the same aliases.
pub mod names {
    pub const TIME: &[&str] = &["timestamp", "ts", "time", "@timestamp", "asctime", "created"];
    pub const LEVEL: &[&str] = &["level", "levelname", "severity", "log.level", "lvl"];
    pub const MESSAGE: &[&str] = &["message", "msg", "event", "@message"];
    pub const LOGGER: &[&str] = &["logger", "name", "logger_name"];
    pub const SERVICE: &[&str] = &["service", "service.name", "app"];
    pub const TRACE: &[&str] = &["trace_id", "traceId", "trace.id", "otelTraceID"];
    pub const SPAN: &[&str] = &["span_id", "spanId", "span.id", "otelSpanID"];
    pub const CORRELATION: &[&str] = &["correlation_id", "correlationId", "request_id", "requestId"];
    pub const USER: &[&str] = &["user_id", "userId", "user.id"];
}

/// A batch of lines from one log source.
#[derive(Debug)]
pub struct Batch {
    /// The source's name in the operator's config.
    pub source: String,
    /// The source's default service, for records that do not name one.
    pub service: Option<String>,
    /// The lines in the order they were read, without line terminators.
    pub lines: Vec<String>,
}

/// A log parser. Implement it and export it with [`export_parser!`](crate::export_parser).
pub trait Parser {
    /// The source's `parser_config`, deserialized (use `serde_json::Value` for none).
    type Config: DeserializeOwned;

    fn info() -> PluginInfo;

    /// Check a source's config without reading any log.
    fn validate(_config: &Self::Config) -> Result<(), crate::Error> {
        Ok(())
    }

    /// Exactly one outcome per line, in order.
    fn parse(config: &Self::Config, batch: &Batch) -> Vec<Outcome>;
}

impl Record {
    /// A record with a level and a message and nothing else; the host fills in the time it read the line.
    pub fn new(level: Level, message: String) -> Self {
        Self {
            timestamp_ns: None,
            level,
            service: None,
            logger: None,
            message,
            trace_id: None,
            span_id: None,
            correlation_id: None,
            user_id: None,
            fields: Vec::new(),
        }
    }

    /// Add a text field (stored as a JSON string, as record fields hold their values).
    pub fn add_text(&mut self, key: &str, value: &str) {
        self.fields.push((key.to_string(), serde_json::Value::String(value.to_string()).to_string()));
    }
}

/// `line` with `junk` put in at byte `at` (moved back to a character boundary, and to the end past it): a known line
/// damaged anywhere, for a parser's fuzz tests, which hold that it reads or refuses anything without a panic.
pub fn damaged(line: &str, at: usize, junk: &str) -> String {
    let mut at = at.min(line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{junk}{}", &line[..at], &line[at..])
}

/// A level by any of its usual names, any case: `warn`/`warning`, `err`/`error`, `fatal`/`crit`/`critical`,
/// `notice`, `security`, `audit`, ...
pub fn level(name: &str) -> Option<Level> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "trace" | "finest" => Level::Trace,
        "debug" | "dbg" | "fine" => Level::Debug,
        "info" | "information" | "informational" | "notice" | "log" => Level::Info,
        "warn" | "warning" => Level::Warning,
        "error" | "err" | "exception" => Level::Error,
        "critical" | "crit" | "fatal" | "panic" | "emerg" | "emergency" | "alert" => Level::Critical,
        "security" => Level::Security,
        "audit" => Level::Audit,
        _ => return None,
    })
}

/// A syslog severity (RFC 5424: 0 emergency … 7 debug).
pub fn syslog_level(severity: u8) -> Option<Level> {
    Some(match severity {
        0..=2 => Level::Critical,
        3 => Level::Error,
        4 => Level::Warning,
        5 | 6 => Level::Info,
        7 => Level::Debug,
        _ => return None,
    })
}

/// A Python `logging` level number (`levelno`: 10 debug … 50 critical).
pub fn python_level(number: i64) -> Level {
    match number {
        ..=9 => Level::Trace,
        10..=19 => Level::Debug,
        20..=29 => Level::Info,
        30..=39 => Level::Warning,
        40..=49 => Level::Error,
        _ => Level::Critical,
    }
}

/// Nanoseconds since the Unix epoch, from RFC 3339 (`2026-11-26T10:00:00.123+03:00`, `Z`, `+0300`), the same
/// with a space for `T`, Python's `2026-11-26 10:00:00,123`, or a time without a zone (taken as UTC).
pub fn timestamp_ns(text: &str) -> Option<i64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let mut at = 19;
    let mut nanos = 0i64;
    if at < bytes.len() && matches!(bytes[at], b'.' | b',') {
        at += 1;
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        let digits = &text[start..at];
        if digits.is_empty() {
            return None;
        }
        let kept = &digits[..digits.len().min(9)];
        nanos = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
    }
    let offset_seconds = match &text[at..] {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (hours, minutes): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            sign * (hours * 3600 + minutes * 60)
        }
    };
    utc_ns(year, month, day, (hour, minute, second), nanos, offset_seconds)
}

/// Nanoseconds since the Unix epoch of a calendar date and time of day (`(hour, minute, second)`), written at a
/// UTC offset of `offset_seconds` (east positive). None when a part is out of range.
pub fn utc_ns(year: i64, month: i64, day: i64, time: (i64, i64, i64), nanos: i64, offset_seconds: i64) -> Option<i64> {
    let (hour, minute, second) = time;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(0..24).contains(&hour) {
        return None;
    }
    if !(0..60).contains(&minute) || !(0..=60).contains(&second) || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The number (1–12) of a month by its English abbreviation (`Jan`, `nov`, `DEC`).
pub fn month(abbreviation: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let lower = abbreviation.to_ascii_lowercase();
    MONTHS.iter().position(|m| *m == lower).map(|i| i as i64 + 1)
}

/// A Unix time in seconds, milliseconds, microseconds or nanoseconds (told apart by size), as nanoseconds.
pub fn epoch_ns(value: f64) -> Option<i64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let nanos = if value < 1e11 {
        value * 1e9
    } else if value < 1e14 {
        value * 1e6
    } else if value < 1e17 {
        value * 1e3
    } else {
        value
    };
    (nanos < i64::MAX as f64).then_some(nanos as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Parse a config as the host sends it: each value JSON text.
pub(crate) fn config<T: DeserializeOwned>(pairs: &[(String, String)]) -> Result<T, String> {
    let mut table = serde_json::Map::new();
    for (key, value) in pairs {
        let value = serde_json::from_str(value).map_err(|e| format!("config key `{key}`: not JSON: {e}"))?;
        table.insert(key.clone(), value);
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(table)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("invalid config: {}", e.inner())
        } else {
            format!("invalid config key `{path}`: {}", e.inner())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_damaged_at_a_character_boundary() {
        assert_eq!(damaged("ab", 1, "X"), "aXb");
        // Inside "é" (two bytes): before it. Past the end: at the end.
        assert_eq!(damaged("aé", 2, "X"), "aXé");
        assert_eq!(damaged("ab", 9, "X"), "abX");
    }

    #[test]
    fn timestamps_in_the_usual_shapes() {
        // date -u -d 2026-11-26T10:00:00Z +%s → 1795687200
        let base = 1_795_687_200_000_000_000i64;
        assert_eq!(timestamp_ns("2026-11-26T10:00:00Z"), Some(base));
        assert_eq!(timestamp_ns("2026-11-26T10:00:00.123Z"), Some(base + 123_000_000));
        assert_eq!(timestamp_ns("2026-11-26 10:00:00,123"), Some(base + 123_000_000));
        assert_eq!(timestamp_ns("2026-11-26T13:00:00+03:00"), Some(base));
        assert_eq!(timestamp_ns("2026-11-26T05:30:00.000001-0430"), Some(base + 1_000));
        assert_eq!(timestamp_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(timestamp_ns("2000-02-29T00:00:00Z"), Some(951_782_400_000_000_000));
        for bad in
            ["yesterday", "2026-13-01T00:00:00Z", "2026-11-26T10:00", "2026-11-26T10:00:00+3", "2026-11-26T10:00:00."]
        {
            assert_eq!(timestamp_ns(bad), None, "{bad}");
        }
        assert_eq!(epoch_ns(1_795_687_200.5), Some(base + 500_000_000));
        assert_eq!(epoch_ns(1_795_687_200_000.0), Some(base));
        assert_eq!(epoch_ns(f64::NAN), None);
        assert_eq!(utc_ns(2026, 11, 26, (13, 0, 0), 0, 3 * 3600), Some(base));
        assert_eq!(utc_ns(2026, 11, 26, (24, 0, 0), 0, 0), None);
        assert_eq!((month("Nov"), month("DEC"), month("Movember")), (Some(11), Some(12), None));
    }

    #[test]
    fn levels_by_any_name() {
        assert_eq!(level("WARN"), Some(Level::Warning));
        assert_eq!(level("fatal"), Some(Level::Critical));
        assert_eq!(level("Security"), Some(Level::Security));
        assert_eq!(level("loud"), None);
        assert_eq!(syslog_level(3), Some(Level::Error));
        assert_eq!(python_level(30), Level::Warning);
    }
}
