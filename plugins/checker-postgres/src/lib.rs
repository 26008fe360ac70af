//! The `postgres` checker: logs in over the wire protocol, runs one query, and reports the server's version,
//! connection headroom, long-running queries and role.
//!
//! The target is `host:port`, or a `postgres://` URL of which only the host and port are used.
//!
//! ```toml
//! [[check]]
//! name = "postgres"
//! plugin = "postgres"           # target, user, database and password default from DB_HOST, DB_PORT, DB_USER,
//!                               # DB_NAME and DB_PASSWORD
//! [check.config]
//! connections_degraded_at = 0.8
//! long_query_after = "30s"
//! ```

mod wire;

use std::time::{Duration, Instant};

use selfmon_sdk::prelude::*;
use selfmon_sdk::tcp;
use wire::{Failure, Login, Session};

#[derive(Debug, Deserialize)]
pub struct Config {
    user: String,
    database: String,
    connections_degraded_at: f64,
    #[serde(with = "selfmon_sdk::duration")]
    long_query_after: Duration,
    expect_role: Role,
    #[serde(with = "selfmon_sdk::duration")]
    degraded_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Any,
    Primary,
    Standby,
}

pub struct Postgres;

impl Checker for Postgres {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "postgres",
            env!("CARGO_PKG_VERSION"),
            "Logs in to PostgreSQL and checks version, connection headroom, long-running queries and role",
        )
        .default_target("${DB_HOST:-localhost}:${DB_PORT:-5432}")
        .config(Setting::text("user", "User to log in as").env("DB_USER").default("postgres"))
        .config(Setting::text("database", "Database to connect to").env("DB_NAME").default("postgres"))
        .config(
            Setting::number(
                "connections_degraded_at",
                "Report degraded when this share of max_connections is in use (pool exhaustion coming)",
            )
            .default(0.8),
        )
        .config(
            Setting::duration("long_query_after", "Report degraded when a query has been running longer than this")
                .default("30s"),
        )
        .config(
            Setting::text("expect_role", "`primary` or `standby` makes the other one unhealthy; `any` accepts both")
                .default("any"),
        )
        .config(
            Setting::duration("degraded_after", "Report degraded when logging in and querying take longer")
                .default("1s"),
        )
        .secret(Setting::text("password", "The user's password (trust logins need none)").env("DB_PASSWORD"))
    }

    fn validate(config: &Config, ctx: &Context) -> Result<(), Error> {
        address(ctx)?;
        if !(0.0..=1.0).contains(&config.connections_degraded_at) {
            return Err("`connections_degraded_at` is a share between 0 and 1, such as 0.8".into());
        }
        Ok(())
    }

    fn check(config: Config, ctx: &Context) -> Result<CheckResult, Error> {
        let address = address(ctx)?;
        let login = Login {
            address: &address,
            user: &config.user,
            database: &config.database,
            password: ctx.secret("password"),
            timeout: ctx.time_left(),
        };
        let started = Instant::now();
        let mut session = match Session::connect(&login) {
            Ok(session) => session,
            Err(failure) => return Ok(describe_failure(&failure, &config, &address)),
        };
        let query_started = Instant::now();
        let rows = match session.query(&stats_query(config.long_query_after)) {
            Ok(rows) => rows,
            Err(failure) => return Ok(describe_failure(&failure, &config, &address)),
        };
        let query_time = query_started.elapsed();
        session.close();
        let elapsed = started.elapsed();
        let stats = Stats::parse(rows.first()).ok_or("the statistics query returned nothing usable")?;
        Ok(judge(&config, &stats, elapsed, query_time).detail("address", &address).detail("user", &config.user))
    }
}

/// `host:port` from the check's target, which is `host:port` or a `postgres://` URL.
fn address(ctx: &Context) -> Result<String, Error> {
    let target = ctx.target().ok_or("set `target` to host:port (or DB_HOST and DB_PORT)")?;
    let rest = target.split_once("://").map_or(target, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return Err(format!("`target` `{target}` names no host").into());
    }
    Ok(if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:5432")
    })
}

/// One query for every figure, so a check costs one round trip after login. Other sessions' state is visible to
/// superusers and members of `pg_monitor` (or `pg_read_all_stats`); for others only connection counts are
/// complete, and the result says so. Replication senders and autovacuum workers are not queries.
fn stats_query(long_query_after: Duration) -> String {
    let seconds = long_query_after.as_secs_f64();
    format!(
        "SELECT current_setting('server_version'),
                current_setting('max_connections')::int,
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                pg_is_in_recovery(),
                (SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
                    AND now() - query_start > interval '{seconds} seconds'),
                COALESCE((SELECT extract(epoch FROM max(now() - query_start)) FROM pg_stat_activity
                  WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()), 0),
                pg_has_role('pg_read_all_stats', 'MEMBER')"
    )
}

