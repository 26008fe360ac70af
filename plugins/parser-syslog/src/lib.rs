//! syslog lines as they arrive over the network and as rsyslog and syslog-ng write them to files:
//!
//! ```text
//! <165>1 2026-11-26T10:00:00.003Z db1 postgres 4242 ID47 [origin ip="10.0.0.5"] connection refused   (RFC 5424)
//! <34>Nov 26 10:00:00 db1 su[812]: 'su root' failed for alice on /dev/pts/8                        (RFC 3164)
//! Nov 26 10:00:00 db1 sshd[1234]: Failed password for root from 203.0.113.9 port 22 ssh2            (a file)
//! 2026-11-26T10:00:00.123456+00:00 db1 sshd[1234]: Accepted publickey for deploy                    (a file, RFC 3339)
//! ```
//!
//! The level comes from the priority's severity (0–2 critical, 3 error, 4 warning, 5–6 info, 7 debug; info when
//! there is no priority). The app name is the record's logger; `hostname`, `pid`, `msgid`, `facility` and
//! structured-data parameters (`origin.ip`) are fields.
//!
//! A failed login (sshd's `Failed password`/`Invalid user`, PAM's `authentication failure`, su and sudo
//! failures) is a SECURITY record with an `auth_failure` field, and the remote address in `remote_addr` when the
//! line names one, so selfmon's security events can count bursts.
//!
//! RFC 3164 times have no year and no zone: the year is the current one (last year for a date ahead of now) and
//! the zone is UTC unless the source's `parser_config` says `utc_offset = "+03:00"`.

use selfmon_sdk::parse::{self, Batch, Level, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;

pub struct Syslog;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The UTC offset of times written without a zone (`+03:00`, `-0500`); UTC when absent.
    utc_offset: Option<String>,
}

impl Parser for Syslog {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new("syslog", env!("CARGO_PKG_VERSION"), "syslog lines: RFC 5424, RFC 3164 and rsyslog's files")
            .config(Setting::text("utc_offset", "The UTC offset of times written without a zone (+03:00)"))
    }

    fn validate(config: &Config) -> Result<(), Error> {
        offset_seconds(config).map(|_| ()).map_err(Error::from)
    }

    fn parse(config: &Config, batch: &Batch) -> Vec<Outcome> {
        let offset = offset_seconds(config).unwrap_or(0);
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        batch.lines.iter().map(|line| parse_line(line, offset, now_ns)).collect()
    }
}

selfmon_sdk::export_parser!(Syslog);

fn offset_seconds(config: &Config) -> Result<i64, String> {
    let Some(text) = &config.utc_offset else { return Ok(0) };
    let bad = || format!("`utc_offset`: `{text}` is not an offset such as +03:00 or -0500");
    let sign = match text.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (hours, minutes): (i64, i64) =
        (digits[..2].parse().map_err(|_| bad())?, digits[2..].parse().map_err(|_| bad())?);
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok(sign * (hours * 3600 + minutes * 60))
}

