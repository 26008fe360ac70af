//! Access logs in the NCSA combined format, nginx's and Apache's default, and the common format (combined without
//! referer and user agent):
//!
//! ```text
//! 203.0.113.9 - alice [26/Nov/2026:10:00:00 +0000] "GET /api/reply?id=7 HTTP/1.1" 502 157 "-" "python-httpx/0.27"
//! ```
//!
//! The level follows the status class: 5xx is an error, 4xx a warning, anything else info. The message is the
//! request line and the status (`GET /api/reply?id=7 HTTP/1.1 502`). Fields: `remote_addr`, `remote_user`,
//! `method`, `path`, `protocol`, `status`, `status_class` (`5xx`), `bytes`, `referer`, `user_agent`, and `extra`
//! for anything a custom format appends (such as nginx's `$request_time`).
//!
//! A request that looks like an attack carries a `threat` field — `sql-injection`, `xss`, `path-traversal`,
//! `command-injection`, `jndi-injection` or `scanner` — which selfmon's security events report.

use selfmon_sdk::parse::{self, Batch, Level, Outcome, Parser, Record};
use selfmon_sdk::prelude::*;

pub struct Combined;

impl Parser for Combined {
    type Config = serde::de::IgnoredAny;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "combined",
            env!("CARGO_PKG_VERSION"),
            "nginx/Apache access logs (combined and common formats), levels from status classes",
        )
    }

    fn parse(_: &Self::Config, batch: &Batch) -> Vec<Outcome> {
        batch.lines.iter().map(|line| parse_line(line)).collect()
    }
}

selfmon_sdk::export_parser!(Combined);

/// An access log line, cut into its parts.
struct Access<'a> {
    remote_addr: &'a str,
    remote_user: &'a str,
    time: &'a str,
    request: String,
    status: u16,
    bytes: &'a str,
    referer: Option<String>,
    user_agent: Option<String>,
    extra: &'a str,
}

pub fn parse_line(line: &str) -> Outcome {
    if line.trim().is_empty() {
        return Outcome::Skip;
    }
    let Some(access) = split(line.trim_end()) else {
        return Outcome::Invalid("not an access log line (combined or common format)".into());
    };
    let Some(timestamp) = clf_time(access.time) else {
        return Outcome::Invalid(format!("not an access log time: `{}`", access.time));
    };
    let level = match access.status {
        500.. => Level::Error,
        400..=499 => Level::Warning,
        _ => Level::Info,
    };
    let mut record = Record::new(level, format!("{} {}", access.request, access.status));
    record.timestamp_ns = Some(timestamp);
    let mut field = |key: &str, value: &str| record.add_text(key, value);
    field("remote_addr", access.remote_addr);
    if access.remote_user != "-" {
        field("remote_user", access.remote_user);
    }
    let mut words = access.request.splitn(3, ' ');
    let (method, path, protocol) = (words.next(), words.next(), words.next());
    if let (Some(method), Some(path)) = (method, path) {
        field("method", method);
        field("path", path);
    }
    if let Some(protocol) = protocol {
        field("protocol", protocol);
    }
    let status_class = format!("{}xx", access.status / 100);
    field("status_class", &status_class);
    if access.bytes != "-" {
        field("bytes", access.bytes);
    }
    for (key, value) in [("referer", &access.referer), ("user_agent", &access.user_agent)] {
        if let Some(value) = value.as_deref().filter(|v| *v != "-") {
            field(key, value);
        }
    }
    if !access.extra.is_empty() {
        field("extra", access.extra);
    }
    if let Some(threat) = threat(path.unwrap_or(&access.request), access.user_agent.as_deref().unwrap_or("")) {
        field("threat", threat);
    }
    record.fields.push(("status".into(), access.status.to_string()));
    Outcome::Parsed(record)
}

