//! Answers over stored log records: counts per period, level and service; error templates with spikes; user
//! activity; security events. The records are read in [`store`](crate::logs::store); what is made of them is here.
//!
//! Error messages are reduced to templates in the spirit of Drain (He et al., 2017): variable tokens (numbers, ids,
//! UUIDs, hex, IP addresses, e-mail addresses, quoted values) are masked, then templates of the same length and
//! first word that agree on most of their tokens merge, the tokens they disagree on becoming `<*>`. A template
//! spikes when its rate over the last [`SPIKE_WINDOW`] is at least [`SPIKE_FACTOR`] times its rate over the rest of
//! the window, with at least [`SPIKE_MIN`] records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::storage::rfc3339;

/// The longest span an analysis may cover.
pub const MAX_HOURS: u64 = 24 * 90;
/// The most buckets an aggregation answers with.
pub const MAX_BUCKETS: u64 = 10_000;
/// Error records read for templates, newest first; older ones in the window are counted but not grouped.
pub const MAX_ERRORS_GROUPED: usize = 100_000;
/// Templates listed.
const TEMPLATES: usize = 20;
/// Sample messages kept per template.
const SAMPLES: usize = 3;
/// The recent part of the window a spike is measured over, and how much faster than the rest it must run.
pub const SPIKE_WINDOW: Duration = Duration::from_secs(300);
pub const SPIKE_FACTOR: f64 = 3.0;
pub const SPIKE_MIN: u64 = 5;
/// Failed logins from one address (or for one user) within the window that make a burst.
pub const BURST_MIN: u64 = 5;
/// Recent security events listed.
pub const RECENT_EVENTS: usize = 50;
/// Templates of one length and first word a new one is compared with, at most.
const MERGE_CANDIDATES: usize = 64;
/// Share of tokens two templates must agree on to merge.
const SIMILARITY: f64 = 0.6;

/// A name and how many records carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Count {
    pub name: String,
    pub count: u64,
}

/// The length of an aggregation bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, async_graphql::Enum, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Minute,
    Hour,
    Day,
}

impl Period {
    /// The bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }
}

/// `GET /v1/logs/aggregate`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Aggregation {
    pub period: Period,
    /// RFC 3339: the start of the first bucket and the end of the window.
    pub from: String,
    pub to: String,
    /// Every bucket of the window, oldest first, empty ones included.
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Bucket {
    /// RFC 3339, UTC, aligned to the period.
    pub start: String,
    pub total: u64,
    /// Per level and per service (records without a service under `-`), most first.
    pub by_level: Vec<Count>,
    pub by_service: Vec<Count>,
}

/// `GET /v1/logs/analysis`.
#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Analysis {
    pub hours: u64,
    pub from: String,
    pub to: String,
    pub total_records: u64,
    /// Lines no parser understood, kept raw.
    pub unparsed: u64,
    pub by_level: Vec<Count>,
    pub by_service: Vec<Count>,
    pub error_analysis: ErrorAnalysis,
    pub user_activity: UserActivity,
    pub security: Security,
}

/// Error and critical records.
#[derive(Debug, Clone, Default, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct ErrorAnalysis {
    pub total_errors: u64,
    pub errors_per_minute: f64,
    pub by_service: Vec<Count>,
    /// Messages grouped into templates, most frequent first.
    pub templates: Vec<Template>,
    /// Whether more error records than are grouped fell in the window (the newest are grouped).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Template {
    /// The message with its variable parts masked (`<num>`, `<ip>`, `<uuid>`, `<hex>`, `<email>`, `<str>`, `<*>`).
    pub template: String,
    pub count: u64,
    /// RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    pub services: Vec<String>,
    /// Distinct users of the records.
    pub affected_users: u64,
    /// A few messages as they were, newest first.
    pub samples: Vec<String>,
    /// Records per minute over the last five minutes, and over the rest of the window.
    pub recent_per_minute: f64,
    pub baseline_per_minute: f64,
    /// Whether the recent rate jumped against the baseline.
    pub spike: bool,
}

#[derive(Debug, Clone, Default, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct UserActivity {
    pub unique_users: u64,
    /// Records that name a user.
    pub records_with_user: u64,
    /// The users with the most records.
    pub top_users: Vec<UserCount>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct UserCount {
    pub user_id: String,
    pub records: u64,
    pub errors: u64,
}