/// Parse one line; `offset` is the zone of zone-less times, `now_ns` places a year-less RFC 3164 date.
pub fn parse_line(line: &str, offset: i64, now_ns: i64) -> Outcome {
    let line = line.trim_end();
    if line.trim().is_empty() {
        return Outcome::Skip;
    }
    let (priority, rest) = match priority(line) {
        Ok(split) => split,
        Err(reason) => return Outcome::Invalid(reason),
    };
    let parsed = match rest.strip_prefix("1 ") {
        Some(rest5424) if priority.is_some() => rfc5424(rest5424),
        _ => rfc3164(rest, offset, now_ns),
    };
    let Some(mut record) = parsed else {
        return Outcome::Invalid("not a syslog line (RFC 5424, RFC 3164 or a syslog file)".into());
    };
    if let Some(priority) = priority {
        record.level = parse::syslog_level(priority % 8).unwrap_or(Level::Info);
        record.add_text("facility", FACILITIES.get(usize::from(priority / 8)).copied().unwrap_or("unknown"));
    }
    if is_auth_failure(record.logger.as_deref().unwrap_or(""), &record.message) {
        record.level = Level::Security;
        record.fields.push(("auth_failure".into(), "true".into()));
        if let Some(address) = remote_address(&record.message).map(str::to_string) {
            record.add_text("remote_addr", &address);
        }
    }
    Outcome::Parsed(record)
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
    "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// `<PRI>` at the start, if there is one (0–191).
fn priority(line: &str) -> Result<(Option<u8>, &str), String> {
    let Some(rest) = line.strip_prefix('<') else { return Ok((None, line)) };
    let end = rest.find('>').filter(|end| (1..=3).contains(end)).ok_or("a `<` that does not open a priority")?;
    let value: u8 = rest[..end].parse().ok().filter(|p| *p <= 191).ok_or("a priority that is not 0–191")?;
    Ok((Some(value), &rest[end + 1..]))
}

/// `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`, after `<PRI>1 `.
fn rfc5424(line: &str) -> Option<Record> {
    let mut rest = line;
    let mut word = || {
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = after;
        word
    };
    let (time, host, app, procid, msgid) = (word(), word(), word(), word(), word());
    let timestamp = match time {
        "-" => None,
        time => Some(parse::timestamp_ns(time)?),
    };
    let mut fields = Vec::new();
    let message = if let Some(after) = rest.strip_prefix('-') {
        after.strip_prefix(' ').unwrap_or(after)
    } else if rest.starts_with('[') {
        let after = structured_data(rest, &mut fields)?;
        after.strip_prefix(' ').unwrap_or(after)
    } else {
        return None;
    };
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    let mut record = Record::new(Level::Info, message.to_string());
    record.timestamp_ns = timestamp;
    if app != "-" {
        record.logger = Some(app.to_string());
    }
    for (key, value) in [("hostname", host), ("pid", procid), ("msgid", msgid)] {
        if value != "-" {
            record.add_text(key, value);
        }
    }
    for (key, value) in fields {
        record.add_text(&key, &value);
    }
    Some(record)
}

/// `[id key="value" ...][...]`: the parameters as `id.key` pairs, and the text after the last element.
fn structured_data<'a>(mut text: &'a str, fields: &mut Vec<(String, String)>) -> Option<&'a str> {
    while let Some(element) = text.strip_prefix('[') {
        let id_end = element.find([' ', ']'])?;
        let id = element[..id_end].split('@').next().unwrap_or_default();
        let mut rest = &element[id_end..];
        loop {
            rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(']') {
                text = after;
                break;
            }
            let (name, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (at, '"') => break at,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            fields.push((format!("{id}.{name}"), value));
            rest = &after[end + 1..];
        }
    }
    Some(text)
}

/// `Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, or the same with an RFC 3339 time as rsyslog's precise file format writes.
fn rfc3164(line: &str, offset: i64, now_ns: i64) -> Option<Record> {
    let (timestamp, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (time, rest) = line.split_once(' ')?;
        (parse::timestamp_ns(time).map(|ns| if has_zone(time) { ns } else { ns - offset * 1_000_000_000 })?, rest)
    } else {
        let month = parse::month(line.get(..3)?)?;
        let day: i64 = line.get(4..6)?.trim_start().parse().ok()?;
        let clock = line.get(7..15)?;
        let mut parts = clock.split(':').map(|p| p.parse::<i64>().ok());
        let time = (parts.next()??, parts.next()??, parts.next()??);
        // The latest year that does not put the date more than a day ahead of now (around New Year, last year).
        let year = 1970 + now_ns / 31_556_952_000_000_000;
        let ahead = now_ns + 86_400_000_000_000;
        let ns = [year + 1, year, year - 1]
            .into_iter()
            .filter_map(|year| parse::utc_ns(year, month, day, time, 0, offset))
            .find(|ns| *ns <= ahead)?;
        (ns, line.get(15..)?.strip_prefix(' ')?)
    };
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = match rest.split_once(": ") {
        Some((tag, message)) if !tag.contains(' ') => (Some(tag), message),
        _ => (None, rest),
    };
    let mut record = Record::new(Level::Info, message.to_string());
    record.timestamp_ns = Some(timestamp);
    record.add_text("hostname", host);
    if let Some(tag) = tag {
        match tag.split_once('[') {
            Some((app, pid)) => {
                record.logger = Some(app.to_string());
                record.add_text("pid", pid.trim_end_matches(']'));
            }
            None => record.logger = Some(tag.to_string()),
        }
    }
    Some(record)
}

fn has_zone(time: &str) -> bool {
    let clock = time.get(11..).unwrap_or_default();
    clock.ends_with(['Z', 'z']) || clock.contains(['+', '-'])
}

fn is_auth_failure(app: &str, message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("authentication failure")
        || (app == "sshd" && (lower.starts_with("failed ") || lower.starts_with("invalid user")))
        || (matches!(app, "su" | "sudo") && (lower.contains("failed") || lower.contains("incorrect password")))
}