struct Stats {
    version: String,
    max_connections: f64,
    connections: f64,
    standby: bool,
    long_queries: f64,
    longest_query_seconds: f64,
    sees_all_sessions: bool,
}

impl Stats {
    fn parse(row: Option<&Vec<Option<String>>>) -> Option<Self> {
        let column = |i: usize| row?.get(i)?.clone();
        let number = |i: usize| column(i)?.parse::<f64>().ok();
        Some(Self {
            version: column(0)?,
            max_connections: number(1)?,
            connections: number(2)?,
            standby: column(3)? == "t",
            long_queries: number(4)?,
            longest_query_seconds: number(5)?,
            sees_all_sessions: column(6)? == "t",
        })
    }
}

fn judge(config: &Config, stats: &Stats, elapsed: Duration, query_time: Duration) -> CheckResult {
    let role = if stats.standby { "standby" } else { "primary" };
    let ratio = stats.connections / stats.max_connections.max(1.0);
    // `server_version` may carry the packager's suffix: "15.18 (Debian 15.18-0+deb12u1)".
    let version = stats.version.split_whitespace().next().unwrap_or_default();
    let head = format!(
        "PostgreSQL {version} ({role}) in {} ms, {}/{} connections",
        elapsed.as_millis(),
        stats.connections,
        stats.max_connections
    );
    let wrong_role = match config.expect_role {
        Role::Primary => stats.standby,
        Role::Standby => !stats.standby,
        Role::Any => false,
    };
    let result = if wrong_role {
        CheckResult::unhealthy(format!("{head}: expected a {:?} server", config.expect_role).to_lowercase())
    } else if ratio >= config.connections_degraded_at {
        CheckResult::degraded(format!(
            "{head}: {:.0}% of connections in use (degraded at {:.0}%)",
            ratio * 100.0,
            config.connections_degraded_at * 100.0
        ))
    } else if stats.long_queries > 0.0 {
        CheckResult::degraded(format!(
            "{head}: {} queries running longer than {} s (longest {:.0} s)",
            stats.long_queries,
            config.long_query_after.as_secs(),
            stats.longest_query_seconds
        ))
    } else if elapsed > config.degraded_after {
        CheckResult::degraded(format!("{head} (slower than {} ms)", config.degraded_after.as_millis()))
    } else {
        CheckResult::healthy(head)
    };
    result
        .detail("server_version", &stats.version)
        .detail("role", role)
        .detail(
            "sessions_visible",
            if stats.sees_all_sessions { "all" } else { "own only: grant pg_monitor to see long-running queries" },
        )
        .metric("response_time_seconds", elapsed.as_secs_f64())
        .metric("query_time_seconds", query_time.as_secs_f64())
        .metric("connections_used", stats.connections)
        .metric("connections_max", stats.max_connections)
        .metric("connections_used_ratio", ratio)
        .metric("long_running_queries", stats.long_queries)
        .metric("longest_query_seconds", stats.longest_query_seconds)
        .metric("standby", if stats.standby { 1.0 } else { 0.0 })
}

/// Failures an operator can tell apart: nothing listening, not allowed in, wrong password, no such database.
fn describe_failure(failure: &Failure, config: &Config, address: &str) -> CheckResult {
    let summary = match failure {
        Failure::Connect(tcp::Error::Connect { reason, .. }) => format!("PostgreSQL at {address}: {reason}"),
        Failure::Server { code, message } => match code.as_str() {
            "28P01" => format!("login refused: wrong password for user `{}` ({message})", config.user),
            "28000" => format!("login refused for user `{}`: {message}", config.user),
            "3D000" => format!("database `{}` does not exist ({message})", config.database),
            "53300" => format!("no connection slots left: {message}"),
            "57P03" => format!("PostgreSQL is not accepting connections: {message}"),
            _ => format!("PostgreSQL at {address}: {failure}"),
        },
        _ => format!("PostgreSQL at {address}: {failure}"),
    };
    let mut result = CheckResult::unhealthy(summary).detail("address", address).detail("user", &config.user);
    if let Failure::Server { code, .. } = failure {
        result = result.detail("sqlstate", code);
    }
    result
}

selfmon_sdk::export_checker!(Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_rows_parse_and_bad_ones_do_not() {
        let row: Vec<Option<String>> =
            ["16.2", "100", "12", "f", "0", "0.25", "t"].iter().map(|s| Some((*s).to_string())).collect();
        let stats = Stats::parse(Some(&row)).unwrap();
        assert_eq!((stats.version.as_str(), stats.connections, stats.standby), ("16.2", 12.0, false));
        let mut broken = row.clone();
        broken[1] = None;
        assert!(Stats::parse(Some(&broken)).is_none());
        assert!(Stats::parse(None).is_none());
    }

    #[test]
    fn the_long_query_threshold_is_a_plain_number_in_the_query() {
        assert!(stats_query(Duration::from_millis(1500)).contains("interval '1.5 seconds'"));
    }
}
