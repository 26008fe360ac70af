//! selfmon's store on both engines: a SQLite file and a PostgreSQL database (one server for the binary, a
//! database per test). The same calls give the same answers on both, and each answer is what a user relies on.

use std::time::{Duration, SystemTime};

use selfmon::checks::health::{CheckRun, Health};
use selfmon::checks::recovery::status::{Attempt, Outcome};
use selfmon::logs::search::{Search, SearchError};
use selfmon::logs::{FileMark, NewRecord, ReadTo};
use selfmon::storage::Storage;
use serde_json::{Value, json};

use crate::support::postgres;

/// A fresh store on each engine, named.
async fn stores() -> Vec<(&'static str, Storage, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Storage::open(&dir.path().join("store.db")).unwrap();
    let url = selfmon::config::Secret::new(postgres::shared().database());
    let postgres = Storage::connect(&url, |_| Err(std::io::ErrorKind::NotFound.into())).await.unwrap();
    vec![("sqlite", sqlite, Some(dir)), ("postgres", postgres, None)]
}

/// `seconds` before a moment fixed for the whole run, so both engines are given the same times.
fn ago(seconds: u64) -> SystemTime {
    static NOW: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *NOW.get_or_init(SystemTime::now) - Duration::from_secs(seconds)
}

/// An answer as JSON, without the fields that say when it was asked (or when something was made).
fn answer(value: impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(value).unwrap();
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for moment in ["from", "to", "created_at"] {
                    map.remove(moment);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

fn run(check: &str, seconds_ago: u64, health: Health, error: Option<&str>) -> CheckRun {
    let mut run = CheckRun::new(check.to_string(), "http".to_string(), ago(seconds_ago), Duration::from_millis(25));
    run.health = health;
    run.summary = format!("{check} {}", health.as_str());
    run.error = error.map(str::to_string);
    run
}

fn record(seconds_ago: u64, level: &'static str, service: &str, message: &str) -> NewRecord {
    let mut record = NewRecord::plain(ago(seconds_ago), level, "app".into(), message.into());
    record.service = Some(service.into());
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_and_their_reads_answer_alike_on_both_engines() {
    let mut answers = Vec::new();
    for (engine, storage, _dir) in stores().await {
        storage.write_run(run("db", 120, Health::Healthy, None)).await.unwrap();
        storage.write_run(run("db", 60, Health::Unhealthy, None)).await.unwrap();
        storage.write_run(run("web", 30, Health::Unknown, Some("deadline"))).await.unwrap();
        storage.flush().await.unwrap();
        let latest: Vec<(String, &str)> =
            storage.latest_runs().await.unwrap().into_iter().map(|r| (r.check, r.health.as_str())).collect();
        assert_eq!(latest, [("db".to_string(), "unhealthy"), ("web".to_string(), "unknown")], "{engine}");
        let runs = answer(storage.runs("db".into(), 10).await.unwrap());
        assert_eq!(runs.as_array().unwrap().len(), 2, "{engine}: {runs}");
        assert_eq!(runs[0]["status"], "unhealthy", "{engine}: newest first");
        let failures = storage.recent_failures(10).await.unwrap();
        assert_eq!(failures["http"][0].2, "deadline", "{engine}");
        let id = storage
            .record_recovery(selfmon::checks::store::RecoveryRecord {
                check: "db".into(),
                attempt: Attempt {
                    attempt: 1,
                    started_at: ago(50),
                    action: "systemctl restart db".into(),
                    outcome: Outcome::Failed,
                    exit_code: Some(3),
                    output: "unit not found".into(),
                    recovered: false,
                },
                duration: Duration::from_millis(5),
            })
            .await
            .unwrap();
        assert_eq!(id, 1, "{engine}");
        storage.mark_recovered(id, ago(40));
        // Queued by a task of its own, without waiting: it lands within a few writer groups.
        let mut attempts = Value::Null;
        for _ in 0..50 {
            storage.flush().await.unwrap();
            attempts = answer(storage.recovery_attempts(Some("db".into()), 10).await.unwrap());
            if attempts[0]["recovered_at"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(attempts[0]["recovered_at"].is_string(), "{engine}: {attempts}");
        let performance = answer(storage.performance(Duration::from_secs(3600)).await.unwrap());
        let figures = storage.figures().await.unwrap();
        assert_eq!((figures.runs_stored, figures.series), (3, 4), "{engine}: two series of samples per check");
        answers.push((runs, attempts, performance, answer(failures)));
        storage.close().await.unwrap();
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_searched_counted_and_analysed_alike_on_both_engines() {
    let mut answers = Vec::new();
    for (engine, storage, _dir) in stores().await {
        let mut records = vec![
            record(300, "info", "api", "GET /checkout took 12 ms"),
            record(290, "error", "api", "Database connection refused by db.internal"),
            record(280, "error", "api", "Database connection timeout after 5 s"),
            record(270, "warning", "worker", "Retrying the checkout job"),
            record(
                260,
                "critical",
                "worker",
                &format!("Traceback (most recent call last):\n{}\nValueError: bad", "  frame\n".repeat(400)),
            ),
        ];
        let mut failed = record(250, "security", "api", "Login failed");
        failed.fields = Some(json!({"auth_failure": true, "remote_addr": "10.0.0.9"}).to_string());
        failed.user_id = Some("u-7".into());
        records.push(failed);
        let mut attack = record(240, "warning", "api", "Blocked request");
        attack.fields = Some(json!({"threat": "sql-injection"}).to_string());
        records.push(attack);
        let mut user = record(230, "error", "api", "Payment failed for the user");
        user.user_id = Some("u-7".into());
        records.push(user);
        // A NUL in a field's value, escaped in the fields' JSON: stored, and no analysis fails for it.
        let mut odd = record(220, "info", "api", "Odd bytes");
        odd.fields = Some(json!({"note": "nul \u{0} here", "threat": null}).to_string());
        records.push(odd);
        let head = [7u8; 32];
        let mark =
            FileMark { path: "/var/log/app.log".into(), device: 2049, inode: 77, offset: 4096, head_len: 64, head };
        let read_to = ReadTo { source: "app".into(), mark: mark.clone() };
        assert_eq!(storage.write_logs(records, Some(read_to)).await.unwrap(), 9, "{engine}");
        assert_eq!(storage.file_marks("app".into()).await.unwrap(), std::slice::from_ref(&mark), "{engine}");
        let moved = FileMark { offset: 8192, ..mark };
        let read_to = ReadTo { source: "app".into(), mark: moved.clone() };
        storage.write_logs(Vec::new(), Some(read_to)).await.unwrap();
        assert_eq!(storage.file_marks("app".into()).await.unwrap(), [moved], "{engine}: the mark moved on");
        assert_eq!(*storage.log_head().borrow(), 9, "{engine}");

        let search = |text: &str| Search { text: Some(text.into()), limit: 10, ..Search::default() };
        let messages =
            |found: selfmon::logs::search::Found| found.records.into_iter().map(|r| r.message).collect::<Vec<_>>();
        let mut found = Vec::new();
        for text in [
            "database",
            "\"connection refused\"",
            "check*",
            "connection NOT timeout",
            "refused OR retrying",
            "(payment OR login) AND failed",
        ] {
            let page = storage.search_logs(search(text)).await.unwrap();
            found.push((text, messages(page)));
        }
        assert_eq!(
            found[0].1,
            ["Database connection timeout after 5 s", "Database connection refused by db.internal"],
            "{engine}: newest first"
        );
        assert_eq!(found[1].1, ["Database connection refused by db.internal"], "{engine}");
        assert_eq!(found[2].1, ["Retrying the checkout job", "GET /checkout took 12 ms"], "{engine}: a prefix");
        assert_eq!(found[3].1, ["Database connection refused by db.internal"], "{engine}");
        assert_eq!(found[4].1.len(), 2, "{engine}: {:?}", found[4]);
        assert_eq!(found[5].1, ["Payment failed for the user", "Login failed"], "{engine}");
        for bad in ["\"open", "a OR", "(a"] {
            let error = storage.search_logs(search(bad)).await.unwrap_err();
            assert!(matches!(error, SearchError::Syntax(_)), "{engine}: {bad}: {error}");
        }
        let filtered = Search {
            levels: vec!["error".into(), "critical".into()],
            service: Some("worker".into()),
            limit: 10,
            ..Search::default()
        };
        let page = storage.search_logs(filtered).await.unwrap();
        assert_eq!(page.records.len(), 1, "{engine}");
        let tail = storage.search_logs(Search { after: Some(6), limit: 10, ..Search::default() }).await.unwrap();
        assert_eq!(
            tail.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [7, 8, 9],
            "{engine}: oldest first after an id"
        );

        let analysis = storage.analyse_logs(1).await.unwrap();
        assert_eq!(analysis.total_records, 9, "{engine}");
        assert_eq!(analysis.security.events, 2, "{engine}: {:?}", analysis.security);
        assert_eq!(analysis.user_activity.top_users[0].errors, 1, "{engine}");
        assert!(
            analysis.error_analysis.templates.iter().any(|t| t.samples.iter().any(|s| s.contains("ValueError: bad"))),
            "{engine}: a long traceback keeps its last line: {:?}",
            analysis.error_analysis.templates
        );
        let aggregate = storage.aggregate_logs(1, selfmon::logs::analysis::Period::Hour).await.unwrap();
        answers.push((answer(&found), answer(&analysis), answer(&aggregate)));
        storage.close().await.unwrap();
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_silences_and_webhooks_answer_alike_on_both_engines() {
    use selfmon::alerting::api_rules::Rule;
    use selfmon::alerting::silences::SilenceRequest;
    use selfmon::events::delivery::Attempt;
    use selfmon::events::webhooks::WebhookRequest;
    use selfmon::storage::ChangeError;

    let mut answers = Vec::new();
    for (engine, storage, _dir) in stores().await {
        let rule = Rule {
            name: "slow".into(),
            condition: "avg(response_time_seconds) > 1".into(),
            threshold: Some(1.0),
            severity: "warning".into(),
            notification_channels: vec!["ops".into()],
            hold_seconds: 30.0,
            description: "Slow answers".into(),
            created_at: "2026-12-07T10:00:00Z".into(),
            created_by: Some("admin".into()),
        };
        storage.create_rule(rule.clone()).await.unwrap();
        let again = storage.create_rule(rule).await.unwrap_err();
        assert!(matches!(again, ChangeError::Conflict(_)), "{engine}: {again}");
        let rules = answer(storage.rules(0, 10).await.unwrap());
        assert_eq!(rules["total"], 1, "{engine}");
        assert_eq!(rules["items"][0]["for_seconds"], 30.0, "{engine}");

        let span = (ago(60), ago(0) + Duration::from_secs(3600));
        let request = |comment: &str| SilenceRequest {
            matchers: [("check".to_string(), "db".to_string())].into(),
            duration: None,
            starts_at: None,
            ends_at: None,
            comment: comment.into(),
        };
        let first = storage.create_silence(request("maintenance"), span, Some("admin".into())).await.unwrap();
        let second = storage.create_silence(request("migration"), span, None).await.unwrap();
        let expired = storage.expire_silence(first.id).await.unwrap();
        assert_eq!(expired.state, "expired", "{engine}");
        let active: Vec<i64> = storage.active_silences(SystemTime::now()).await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(active, [second.id], "{engine}");
        let silences = answer(storage.silences(0, 10).await.unwrap());
        assert_eq!(silences["total"], 2, "{engine}");
        assert_eq!(silences["items"][0]["id"], second.id, "{engine}: those in force first");
        // The expired one ended when it was expired, a moment that differs between the engines' runs.
        let silences = silences["items"][0].clone();

        let webhook = |events: &[&str]| WebhookRequest {
            url: "https://hooks.example/selfmon".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: "0123456789abcdef".into(),
        };
        let fired = storage.create_webhook(webhook(&["alert.fired", "alert.resolved"])).await.unwrap();
        let health = storage.create_webhook(webhook(&["health.changed"])).await.unwrap();
        let subscribers: Vec<i64> = storage.subscribers("alert.fired").await.unwrap().iter().map(|s| s.0).collect();
        assert_eq!(subscribers, [fired.id], "{engine}");
        let attempt = Attempt {
            attempt: 1,
            at: ago(5),
            status_code: Some(502),
            outcome: "failed".into(),
            error: Some("bad gateway".into()),
            duration_ms: 12.5,
        };
        assert!(storage.record_delivery(fired.id, "e-1".into(), "alert.fired", attempt.clone()).await.unwrap());
        storage.delete_webhook(health.id).await.unwrap();
        let gone = storage.record_delivery(health.id, "e-2".into(), "health.changed", attempt).await.unwrap();
        assert!(!gone, "{engine}: no delivery is kept for a webhook that is gone");
        let deliveries = answer(storage.deliveries(fired.id, 0, 10).await.unwrap());
        assert_eq!(deliveries["items"][0]["status_code"], 502, "{engine}: {deliveries}");
        answers.push((rules, silences, deliveries, answer(storage.webhooks().await.unwrap())));
        storage.close().await.unwrap();
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_events_and_samples_answer_alike_on_both_engines() {
    use selfmon::analytics::events::NewEvent;
    use selfmon::storage::{Sample, SeriesQuery};
    use selfmon::traces::{NewSpan, TraceSearch};

    let mut answers = Vec::new();
    for (engine, storage, _dir) in stores().await {
        let start = selfmon::storage::to_millis(ago(120)) * 1_000_000;
        let span = |id: &str, parent: Option<&str>, offset_ms: i64, status: &'static str, user: Option<&str>| NewSpan {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_id: parent.map(str::to_string),
            service: "bot".into(),
            name: if parent.is_none() { "handle_message".into() } else { "openai.chat".into() },
            kind: "server",
            start_ns: start + offset_ms * 1_000_000,
            duration_ns: 250_000_000,
            status,
            status_message: None,
            user_id: user.map(str::to_string),
            attributes: serde_json::Map::new(),
            events: Vec::new(),
            resource: serde_json::Map::new(),
        };
        storage.write_spans(vec![span("00f067aa0ba902b7", None, 0, "ok", None)]).await.unwrap();
        // The inner span arrives with the user; sent again, it replaces what was stored.
        let inner = span("00f067aa0ba902b8", Some("00f067aa0ba902b7"), 10, "unset", Some("u-1"));
        storage.write_spans(vec![inner.clone()]).await.unwrap();
        storage.write_spans(vec![NewSpan { status: "error", ..inner }]).await.unwrap();
        let trace = answer(storage.trace("4bf92f3577b34da6a3ce929d0e0e4736".into()).await.unwrap().unwrap());
        assert_eq!(trace["span_count"], 2, "{engine}: {trace}");
        // Log records written together (one statement on PostgreSQL) each take their own values, and a record
        // without a user takes its trace's.
        let mut logs = vec![record(5, "info", "bot", "replied"), record(5, "warning", "bot", "no trace")];
        logs.push(record(5, "error", "bot", "its own user"));
        logs[0].trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        logs[2].trace_id = logs[0].trace_id.clone();
        logs[2].user_id = Some("u-2".into());
        storage.write_logs(logs, None).await.unwrap();
        let found = storage.search_logs(selfmon::logs::search::Search { limit: 10, ..Default::default() }).await;
        let found: Vec<(String, String, Option<String>)> =
            found.unwrap().records.into_iter().map(|r| (r.message, r.level, r.user_id)).collect();
        let expected =
            [("its own user", "error", Some("u-2")), ("no trace", "warning", None), ("replied", "info", Some("u-1"))];
        for (message, level, user) in expected {
            let stored = found.iter().find(|(m, _, _)| m == message).unwrap_or_else(|| panic!("{engine}: {found:?}"));
            assert_eq!((stored.1.as_str(), stored.2.as_deref()), (level, user), "{engine}: {message}");
        }
        let search = TraceSearch { error: Some(true), limit: 10, ..TraceSearch::default() };
        let traces = answer(storage.search_traces(search).await.unwrap());
        assert_eq!(traces[0]["error_count"], 1, "{engine}: the span sent again replaced the first: {traces}");
        assert_eq!(traces[0]["operation"], "handle_message", "{engine}");

        let mut usage = NewEvent::new("ai_usage", ago(100));
        usage.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        usage.span_id = Some("00f067aa0ba902b8".into());
        usage.provider = Some("openai".into());
        usage.model = Some("gpt-4o".into());
        usage.cost = Some(0.25);
        usage.input_tokens = Some(1000);
        let key = Some(("openai".to_string(), "gpt-4o".to_string()));
        let stored = storage.write_events(vec![usage.clone()], vec![key.clone()], Vec::new()).await.unwrap();
        assert_eq!(stored, [true], "{engine}");
        let again = storage.write_events(vec![usage], vec![key], Vec::new()).await.unwrap();
        assert_eq!(again, [false], "{engine}: an exporter's retry counts once");
        let ai = selfmon::config::AiConfig::default();
        let prices = selfmon::analytics::cost::Prices::from_config(&ai);
        let analytics = answer(storage.analytics(1, SystemTime::now(), ai, prices).await.unwrap());
        assert_eq!(analytics["users"]["daily_active"], 1, "{engine}: the event took its trace's user: {analytics}");

        let samples = (0..6u64)
            .map(|i| Sample {
                name: "queue_depth".into(),
                labels: vec![("queue".into(), if i % 2 == 0 { "a" } else { "b" }.into())],
                time: selfmon::storage::from_millis(1_796_601_600_000 + i64::try_from(i).unwrap() * 10_000),
                value: i as f64,
            })
            .collect();
        storage.write_samples(samples).await.unwrap();
        storage.flush().await.unwrap();
        let query = SeriesQuery {
            name: "queue_depth".into(),
            matchers: Vec::new(),
            from: selfmon::storage::from_millis(1_796_601_600_000),
            to: selfmon::storage::from_millis(1_796_601_700_000),
            step: Some(Duration::from_secs(30)),
            offset: 0,
            limit: 10,
        };
        let series = answer(storage.series(query).await.unwrap());
        assert_eq!(
            series["series"][0]["points"],
            json!([[1_796_601_600_000i64, 1.0], [1_796_601_630_000i64, 4.0]]),
            "{engine}: {series}"
        );
        let names = answer(storage.metric_names().await.unwrap());
        answers.push((trace, traces, analytics, series, names));
        storage.close().await.unwrap();
    }
    assert_eq!(answers[0], answers[1]);
}

/// Retention on PostgreSQL drops whole days: a day past every level's retention goes with its partition (and each
/// of samples, events and spans by its own retention), a record of a time no day partition holds (long ago) leaves
/// the default partition, and recent records stay.
#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_whole_days_on_postgres() {
    let database = postgres::shared().database();
    let url = selfmon::config::Secret::new(database.clone());
    let storage = Storage::connect(&url, |_| Err(std::io::ErrorKind::NotFound.into())).await.unwrap();
    const DAY_MS: i64 = 86_400_000;
    // Clear of midnight, so that yesterday stays yesterday while the test runs.
    while selfmon::storage::to_millis(SystemTime::now()).rem_euclid(DAY_MS) < 60_000 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let now = selfmon::storage::to_millis(SystemTime::now());
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let at = |millis: i64, message: &str| {
        NewRecord::plain(selfmon::storage::from_millis(millis), "error", "api".into(), message.into())
    };
    let records = vec![at(now - 40 * DAY_MS, "long ago"), at(today - 3_600_000, "yesterday"), at(now + 60_000, "soon")];
    storage.write_logs(records, None).await.unwrap();
    // A sample, an event and a span of yesterday too: each table is dropped by its own retention, in its own unit.
    let late = selfmon::storage::from_millis(today - 3_600_000);
    let sample = selfmon::storage::Sample { name: "depth".into(), labels: Vec::new(), time: late, value: 1.0 };
    storage.write_samples(vec![sample]).await.unwrap();
    storage.flush().await.unwrap();
    let event = selfmon::analytics::events::NewEvent::new("user_action", late);
    storage.write_events(vec![event], vec![None], Vec::new()).await.unwrap();
    let span = selfmon::traces::NewSpan {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        parent_id: None,
        service: "bot".into(),
        name: "handle".into(),
        kind: "server",
        start_ns: (today - 3_600_000) * 1_000_000,
        duration_ns: 1_000,
        status: "ok",
        status_message: None,
        user_id: None,
        attributes: serde_json::Map::new(),
        events: Vec::new(),
        resource: serde_json::Map::new(),
    };
    storage.write_spans(vec![span]).await.unwrap();
    let day = &selfmon::storage::rfc3339(today - DAY_MS)[..10].replace('-', "");
    let yesterday = format!("logs_d{day}");
    let partitions_of = |table: &str| {
        let output = std::process::Command::new("psql")
            .args([database.as_str(), "-tA", "-c"])
            .arg(format!(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = '{table}'::regclass ORDER BY 1"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let partitions = || partitions_of("logs");
    for table in ["samples", "events", "spans"] {
        assert!(partitions_of(table).contains(&format!("{table}_d{day}")), "{:?}", partitions_of(table));
    }
    assert!(partitions().contains(&yesterday), "{:?}", partitions());
    assert_eq!(partitions().len(), 10, "the default, yesterday, today and a week ahead: {:?}", partitions());

    // Every level kept for ten seconds: yesterday's partition goes whole, the old record leaves the default one.
    let levels = ["security", "audit", "critical", "error", "warning"].map(|level| format!("{level} = \"10s\"\n"));
    let config: selfmon::config::RetentionConfig = toml::from_str(&format!(
        "logs = \"10s\"\nmetrics = \"10s\"\nevents = \"10s\"\nspans = \"10s\"\n[log_levels]\n{}",
        levels.concat()
    ))
    .unwrap();
    let sweep = selfmon::ops::retention::sweep(&storage, &config, &tokio_util::sync::CancellationToken::new()).await;
    assert!(sweep.failed.is_empty(), "{sweep:?}");
    assert!(!partitions().contains(&yesterday), "{:?}", partitions());
    let left = storage.search_logs(Search { limit: 10, ..Search::default() }).await.unwrap();
    assert_eq!(left.records.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["soon"]);
    // The next day's partition is still made ahead.
    assert_eq!(partitions().len(), 9, "{:?}", partitions());
    for table in ["samples", "events", "spans"] {
        assert!(!partitions_of(table).contains(&format!("{table}_d{day}")), "{:?}", partitions_of(table));
    }
    storage.close().await.unwrap();
}

/// `sslmode` as libpq reads it, against a server whose certificate a test authority signed for `localhost`.
#[tokio::test(flavor = "multi_thread")]
async fn tls_to_postgres_follows_sslmode() {
    let server = postgres::shared();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &postgres::ca().pem).unwrap();
    let read_file = |path: &str| std::fs::read(path);
    let connect = |host: &str, query: String| {
        let url = server.database().replace("127.0.0.1", host).replace("sslmode=disable", &query);
        async move { Storage::connect(&selfmon::config::Secret::new(url), read_file).await }
    };
    let encrypted = |storage: Storage| async move {
        let ssl: bool = storage
            .read(|db| db.query_row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", [], |r| r.get(0)))
            .await
            .unwrap();
        storage.close().await.unwrap();
        ssl
    };
    let root = format!("sslrootcert={}", ca_file.display());
    assert!(encrypted(connect("localhost", format!("sslmode=verify-full&{root}")).await.unwrap()).await);
    assert!(
        encrypted(connect("127.0.0.1", format!("sslmode=verify-ca&{root}")).await.unwrap()).await,
        "verify-ca does not check the name"
    );
    assert!(
        encrypted(connect("127.0.0.1", "sslmode=require".into()).await.unwrap()).await,
        "require does not check the server"
    );
    assert!(!encrypted(connect("127.0.0.1", "sslmode=disable".into()).await.unwrap()).await);
    for (host, query, why) in [
        ("127.0.0.1", format!("sslmode=verify-full&{root}"), "the certificate is for localhost"),
        ("localhost", "sslmode=verify-full".to_string(), "the test authority is not among the system's roots"),
    ] {
        let error = connect(host, query).await.err().unwrap().to_string();
        assert!(error.starts_with("cannot open the PostgreSQL database"), "{why}: {error}");
        assert!(error.contains(&format!("{host}:{}", server.port)), "{why}: names where: {error}");
    }
    let missing = connect("localhost", "sslmode=verify-full&sslrootcert=/nowhere/ca.pem".into()).await.err().unwrap();
    assert!(missing.to_string().contains("`sslrootcert`: cannot read /nowhere/ca.pem"), "{missing}");
}

/// `selfmon storage migrate`: a SQLite store copied into PostgreSQL answers the same there; run again (as after a
/// copy that stopped part way), it fills in what is missing and duplicates nothing; new rows take new ids.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_store_moves_into_postgres_and_answers_the_same() {
    use selfmon::storage::migrate;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let sqlite = Storage::open(&path).unwrap();
    for i in 0..5 {
        sqlite.write_run(run("db", 600 - i * 60, Health::Healthy, None)).await.unwrap();
    }
    let records: Vec<NewRecord> = (0..2500)
        .map(|i| record(3000 - i, if i % 10 == 0 { "error" } else { "info" }, "api", &format!("request {i} served")))
        .collect();
    sqlite.write_logs(records, None).await.unwrap();
    // A record of a day long gone lands in that day's own partition.
    sqlite.write_logs(vec![record(20 * 86_400, "info", "api", "from another month")], None).await.unwrap();
    sqlite.flush().await.unwrap();
    let search = Search { text: Some("served".into()), levels: vec!["error".into()], limit: 5, ..Search::default() };
    let before = answer(sqlite.search_logs(search.clone()).await.unwrap());
    let runs_before = answer(sqlite.runs("db".into(), 10).await.unwrap());
    sqlite.close().await.unwrap();

    let database = postgres::shared().database();
    let url = selfmon::config::Secret::new(database.clone());
    let no_file = |_: &str| Err(std::io::ErrorKind::NotFound.into());
    let counted = migrate::to_postgres(&path, None, &url, no_file, |_| {}).await.unwrap();
    let logs = counted.iter().find(|c| c.table == "logs").unwrap();
    assert_eq!((logs.sqlite, logs.postgres), (2501, 2501));
    assert!(counted.iter().all(|c| c.sqlite == c.postgres), "{counted:?}");

    // As if a copy had stopped part way: the newest records are missing; a second run brings them back, once.
    let psql = |sql: &str| {
        let output = std::process::Command::new("psql").args([database.as_str(), "-tA", "-c", sql]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    psql("DELETE FROM logs WHERE id > 1200");
    let counted = migrate::to_postgres(&path, None, &url, no_file, |_| {}).await.unwrap();
    assert!(counted.iter().all(|c| c.sqlite == c.postgres), "{counted:?}");
    assert_eq!(psql("SELECT COUNT(DISTINCT id) FROM logs"), "2501");
    let old_day = psql("SELECT tableoid::regclass FROM logs WHERE message = 'from another month'");
    assert!(old_day.starts_with("logs_d"), "in its day's partition, not the default one: {old_day}");

    let postgres = Storage::connect(&url, no_file).await.unwrap();
    assert_eq!(answer(postgres.search_logs(search).await.unwrap()), before);
    assert_eq!(answer(postgres.runs("db".into(), 10).await.unwrap()), runs_before);
    postgres.write_logs(vec![record(1, "info", "api", "after the move")], None).await.unwrap();
    assert_eq!(*postgres.log_head().borrow(), 2502, "a new record takes the next id");
    postgres.close().await.unwrap();
}

/// A record of a day that had no partition waits in the default one; when that day's partition is made, it moves
/// there, and is found as before.
#[tokio::test(flavor = "multi_thread")]
async fn records_move_from_the_default_partition_to_their_day() {
    let database = postgres::shared().database();
    let url = selfmon::config::Secret::new(database.clone());
    let storage = Storage::connect(&url, |_| Err(std::io::ErrorKind::NotFound.into())).await.unwrap();
    let old = selfmon::storage::to_millis(ago(20 * 86_400));
    let at = |millis: i64, message: &str| {
        NewRecord::plain(selfmon::storage::from_millis(millis), "info", "api".into(), message.into())
    };
    storage.write_logs(vec![at(old, "twenty days ago"), at(old + 1, "a moment later")], None).await.unwrap();
    let partition = || {
        let output = std::process::Command::new("psql")
            .args([
                database.as_str(),
                "-tA",
                "-c",
                "SELECT DISTINCT tableoid::regclass FROM logs WHERE ts < 1800000000000 ORDER BY 1",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(partition(), "logs_default");
    storage.prepare_partitions_for(&[old]).await.unwrap();
    let day = format!("logs_d{}", selfmon::storage::rfc3339(old)[..10].replace('-', ""));
    assert_eq!(partition().lines().collect::<Vec<_>>(), [day.as_str()], "both moved, none left behind");
    let found =
        storage.search_logs(Search { text: Some("twenty".into()), limit: 5, ..Search::default() }).await.unwrap();
    assert_eq!(found.records.len(), 1);
    // Writing goes on into the table with its default partition attached again.
    storage.write_logs(vec![at(old - 86_400_000 * 5, "older still")], None).await.unwrap();
    assert!(partition().lines().any(|p| p == "logs_default"), "{}", partition());
    storage.close().await.unwrap();
}

/// PostgreSQL restarting under a running store: writes queued meanwhile wait for it and are all stored, none
/// lost; and the server's own words reach the error of a login it refuses, without the password.
#[tokio::test(flavor = "multi_thread")]
async fn writes_wait_out_a_postgres_restart_and_refusals_say_why() {
    let mut server = postgres::Postgres::start();
    let url = |user: &str| format!("postgres://{user}@127.0.0.1:{}/postgres?sslmode=disable", server.port);
    let no_file = |_: &str| Err(std::io::ErrorKind::NotFound.into());
    let wrong = format!("postgres://{}:not-the-password@127.0.0.1:{}/postgres", postgres::SCRAM_USER, server.port);
    let refused = Storage::connect(&selfmon::config::Secret::new(wrong), no_file).await.err().unwrap().to_string();
    assert!(refused.contains("password authentication failed"), "{refused}");
    assert!(!refused.contains("not-the-password"), "{refused}");

    let storage = Storage::connect(&selfmon::config::Secret::new(url("postgres")), no_file).await.unwrap();
    storage.write_run(run("db", 30, Health::Healthy, None)).await.unwrap();
    storage.flush().await.unwrap();
    server.stop();
    for i in 0..5 {
        storage.write_run(run("db", 20 - i, Health::Degraded, None)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    storage.flush().await.unwrap();
    assert_eq!(storage.runs("db".into(), 10).await.unwrap().len(), 6, "every run queued while it was down");
    storage.close().await.unwrap();
}

/// `selfmon storage migrate` never copies into a database a node has been storing in.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_is_not_migrated_into_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let sqlite = Storage::open(&path).unwrap();
    sqlite.write_logs(vec![record(10, "info", "api", "kept here")], None).await.unwrap();
    sqlite.close().await.unwrap();
    let url = selfmon::config::Secret::new(postgres::shared().database());
    let no_file = |_: &str| Err(std::io::ErrorKind::NotFound.into());
    let node = Storage::connect(&url, no_file).await.unwrap();
    node.write_logs(vec![record(5, "info", "api", "a node's own")], None).await.unwrap();
    node.close().await.unwrap();
    let error = selfmon::storage::migrate::to_postgres(&path, None, &url, no_file, |_| {}).await.err().unwrap();
    assert!(error.to_string().contains("already holds a store"), "{error}");
}

/// `selfmon storage migrate --to env:NAME` from the command line: each table's rows on both sides, exit 0 when all
/// are there; the URL, read from the environment, never printed.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_migrates_a_store() {
    let workdir = crate::support::Workdir::new("", &[]);
    let sqlite = workdir.store().await;
    sqlite.write_run(run("db", 30, Health::Healthy, None)).await.unwrap();
    sqlite.write_logs(vec![record(20, "info", "api", "moved by the command line")], None).await.unwrap();
    sqlite.close().await.unwrap();
    let url = postgres::shared().database();
    let output = crate::support::selfmon_command(&workdir)
        .args(["storage", "migrate", "--to", "env:TEST_DATABASE_URL"])
        .env("TEST_DATABASE_URL", &url)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    let logs = printed.lines().find(|l| l.starts_with("logs ")).unwrap();
    assert_eq!(logs.split_whitespace().collect::<Vec<_>>(), ["logs", "1", "1", "ok"], "{printed}");
    assert!(printed.contains("set `[storage] url` to use it") && !printed.contains(&url), "{printed}");
    let missing = crate::support::selfmon_command(&workdir).args(["storage", "migrate"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("give `--to postgres://...`"), "{missing:?}");
}