/// `GET /v1/logs/security`: SECURITY and AUDIT records, access-log attack probes and failed logins.
#[derive(Debug, Clone, Default, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Security {
    pub events: u64,
    /// `security`, `audit`, `auth_failure`, and each attack kind (`threat:sql-injection`), most first.
    pub by_kind: Vec<Count>,
    /// Failed logins from one address or for one user, at least five in the window.
    pub auth_failure_bursts: Vec<Burst>,
    /// The newest events.
    pub recent: Vec<SecurityEvent>,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct Burst {
    /// `remote_addr` or `user_id`.
    pub by: String,
    pub value: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, async_graphql::SimpleObject, utoipa::ToSchema)]
pub struct SecurityEvent {
    pub id: i64,
    pub timestamp: String,
    pub kind: String,
    pub level: String,
    pub source: String,
    pub service: Option<String>,
    pub message: String,
    pub remote_addr: Option<String>,
    pub user_id: Option<String>,
}

/// One bucket's counts while they are added up.
#[derive(Default)]
pub struct Tally {
    pub total: u64,
    pub levels: BTreeMap<String, u64>,
    pub services: BTreeMap<String, u64>,
}

/// One error record, as templates read it.
pub struct ErrorRow {
    pub ts: i64,
    pub service: Option<String>,
    pub user: Option<String>,
    pub message: String,
}

/// Hours as milliseconds.
pub fn hours_ms(hours: u64) -> i64 {
    i64::try_from(hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX)
}

/// Counts as a list, most first (ties by name).
pub fn ranked(counts: BTreeMap<String, u64>) -> Vec<Count> {
    let mut list: Vec<Count> = counts.into_iter().map(|(name, count)| Count { name, count }).collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    list
}

/// A template being built: its tokens and what its records had.
struct Group {
    tokens: Vec<String>,
    count: u64,
    first: i64,
    last: i64,
    recent: u64,
    services: BTreeSet<String>,
    users: BTreeSet<String>,
    samples: Vec<String>,
}

/// Group rows (newest first) into templates.
pub fn templates(rows: &[ErrorRow], from: i64, to: i64) -> Vec<Template> {
    let recent_from = to - i64::try_from(SPIKE_WINDOW.as_millis()).unwrap_or(i64::MAX);
    // Exact masked templates first; then Drain's merge among those of one length and first token.
    let mut exact: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    for row in rows {
        let tokens = mask(&headline(&row.message));
        let group = exact.entry(tokens.clone()).or_insert_with(|| Group {
            tokens,
            count: 0,
            first: row.ts,
            last: row.ts,
            recent: 0,
            services: BTreeSet::new(),
            users: BTreeSet::new(),
            samples: Vec::new(),
        });
        group.count += 1;
        group.first = group.first.min(row.ts);
        group.last = group.last.max(row.ts);
        group.recent += u64::from(row.ts >= recent_from);
        group.services.extend(row.service.clone());
        group.users.extend(row.user.clone());
        if group.samples.len() < SAMPLES && !group.samples.contains(&row.message) {
            group.samples.push(row.message.clone());
        }
    }
    let mut merged: Vec<Group> = Vec::new();
    // Only templates of one length and first word may merge: the candidates are looked up by those.
    let mut kin: std::collections::HashMap<(usize, String), Vec<usize>> = std::collections::HashMap::new();
    let mut by_size: Vec<Group> = exact.into_values().collect();
    by_size.sort_by_key(|g| std::cmp::Reverse(g.count));
    for group in by_size {
        let key = (group.tokens.len(), group.tokens.first().cloned().unwrap_or_default());
        let candidates = kin.entry(key).or_default();
        let similar = candidates
            .iter()
            .copied()
            .take(MERGE_CANDIDATES)
            .find(|i| similarity(&merged[*i].tokens, &group.tokens) >= SIMILARITY);
        if similar.is_none() {
            candidates.push(merged.len());
        }
        match similar.map(|i| &mut merged[i]) {
            Some(into) => {
                for (mine, theirs) in into.tokens.iter_mut().zip(&group.tokens) {
                    if mine != theirs {
                        *mine = "<*>".into();
                    }
                }
                into.count += group.count;
                into.first = into.first.min(group.first);
                into.last = into.last.max(group.last);
                into.recent += group.recent;
                into.services.extend(group.services);
                into.users.extend(group.users);
                for sample in group.samples {
                    if into.samples.len() < SAMPLES {
                        into.samples.push(sample);
                    }
                }
            }
            None => merged.push(group),
        }
    }
    merged.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| b.last.cmp(&a.last)));
    let recent_minutes = (to - recent_from.max(from)) as f64 / 60_000.0;
    let baseline_minutes = (recent_from - from).max(0) as f64 / 60_000.0;
    merged
        .into_iter()
        .take(TEMPLATES)
        .map(|group| {
            let recent_per_minute = group.recent as f64 / recent_minutes.max(1.0 / 60.0);
            let baseline = group.count - group.recent;
            let baseline_per_minute = if baseline_minutes > 0.0 { baseline as f64 / baseline_minutes } else { 0.0 };
            Template {
                template: group.tokens.join(" "),
                count: group.count,
                first_seen: rfc3339(group.first),
                last_seen: rfc3339(group.last),
                services: group.services.into_iter().collect(),
                affected_users: group.users.len() as u64,
                samples: group.samples,
                recent_per_minute,
                baseline_per_minute,
                spike: baseline_minutes > 0.0
                    && group.recent >= SPIKE_MIN
                    && recent_per_minute >= SPIKE_FACTOR * baseline_per_minute,
            }
        })
        .collect()
}

