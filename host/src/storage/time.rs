//! Times as stored and shown: the store keeps Unix milliseconds, the API and the log show RFC 3339; and a count as
//! the store takes it ([`sql_count`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time as the store keeps it: milliseconds since the Unix epoch (0 before it).
pub fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored time (Unix milliseconds) as a time.
pub fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A stored time (Unix milliseconds) as RFC 3339 in UTC with milliseconds, as the API shows every time; a time in
/// hand is shown as `rfc3339(to_millis(time))`.
pub fn rfc3339(millis: i64) -> String {
    humantime::format_rfc3339_millis(from_millis(millis)).to_string()
}

/// A time as [`rfc3339`] shows it, for `#[serde(serialize_with = "...")]` on a field of a served struct.
pub fn serialize_rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&rfc3339(to_millis(*time)))
}

/// A count (a `LIMIT`, an `OFFSET`) as the store takes it.
pub fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
