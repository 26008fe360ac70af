//! logfmt: `key=value` pairs separated by spaces, values quoted when they hold spaces, as Heroku, Go's
//! `go-logfmt`, slog's text handler and Grafana's services write them:
//!
//! ```text
//! time=2026-11-26T10:00:00Z level=error msg="reply failed" user_id=1234 duration=1.2s
//! ```
//!
//! Keys are normalized with the same aliases as the JSON parser (`ts`/`time`, `lvl`/`severity`, `msg`, ...); every
//! other pair is kept in the record's fields (values as JSON strings). A record without a message keeps the whole
//! line as its message, so a search still finds it. A bare key (`key` with no `=`) is `true`.
//!
//! A line is logfmt when it splits cleanly into pairs and at least half of its words are `key=value`: plain text
//! with an `=` in it is invalid (kept raw by the host), not a record with nonsense fields.

use selfmon_sdk::parse::names::*;
use selfmon_sdk::parse::{self, Batch, Level, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;

pub struct Logfmt;

impl Parser for Logfmt {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new("logfmt", env!("CARGO_PKG_VERSION"), "logfmt lines (key=value pairs), field names normalized")
    }

    fn parse(_: &Self::Config, batch: &Batch) -> Vec<Outcome> {
        batch.lines.iter().map(|line| parse_line(line)).collect()
    }
}

selfmon_sdk::export_parser!(Logfmt);

pub fn parse_line(line: &str) -> Outcome {
    if line.trim().is_empty() {
        return Outcome::Skip;
    }
    let pairs = match pairs(line) {
        Ok(pairs) => pairs,
        Err(reason) => return Outcome::Invalid(reason),
    };
    let with_values = pairs.iter().filter(|(_, value)| value.is_some()).count();
    if with_values == 0 || with_values * 2 < pairs.len() {
        return Outcome::Invalid("not logfmt: fewer than half of the words are key=value".into());
    }
    let mut record = Record::new(Level::Info, String::new());
    let mut message = None;
    for (key, value) in pairs {
        let Some(value) = value else {
            record.fields.push((key.to_string(), "true".into()));
            continue;
        };
        let known = |names: &[&str]| names.contains(&key);
        if known(TIME) && record.timestamp_ns.is_none() {
            match parse::timestamp_ns(&value).or_else(|| value.parse().ok().and_then(parse::epoch_ns)) {
                Some(ns) => record.timestamp_ns = Some(ns),
                None => record.add_text(key, &value),
            }
        } else if known(LEVEL) && parse::level(&value).is_some() {
            record.level = parse::level(&value).unwrap_or(Level::Info);
        } else if known(MESSAGE) && message.is_none() {
            message = Some(value);
        } else if known(LOGGER) && record.logger.is_none() {
            record.logger = Some(value);
        } else if known(SERVICE) && record.service.is_none() {
            record.service = Some(value);
        } else if known(TRACE) && record.trace_id.is_none() {
            record.trace_id = Some(value);
        } else if known(SPAN) && record.span_id.is_none() {
            record.span_id = Some(value);
        } else if known(CORRELATION) && record.correlation_id.is_none() {
            record.correlation_id = Some(value);
        } else if known(USER) && record.user_id.is_none() {
            record.user_id = Some(value);
        } else {
            record.add_text(key, &value);
        }
    }
    record.message = message.unwrap_or_else(|| line.trim().to_string());
    Outcome::Parsed(record)
}

/// The line's pairs in order; a bare key has no value. Quoted values take `\"`, `\\`, `\n`, `\t` escapes.
fn pairs(line: &str) -> Result<Vec<(&str, Option<String>)>, String> {
    let mut pairs = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || key.contains('"') {
            return Err(format!("not logfmt: a word starts with `{}`", rest.chars().next().unwrap_or(' ')));
        }
        rest = &rest[key_end..];
        let Some(after) = rest.strip_prefix('=') else {
            pairs.push((key, None));
            rest = rest.trim_start();
            continue;
        };
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted).ok_or_else(|| format!("not logfmt: the value of `{key}` has no closing quote"))?
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            if after[..end].contains('"') {
                return Err(format!("not logfmt: a stray quote in the value of `{key}`"));
            }
            (after[..end].to_string(), &after[end..])
        };
        if !remaining.is_empty() && !remaining.starts_with(char::is_whitespace) {
            return Err(format!("not logfmt: text right after the quoted value of `{key}`"));
        }
        pairs.push((key, Some(value)));
        rest = remaining.trim_start();
    }
    Ok(pairs)
}

/// The text up to the closing quote, unescaped, and what follows the quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Record {
        match parse_line(line) {
            Outcome::Parsed(record) => record,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn pairs_with_known_names_and_quotes() {
        let record = parsed(
            r#"time=2026-11-26T10:00:00.5Z level=error msg="reply \"failed\" – timeout" user_id=1234 retry dur=1.2s"#,
        );
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.timestamp_ns, Some(1_795_687_200_500_000_000));
        assert_eq!(record.message, "reply \"failed\" – timeout");
        assert_eq!(record.user_id.as_deref(), Some("1234"));
        assert_eq!(record.fields, vec![("retry".into(), "true".into()), ("dur".into(), "\"1.2s\"".into())]);
    }

    #[test]
    fn without_a_message_the_line_is_the_message() {
        let record = parsed("ts=1795687200 lvl=WARN service=api path=/v1/x status=503");
        assert_eq!((record.level, record.service.as_deref()), (Level::Warning, Some("api")));
        assert_eq!(record.timestamp_ns, Some(1_795_687_200_000_000_000));
        assert_eq!(record.message, "ts=1795687200 lvl=WARN service=api path=/v1/x status=503");
    }

    #[test]
    fn plain_text_is_not_logfmt() {
        for line in [
            "Connection from 10.0.0.1 closed (reason=eof)",
            "msg=\"unterminated",
            "a=\"b\"c",
            "=value",
            "just some words",
            "{\"level\":\"info\"}",
        ] {
            assert!(matches!(parse_line(line), Outcome::Invalid(_)), "{line}");
        }
        assert!(matches!(parse_line("  "), Outcome::Skip));
    }
}

/// Fuzz targets (`scripts/fuzz` runs them for as long as it is given; the suite runs them briefly).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Lines of the shapes this parser reads, to be damaged.
    const VALID: &[&str] = &[
        r#"time=2026-11-26T10:00:00Z level=error msg="Reply failed: \"x\"" service=bot user_id=tg:1 duration=0.5"#,
        r#"ts=1795687200 lvl=warn caller=main.go:42 msg=slow trace_id=abc span_id=def"#,
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

        /// A quoted message comes back as it was, whatever it holds.
        #[test]
        fn a_quoted_message_comes_back(message in "[^\\n\\r]*") {
            let quoted = message.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!("level=info msg=\"{quoted}\"");
            match parse_line(&line) {
                Outcome::Parsed(record) => prop_assert_eq!(record.message, message),
                other => prop_assert!(false, "{line}: {other:?}"),
            }
        }
    }
}