fn split(line: &str) -> Option<Access<'_>> {
    let (remote_addr, rest) = line.split_once(' ')?;
    let (_ident, rest) = rest.split_once(' ')?;
    let (remote_user, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (time, rest) = rest.split_once("] ")?;
    let (request, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (bytes, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if bytes != "-" && (bytes.is_empty() || !bytes.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (mut referer, mut user_agent) = (None, None);
    if rest.starts_with('"') {
        let (value, after) = quoted(rest)?;
        referer = Some(value);
        let after = after.trim_start();
        let (value, after) = quoted(after)?;
        user_agent = Some(value);
        rest = after;
    }
    Some(Access {
        remote_addr,
        remote_user,
        time,
        request,
        status: status.parse().ok()?,
        bytes,
        referer,
        user_agent,
        extra: rest.trim(),
    })
}

/// A double-quoted string at the start of `text` (Apache escapes `"` as `\"`, nginx escapes bytes as `\xHH`, UTF-8
/// included), and the rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?.as_bytes();
    let mut value = Vec::new();
    let mut at = 0;
    while at < body.len() {
        match body[at] {
            b'"' => return Some((String::from_utf8_lossy(&value).into_owned(), &text[at + 2..])),
            b'\\' => {
                let escaped = *body.get(at + 1)?;
                let hex =
                    body.get(at + 2..at + 4).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match (escaped, hex) {
                    (b'x', Some(byte)) => {
                        value.push(byte);
                        at += 4;
                    }
                    (other, _) => {
                        value.push(other);
                        at += 2;
                    }
                }
            }
            byte => {
                value.push(byte);
                at += 1;
            }
        }
    }
    None
}

/// `26/Nov/2026:10:00:00 +0000`.
fn clf_time(text: &str) -> Option<i64> {
    let (stamp, zone) = text.split_once(' ')?;
    let mut parts = stamp.splitn(3, '/');
    let (day, month, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let mut clock = rest.split(':');
    let year: i64 = clock.next()?.parse().ok()?;
    let mut number = || clock.next()?.parse::<i64>().ok();
    let time = (number()?, number()?, number()?);
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = zone.get(1..5)?;
    let offset = sign * (digits.get(..2)?.parse::<i64>().ok()? * 3600 + digits.get(2..)?.parse::<i64>().ok()? * 60);
    parse::utc_ns(year, parse::month(month)?, day.parse().ok()?, time, 0, offset)
}

/// What an attack probe in the path or user agent looks like, after percent-decoding; None for an ordinary request.
fn threat(path: &str, user_agent: &str) -> Option<&'static str> {
    if !suspicious(path) {
        return scanner(user_agent);
    }
    let decoded = percent_decode(path).to_ascii_lowercase().replace('+', " ");
    let squeezed: String = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    let any = |needles: &[&str]| needles.iter().any(|n| squeezed.contains(n));
    if any(&["${jndi:"]) {
        return Some("jndi-injection");
    }
    if any(&[
        "union select",
        "union all select",
        "' or '1'='1",
        "' or 1=1",
        "\" or 1=1",
        " or 1=1--",
        "sleep(",
        "benchmark(",
        "information_schema",
        "; drop table",
        "'--",
    ]) {
        return Some("sql-injection");
    }
    if any(&["<script", "javascript:", "onerror=", "onload=", "<svg"]) {
        return Some("xss");
    }
    if any(&["../", "..\\", "/etc/passwd", "/proc/self/", "c:\\windows"]) {
        return Some("path-traversal");
    }
    if any(&[";wget ", ";curl ", "|sh", "$(", "`id`", ";cat "]) {
        return Some("command-injection");
    }
    scanner(user_agent)
}

/// Whether a path has anything a probe needs (escapes, quotes, brackets, shell or traversal characters, or one of
/// the words probes use), so ordinary requests skip the decoding.
fn suspicious(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().any(|b| b"%'\"<>$;|(`\\+ ".contains(b))
        || path.contains("..")
        || ["information_schema", "etc/passwd", "proc/self", "javascript:", "onerror", "onload", "union", "select"]
            .iter()
            .any(|word| bytes.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes())))
}

/// A known scanner's user agent.
fn scanner(user_agent: &str) -> Option<&'static str> {
    let agent = user_agent.to_ascii_lowercase();
    ["sqlmap", "nikto", "nmap", "masscan", "zgrab", "dirbuster", "gobuster", "wpscan", "nuclei"]
        .iter()
        .any(|tool| agent.contains(tool))
        .then_some("scanner")
}