/// The line a template is made of: the first line, and for a traceback the last one (the exception) too.
fn headline(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) if last != first => format!("{first} … {last}"),
        _ => first.to_string(),
    }
}

fn similarity(a: &[String], b: &[String]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// A message's words with their variable parts masked. A number right after `HTTP`, `status` or `code` is kept:
/// 500 and 503 are different failures.
pub fn mask(message: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut quoted = masked_quotes(message);
    quoted.truncate(quoted.floor_char_boundary(2048));
    for word in quoted.split_whitespace() {
        let keep_number = tokens
            .last()
            .map(|w| w.trim_end_matches([':', '=']).to_ascii_lowercase())
            .is_some_and(|w| ["http", "status", "code", "http/1.1", "http/2.0"].contains(&w.as_str()));
        tokens.push(mask_word(word, keep_number));
    }
    tokens
}

/// `'...'` and `"..."` as `<str>`.
fn masked_quotes(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside: Option<char> = None;
    for (at, c) in message.char_indices() {
        match inside {
            Some(quote) if c == quote => {
                inside = None;
                out.push_str("<str>");
            }
            Some(_) => {}
            None if (c == '"' || c == '\'') && opens_quote(message, at, c) => inside = Some(c),
            None => out.push(c),
        }
    }
    if inside.is_some() {
        // An unclosed quote (an apostrophe in `don't`): nothing masked.
        return message.to_string();
    }
    out
}

/// A quote opens a quoted value when it starts a word and a matching quote follows.
fn opens_quote(message: &str, at: usize, quote: char) -> bool {
    let starts_word = message[..at].chars().next_back().is_none_or(|p| p.is_whitespace() || "=:([{,".contains(p));
    starts_word && message[at + 1..].contains(quote)
}

fn mask_word(word: &str, keep_number: bool) -> String {
    // Punctuation around a word stays: `(id=42),` → `(id=<num>),`.
    let core_start = word.find(|c: char| c.is_alphanumeric()).unwrap_or(word.len());
    let core_end =
        word.char_indices().rev().find(|(_, c)| c.is_alphanumeric()).map_or(core_start, |(i, c)| i + c.len_utf8());
    if core_start >= core_end {
        return word.to_string();
    }
    let (prefix, core, suffix) = (&word[..core_start], &word[core_start..core_end], &word[core_end..]);
    // key=value masks the value only.
    if let Some((key, value)) = core.split_once('=')
        && !key.is_empty()
        && !value.is_empty()
    {
        let keep = ["status", "code", "status_code", "http_status"].contains(&key.to_ascii_lowercase().as_str());
        return format!("{prefix}{key}={}{suffix}", mask_value(value, keep));
    }
    format!("{prefix}{}{suffix}", mask_value(core, keep_number))
}

fn mask_value(value: &str, keep_number: bool) -> String {
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    if value.len() == 36 && value.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && is_hex(&value.replace('-', "")) {
        "<uuid>".into()
    } else if value.parse::<std::net::IpAddr>().is_ok()
        || value.rsplit_once(':').is_some_and(|(ip, port)| {
            ip.parse::<std::net::IpAddr>().is_ok() && port.bytes().all(|b| b.is_ascii_digit())
        })
    {
        "<ip>".into()
    } else if value.contains('@') && value.contains('.') && !value.starts_with('@') {
        "<email>".into()
    } else if value.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',') && digits > 0 {
        if keep_number { value.to_string() } else { "<num>".into() }
    } else if value.len() >= 8 && is_hex(value) && digits > 0 {
        "<hex>".into()
    } else if digits > 0 && value.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        // 250ms, 3s, 12MB, 2xx: a number with a unit.
        let unit = value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        if keep_number { value.to_string() } else { format!("<num>{unit}") }
    } else if digits * 2 > value.len() {
        // Mostly digits (an id like u12345678 or 7f3a9c01b2): an id.
        "<id>".into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(message: &str) -> String {
        mask(&headline(message)).join(" ")
    }

    #[test]
    fn variable_parts_are_masked() {
        assert_eq!(
            template(
                "User 12345 failed to connect to 10.0.0.7:5432 after 2.5s (request 3f2a9c0e-1b2d-4c5e-8f90-a1b2c3d4e5f6)"
            ),
            "User <num> failed to connect to <ip> after <num>s (request <uuid>)"
        );
        assert_eq!(
            template("HTTP 503 from upstream, status=502 code 429"),
            "HTTP 503 from upstream, status=502 code 429"
        );
        assert_eq!(template("mail to anna@example.org bounced: 'mailbox full'"), "mail to <email> bounced: <str>");
        assert_eq!(template("object deadbeef42 not found, user_id=u987654"), "object <hex> not found, user_id=<id>");
        assert_eq!(template("don't retry"), "don't retry");
        assert_eq!(
            template("Ошибка подключения к базе 42: café «fermé»"),
            "Ошибка подключения к базе <num>: café «fermé»"
        );
        assert_eq!(
            template(
                "Job 17 failed\nTraceback (most recent call last):\n  File \"x.py\"\nZeroDivisionError: division by zero"
            ),
            "Job <num> failed … ZeroDivisionError: division by zero"
        );
    }

    #[test]
    fn similar_templates_merge_and_spikes_stand_out() {
        let now = 10 * 3_600_000;
        let row = |ts: i64, message: &str, user: &str| ErrorRow {
            ts,
            service: Some("bot".into()),
            user: Some(user.into()),
            message: message.into(),
        };
        let mut rows = Vec::new();
        // One failure an hour for nine hours, then eight in the last five minutes: a spike.
        for hour in 0..9 {
            rows.push(row(hour * 3_600_000, "Reply to chat alpha failed: timeout", "u1"));
        }
        for i in 0..8 {
            rows.push(row(
                now - 60_000 - i * 1000,
                &format!("Reply to chat {} failed: timeout", ["beta", "gamma"][i as usize % 2]),
                "u2",
            ));
        }
        // A steady failure: no spike.
        for minute in 0..600 {
            rows.push(row(minute * 60_000, &format!("Qdrant search took {minute} ms"), "u3"));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.ts));
        let templates = templates(&rows, 0, now);
        let steady = &templates[0];
        assert_eq!((steady.template.as_str(), steady.count, steady.spike), ("Qdrant search took <num> ms", 600, false));
        let reply = &templates[1];
        assert_eq!(reply.template, "Reply to chat <*> failed: timeout");
        assert_eq!((reply.count, reply.affected_users, reply.spike), (17, 2, true), "{reply:?}");
        assert!(reply.recent_per_minute > 1.5 && reply.baseline_per_minute < 0.02, "{reply:?}");
        assert_eq!(reply.samples.len(), 3);
    }
}
