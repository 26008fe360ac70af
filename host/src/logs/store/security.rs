//! Security events among the stored log records: which records are, of what kind, and bursts of them.

use std::collections::BTreeMap;

use crate::logs::analysis::{BURST_MIN, Burst, RECENT_EVENTS, Security, SecurityEvent, ranked};
use crate::storage::rfc3339;
use crate::storage::sql::{self, Db, Engine, params};

/// Records that are security events, newest first, with their kind.
pub fn security(db: &Db, from: i64, to: i64) -> sql::Result<Security> {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut bursts: BTreeMap<(&'static str, String), (u64, i64, i64)> = BTreeMap::new();
    let mut recent = Vec::new();
    let mut events = 0;
    // Records that may be security events; whether one is, and what kind, is read from its fields here (on
    // PostgreSQL a JSON cast of every record's fields would fail the whole query on one odd escape).
    let maybe = match db.engine() {
        Engine::Sqlite => {
            "json_extract(fields, '$.threat') IS NOT NULL OR json_extract(fields, '$.auth_failure') IN (1, 'true')"
        }
        Engine::Postgres => "strpos(fields, '\"threat\"') > 0 OR strpos(fields, '\"auth_failure\"') > 0",
    };
    db.query_each(
        &format!(
            "SELECT id, ts, level, source, service, message, user_id, fields
             FROM logs
             WHERE ts >= ?1 AND ts <= ?2
               AND (level IN ('security', 'audit') OR (fields IS NOT NULL AND ({maybe})))
             ORDER BY ts DESC, id DESC"
        ),
        params![from, to],
        |row| {
            let level: String = row.get(2)?;
            let (threat, auth_failure, remote) = security_fields(row.get::<_, Option<String>>(7)?.as_deref());
            if !(level == "security" || level == "audit" || threat.is_some() || auth_failure) {
                return Ok(true);
            }
            events += 1;
            let ts: i64 = row.get(1)?;
            let user: Option<String> = row.get(6)?;
            let kind = match (&threat, auth_failure) {
                (Some(threat), _) => format!("threat:{threat}"),
                (None, true) => "auth_failure".into(),
                (None, false) => level.clone(),
            };
            *kinds.entry(kind.clone()).or_default() += 1;
            if auth_failure {
                let keys = [("remote_addr", remote.clone()), ("user_id", user.clone())];
                for (by, value) in keys.into_iter().filter_map(|(by, v)| Some((by, v?))) {
                    let burst = bursts.entry((by, value)).or_insert((0, ts, ts));
                    burst.0 += 1;
                    burst.1 = burst.1.min(ts);
                    burst.2 = burst.2.max(ts);
                }
            }
            if recent.len() < RECENT_EVENTS {
                recent.push(SecurityEvent {
                    id: row.get(0)?,
                    timestamp: rfc3339(ts),
                    kind,
                    level,
                    source: row.get(3)?,
                    service: row.get(4)?,
                    message: row.get(5)?,
                    remote_addr: remote,
                    user_id: user,
                });
            }
            Ok(true)
        },
    )?;
    let mut auth_failure_bursts: Vec<Burst> = bursts
        .into_iter()
        .filter(|(_, (count, _, _))| *count >= BURST_MIN)
        .map(|((by, value), (count, first, last))| Burst {
            by: by.to_string(),
            value,
            count,
            first_seen: rfc3339(first),
            last_seen: rfc3339(last),
        })
        .collect();
    auth_failure_bursts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    Ok(Security { events, by_kind: ranked(kinds), auth_failure_bursts, recent })
}

/// What a record's fields say of security: its `threat` (as text), whether it is an authentication failure
/// (`auth_failure` true, 1 or "true"), and the address it came from. A field of another type than the parsers
/// write (a number `threat`, a string `auth_failure`) is read as text, or not at all.
fn security_fields(fields: Option<&str>) -> (Option<String>, bool, Option<String>) {
    use serde_json::Value as Json;
    let Some(Ok(Json::Object(fields))) = fields.map(serde_json::from_str::<Json>) else { return (None, false, None) };
    let text = |key: &str| match fields.get(key) {
        None | Some(Json::Null) => None,
        Some(Json::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    let failed = match fields.get("auth_failure") {
        Some(Json::Bool(failed)) => *failed,
        Some(Json::Number(number)) => number.as_f64() == Some(1.0),
        Some(Json::String(text)) => text == "true",
        _ => false,
    };
    (text("threat"), failed, text("remote_addr"))
}