/// `%XX` sequences decoded (twice, for double-encoded probes); invalid ones left as they are.
fn percent_decode(text: &str) -> String {
    let once = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex =
                || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex()) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    once(&once(text))
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

    fn field<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
        record.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn nginx_combined_with_a_server_error() {
        let record = parsed(
            r#"203.0.113.9 - alice [26/Nov/2026:13:00:00 +0300] "GET /api/reply?id=7 HTTP/1.1" 502 157 "-" "python-httpx/0.27" 0.532"#,
        );
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.message, "GET /api/reply?id=7 HTTP/1.1 502");
        assert_eq!(record.timestamp_ns, Some(1_795_687_200_000_000_000));
        assert_eq!(field(&record, "status_class"), Some("\"5xx\""));
        assert_eq!(field(&record, "status"), Some("502"));
        assert_eq!(field(&record, "remote_user"), Some("\"alice\""));
        assert_eq!(field(&record, "user_agent"), Some("\"python-httpx/0.27\""));
        assert_eq!(field(&record, "referer"), None);
        assert_eq!(field(&record, "extra"), Some("\"0.532\""));
        assert_eq!(field(&record, "threat"), None);
    }

    #[test]
    fn common_format_and_status_classes() {
        let record = parsed(r#"::1 - - [26/Nov/2026:10:00:00 +0000] "POST /login HTTP/1.0" 401 -"#);
        assert_eq!((record.level, field(&record, "status_class")), (Level::Warning, Some("\"4xx\"")));
        let record = parsed(r#"10.0.0.2 - - [26/Nov/2026:10:00:00 -0000] "GET / HTTP/2.0" 304 0 "-" "curl/8""#);
        assert_eq!(record.level, Level::Info);
        let escaped =
            parsed(r#"10.0.0.2 - - [26/Nov/2026:10:00:00 +0000] "GET /\x22q\x22 HTTP/1.1" 200 5 "-" "a \"b\"""#);
        assert_eq!(escaped.message, "GET /\"q\" HTTP/1.1 200");
        let utf8 =
            parsed(r#"10.0.0.2 - - [26/Nov/2026:10:00:00 +0000] "GET /\xD0\x9F\xD1\x80\xD0\xB8 HTTP/1.1" 200 5"#);
        assert_eq!(utf8.message, "GET /При HTTP/1.1 200");
        assert_eq!(field(&escaped, "user_agent"), Some(r#""a \"b\"""#));
    }

    #[test]
    fn attack_probes_are_flagged() {
        let line = |path: &str, agent: &str| {
            format!(r#"198.51.100.7 - - [26/Nov/2026:10:00:00 +0000] "GET {path} HTTP/1.1" 403 0 "-" "{agent}""#)
        };
        for (path, agent, threat) in [
            ("/item?id=1%27%20UNION%20SELECT%20password%20FROM%20users--", "Mozilla/5.0", "sql-injection"),
            ("/search?q=%3Cscript%3Ealert(1)%3C/script%3E", "Mozilla/5.0", "xss"),
            ("/static/..%252f..%252fetc/passwd", "Mozilla/5.0", "path-traversal"),
            ("/?x=${jndi:ldap://evil/a}", "Mozilla/5.0", "jndi-injection"),
            ("/", "sqlmap/1.7.2#stable (https://sqlmap.org)", "scanner"),
        ] {
            let record = parsed(&line(path, agent));
            assert_eq!(field(&record, "threat"), Some(format!("\"{threat}\"").as_str()), "{path}");
        }
        assert_eq!(field(&parsed(&line("/api/users?sort=name&page=2", "Mozilla/5.0")), "threat"), None);
    }

    #[test]
    fn other_lines_are_invalid() {
        for line in [
            "2026-11-26 10:00:00,123 - bot - ERROR - failed",
            r#"1.2.3.4 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" abc 5"#,
            r#"1.2.3.4 - - [yesterday] "GET / HTTP/1.1" 200 5"#,
            r#"1.2.3.4 - - [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1"#,
        ] {
            assert!(matches!(parse_line(line), Outcome::Invalid(_)), "{line}");
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
        r#"203.0.113.9 - alice [26/Nov/2026:13:00:00 +0300] "GET /api/reply?id=7 HTTP/1.1" 502 157 "-" "python-httpx/0.27" 0.532"#,
        r#"::1 - - [26/Nov/2026:10:00:00 +0000] "POST /login HTTP/1.0" 401 -"#,
        r#"198.51.100.7 - - [26/Nov/2026:10:00:00 +0000] "GET /../../etc/passwd%00 HTTP/1.1" 404 0 "-" "sqlmap/1.7""#,
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