/// The address after `from` or `rhost=` in a login failure.
fn remote_address(message: &str) -> Option<&str> {
    let after =
        message.split_once(" from ").map(|(_, a)| a).or_else(|| message.split_once("rhost=").map(|(_, a)| a))?;
    let address = after.split_whitespace().next()?;
    address.parse::<std::net::IpAddr>().is_ok().then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    // date -u -d 2026-11-26T10:00:00Z +%s → 1795687200
    const BASE: i64 = 1_795_687_200_000_000_000;
    const NOW: i64 = BASE + 3_600_000_000_000;

    fn parsed(line: &str, offset: i64) -> Record {
        match parse_line(line, offset, NOW) {
            Outcome::Parsed(record) => record,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn field<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
        record.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let record = parsed(
            r#"<165>1 2026-11-26T10:00:00.003Z db1 postgres 4242 ID47 [origin@32473 ip="10.0.0.5" note="a \"b\""] connection refused"#,
            0,
        );
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.timestamp_ns, Some(BASE + 3_000_000));
        assert_eq!(record.logger.as_deref(), Some("postgres"));
        assert_eq!(record.message, "connection refused");
        assert_eq!(field(&record, "origin.ip"), Some("\"10.0.0.5\""));
        assert_eq!(field(&record, "origin.note"), Some(r#""a \"b\"""#));
        assert_eq!(field(&record, "facility"), Some("\"local4\""));
        let bare = parsed("<11>1 - - - - - -", 0);
        assert_eq!((bare.level, bare.message.as_str(), bare.timestamp_ns), (Level::Error, "", None));
    }

    #[test]
    fn rfc3164_and_files() {
        let record = parsed("<34>Nov 26 10:00:00 db1 su[812]: 'su root' failed for alice on /dev/pts/8", 0);
        assert_eq!(record.level, Level::Security);
        assert_eq!(record.timestamp_ns, Some(BASE));
        assert_eq!(record.logger.as_deref(), Some("su"));
        assert_eq!(field(&record, "pid"), Some("\"812\""));
        assert_eq!(field(&record, "facility"), Some("\"auth\""));

        let file =
            parsed("Nov 26 13:00:00 db1 sshd[1234]: Failed password for root from 203.0.113.9 port 22 ssh2", 3 * 3600);
        assert_eq!((file.level, file.timestamp_ns), (Level::Security, Some(BASE)));
        assert_eq!(field(&file, "remote_addr"), Some("\"203.0.113.9\""));

        let precise = parsed("2026-11-26T10:00:00.5+00:00 db1 kernel: Out of memory: Killed process 77", 0);
        assert_eq!((precise.level, precise.timestamp_ns), (Level::Info, Some(BASE + 500_000_000)));
        assert_eq!(
            (precise.logger.as_deref(), precise.message.as_str()),
            (Some("kernel"), "Out of memory: Killed process 77")
        );

        // A December date read in the first hour of November's successor year is last year's.
        let december = parse_line("Dec 31 23:00:00 h cron: x", 0, BASE + 40 * 86_400_000_000_000);
        let Outcome::Parsed(december) = december else { panic!("not parsed") };
        assert_eq!(december.timestamp_ns, Some(BASE + (35 * 86_400 + 13 * 3600) * 1_000_000_000));
    }

    #[test]
    fn garbage_and_configs() {
        for line in ["<999>1 x", "<x>hello", "hello world", "Nov 26 99:00:00 h x: y", "<13>1 yesterday h a - - - m"] {
            assert!(matches!(parse_line(line, 0, NOW), Outcome::Invalid(_)), "{line}");
        }
        assert_eq!(offset_seconds(&Config { utc_offset: Some("-05:30".into()) }), Ok(-(5 * 3600 + 1800)));
        assert!(offset_seconds(&Config { utc_offset: Some("EST".into()) }).unwrap_err().contains("utc_offset"));
    }
}

/// Fuzz targets (`scripts/fuzz` runs them for as long as it is given; the suite runs them briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Lines of the shapes this parser reads, to be damaged.
    const VALID: &[&str] = &[
        r#"<165>1 2026-11-26T10:00:00.003Z db1 postgres 4242 ID47 [origin@32473 ip="10.0.0.5" note="a \"b\""] connection refused"#,
        r#"<11>1 - - - - - -"#,
        r#"<34>Nov 26 10:00:00 db1 su[812]: 'su root' failed for alice on /dev/pts/8"#,
        r#"<38>Nov 26 10:00:00 host sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2"#,
    ];

    proptest! {
        /// Any line is parsed, refused or skipped: never a panic.
        #[test]
        fn any_line(line in any::<String>()) {
            let _ = parse_line(&line, 0, 1_795_690_800_000_000_000);
        }

        /// A line of a known shape with anything put in anywhere.
        #[test]
        fn a_damaged_line(valid in prop::sample::select(VALID), at in any::<prop::sample::Index>(), junk in any::<String>()) {
            let line = selfmon_sdk::parse::damaged(valid, at.index(valid.len() + 1), &junk);
            let _ = parse_line(&line, 0, 1_795_690_800_000_000_000);
        }
    }
}
