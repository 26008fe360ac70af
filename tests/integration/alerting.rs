//! The alerting engine on a clock the test controls: real rule plugins (the built-in `expression` and `health`
//! rules and a dropped-in one), a real store on each engine, and the engine stepped through minutes and hours of alert life
//! in milliseconds. What the engine hands its channels is checked here; delivery over the wire is in
//! `notifications.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use selfmon::alerting::dispatch::{Notification, Status};
use selfmon::alerting::engine::Engine;
use selfmon::checks::board::Board;
use selfmon::checks::health::{CheckRun, Health};
use selfmon::events::{Events, Payload};
use selfmon::storage::{Sample, Storage};

use crate::support::{ENGINES, Engine as StoreEngine, Workdir};

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

/// An engine over a config, with the checks on its board.
struct Bench {
    engine: Engine,
    host: selfmon::app::host::Host,
    storage: Storage,
    board: Arc<Board>,
    events: Events,
    _workdir: Workdir,
}

const CHANNELS: &str = r#"
[[channel]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[channel]]
name = "pager"
kind = "webhook"
url = "http://127.0.0.1:9/pager"
"#;

impl Bench {
    /// `checks`: name, plugin and dependencies of each check on the board.
    async fn new(store: StoreEngine, config: &str, checks: &[(&str, &str, &[&str])], guests: &[(&str, &[u8])]) -> Self {
        let workdir = Workdir::on(store, &format!("{config}\n{CHANNELS}"), guests);
        let host = selfmon::app::host::Host::build(workdir.config()).await.unwrap();
        let storage = workdir.store().await;
        let board = Arc::new(Board::default());
        for (name, plugin, depends_on) in checks {
            let depends_on: Vec<String> = depends_on.iter().map(|d| d.to_string()).collect();
            board.register(name, plugin, true, Duration::from_secs(30), &depends_on);
        }
        let events = Events::default();
        let engine = engine(&host, &storage, &board, &events).await;
        Self { engine, host, storage, board, events, _workdir: workdir }
    }

    /// Checks `a`, `b` and `c`, all down since the start.
    async fn three_down(store: StoreEngine, config: &str) -> Self {
        let checks: [(&str, &str, &[&str]); 3] = [("a", "http", &[]), ("b", "http", &[]), ("c", "http", &[])];
        let bench = Self::new(store, config, &checks, &[]).await;
        for (name, plugin, _) in checks {
            bench.record(name, plugin, Health::Unhealthy, at(0));
        }
        bench
    }

    /// A silence of one check's alerts between two of the test's seconds.
    async fn silence(&self, check: &str, (from, to): (u64, u64)) -> selfmon::alerting::silences::Silence {
        let request = serde_json::from_value(serde_json::json!({
            "matchers": {"check": check}, "ends_at": humantime::format_rfc3339(at(to)).to_string(), "comment": "planned"
        }))
        .unwrap();
        self.storage.create_silence(request, (at(from), at(to)), Some("ops".into())).await.unwrap()
    }

    /// A new engine on the same store, as after selfmon restarted.
    async fn restart(&mut self) {
        self.engine = engine(&self.host, &self.storage, &self.board, &self.events).await;
    }

    fn record(&self, check: &str, plugin: &str, health: Health, when: SystemTime) {
        let mut run = CheckRun::new(check, plugin, when, Duration::from_millis(20));
        run.health = health;
        run.summary = format!("{check} is {}", health.as_str());
        self.board.record(&run);
    }

    /// Step the engine at each second from `from` to `to`, and every notification it hands out, with when.
    async fn run(&mut self, from: u64, to: u64) -> Vec<(u64, Notification)> {
        let mut out = Vec::new();
        for second in from..=to {
            for due in self.engine.tick(at(second), "test").await {
                out.push((second, due.notification));
            }
        }
        out
    }

    async fn rows(&self) -> Vec<Row> {
        self.storage
            .read(|db| {
                db.query_map("SELECT state, fired_at, resolved_at FROM alerts ORDER BY id", [], |r| {
                    Ok(Row { state: r.get(0)?, fired_at: r.get(1)?, resolved_at: r.get(2)? })
                })
            })
            .await
            .unwrap()
    }

    /// A column of the newest alert of a check, as text.
    async fn column(&self, check: &str, column: &str) -> Option<String> {
        let sql = format!("SELECT CAST({column} AS TEXT), labels FROM alerts ORDER BY id DESC");
        let rows: Vec<(Option<String>, String)> =
            self.storage.read(move |db| db.query_map(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))).await.unwrap();
        let of_check = |labels: &str| serde_json::from_str::<serde_json::Value>(labels).unwrap()["check"] == check;
        rows.into_iter().find(|(_, labels)| of_check(labels)).expect("an alert of the check").0
    }
}

/// An alert as stored.
#[derive(Debug)]
struct Row {
    state: String,
    fired_at: Option<i64>,
    resolved_at: Option<i64>,
}

async fn engine(host: &selfmon::app::host::Host, storage: &Storage, board: &Arc<Board>, events: &Events) -> Engine {
    let telemetry = Arc::new(selfmon::ops::telemetry::Telemetry::new(storage).unwrap());
    Engine::new(host.alerting.clone(), host.runtime.clone(), storage.clone(), board.clone(), events.clone(), telemetry)
        .await
        .unwrap()
}

fn millis(time: SystemTime) -> i64 {
    i64::try_from(time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn checks_in(notification: &Notification) -> Vec<(String, Status)> {
    notification.alerts.iter().map(|a| (a.labels.get("check").cloned().unwrap_or_default(), a.status)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_waits_out_for_fires_once_and_resolves() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        an_alert_waits_out_for_fires_once_and_resolves_on(store).await;
    }
}

async fn an_alert_waits_out_for_fires_once_and_resolves_on(store: StoreEngine) {
    let config = r#"
[alerting]
default_rules = false
group_wait = "30s"
group_interval = "5m"

[[rule]]
name = "slow_api"
condition = 'avg(check_duration_seconds{check="api"}[1m]) > 2'
for = "1m"
channels = ["ops"]
severity = "high"
description = "The API is slow"
"#;
    let mut bench = Bench::new(store, config, &[], &[]).await;
    let mut bus = bench.events.subscribe();
    let sample = |second: u64, value: f64| Sample {
        name: "check_duration_seconds".into(),
        labels: vec![("check".into(), "api".into()), ("plugin".into(), "http".into())],
        time: at(second),
        value,
    };
    bench.storage.write_samples((0..=90).step_by(5).map(|s| sample(s, 3.0)).collect()).await.unwrap();
    bench.storage.flush().await.unwrap();

    assert!(bench.run(0, 0).await.is_empty());
    let status = bench.engine.status().lock().unwrap().clone();
    assert_eq!(bench.rows().await.len(), 1, "{status:?}");
    assert_eq!(bench.rows().await[0].state, "pending", "the condition holds, `for` has not passed");
    assert!(bench.run(1, 59).await.is_empty(), "nothing goes out while pending");
    assert_eq!(bench.rows().await[0].state, "pending");
    assert!(bench.run(60, 60).await.is_empty(), "fired, but the group waits 30 s for company");
    assert_eq!(bench.rows().await[0].state, "firing");
    assert_eq!(bench.rows().await[0].fired_at, Some(millis(at(60))), "fired when `for` had passed");
    let Payload::AlertFired(fired) = &bus.recv().await.unwrap().payload else { panic!("the bus hears of it") };
    assert_eq!((fired.rule.as_str(), fired.severity.as_str()), ("slow_api", "high"));

    let sent = bench.run(61, 95).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (when, notification) = &sent[0];
    assert_eq!(*when, 90, "group_wait after firing");
    assert_eq!(notification.alerts.len(), 1);
    let alert = &notification.alerts[0];
    assert_eq!(alert.labels["alertname"], "slow_api");
    assert_eq!(alert.labels["severity"], "high");
    assert_eq!(alert.annotations["description"], "The API is slow");
    assert_eq!(alert.annotations["value"], "3");
    assert!(
        alert.summary.starts_with(r#"avg(check_duration_seconds{check="api"}[1m]) is 3 for check=api"#),
        "{}",
        alert.summary
    );

    bench.storage.write_samples((100..=160).step_by(5).map(|s| sample(s, 0.1)).collect()).await.unwrap();
    bench.storage.flush().await.unwrap();
    // At 105 the minute's average is still 2.47; at 120 it is (6 × 3 + 5 × 0.1) / 11 = 1.68.
    assert!(bench.run(96, 119).await.is_empty(), "still firing, nothing new to say");
    assert_eq!(bench.rows().await[0].state, "firing");
    assert_eq!(bench.rows().await.len(), 1, "one alert however many evaluations saw it");
    assert!(bench.run(120, 165).await.is_empty(), "the resolution waits for the group's interval");
    let rows = bench.rows().await;
    assert_eq!((rows.len(), rows[0].state.as_str()), (1, "resolved"), "{rows:?}");
    assert_eq!(rows[0].resolved_at, Some(millis(at(120))), "resolved at the first evaluation without the condition");
    let Payload::AlertResolved(resolved) = &bus.recv().await.unwrap().payload else { panic!() };
    assert_eq!(resolved.id, fired.id);

    let sent = bench.run(166, 400).await;
    assert_eq!(sent.len(), 1, "the resolution goes out once: {sent:?}");
    assert_eq!(sent[0].0, 390, "group_interval after the last message");
    assert_eq!(checks_in(&sent[0].1), [("api".to_string(), Status::Resolved)]);
    assert_eq!(sent[0].1.status(), Status::Resolved);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_is_one_message_and_checks_behind_a_down_dependency_are_held_back() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        a_storm_is_one_message_and_checks_behind_a_down_dependency_are_held_back_on(store).await;
    }
}

async fn a_storm_is_one_message_and_checks_behind_a_down_dependency_are_held_back_on(store: StoreEngine) {
    let config = r#"
[alerting]
default_channels = ["ops"]
"#;
    let mut checks: Vec<(String, &str, Vec<&str>)> = vec![
        ("db".into(), "postgres", vec![]),
        ("api".into(), "http", vec!["db"]),
        ("bot".into(), "http", vec!["api"]),
    ];
    checks.extend((0..20).map(|n| (format!("svc-{n:02}"), "http", vec![])));
    let board_checks: Vec<(&str, &str, &[&str])> =
        checks.iter().map(|(n, p, d)| (n.as_str(), *p, d.as_slice())).collect();
    let mut bench = Bench::new(store, config, &board_checks, &[]).await;
    for (name, plugin, _) in &board_checks {
        bench.record(name, plugin, Health::Unhealthy, at(0));
    }

    let sent = bench.run(0, 60).await;
    assert_eq!(sent.len(), 2, "one message per alert name, not 23: {sent:?}");
    let (when, down) = sent.iter().find(|(_, n)| n.group_labels["alertname"] == "service_down").unwrap();
    assert_eq!(*when, 30);
    let mut named: Vec<String> = checks_in(down).into_iter().map(|(c, _)| c).collect();
    named.sort();
    let mut expected: Vec<String> = (0..20).map(|n| format!("svc-{n:02}")).collect();
    expected.insert(0, "db".into());
    assert_eq!(named, expected, "api and bot wait behind db");
    let database = sent.iter().find(|(_, n)| n.group_labels["alertname"] == "database_issues").unwrap();
    assert_eq!(checks_in(&database.1), [("db".to_string(), Status::Firing)]);
    assert_eq!(bench.column("api", "inhibited_by").await.as_deref(), Some("db"));
    assert_eq!(bench.column("bot", "inhibited_by").await.as_deref(), Some("db"), "the root of the chain");
    assert_eq!(bench.column("api", "state").await.as_deref(), Some("firing"), "held back, still visible");

    // The database comes back; the API and the bot are still down on their own.
    bench.record("db", "postgres", Health::Healthy, at(100));
    let sent = bench.run(100, 400).await;
    let down: Vec<_> = sent.iter().filter(|(_, n)| n.group_labels["alertname"] == "service_down").collect();
    assert_eq!(down.len(), 1, "{sent:?}");
    assert_eq!(down[0].0, 330, "group_interval after the first message");
    let states = checks_in(&down[0].1);
    assert!(states.contains(&("api".into(), Status::Firing)), "{states:?}");
    assert!(states.contains(&("db".into(), Status::Resolved)), "{states:?}");
    assert!(!states.iter().any(|(check, _)| check == "bot"), "the bot's failure is still explained by the API's");
    assert_eq!(bench.column("api", "inhibited_by").await, None);
    assert_eq!(bench.column("bot", "inhibited_by").await.as_deref(), Some("api"));
}

#[tokio::test(flavor = "multi_thread")]
async fn silences_hold_alerts_until_they_expire_and_acknowledgement_stops_escalation() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        silences_hold_alerts_until_they_expire_and_acknowledgement_stops_escalation_on(store).await;
    }
}

async fn silences_hold_alerts_until_they_expire_and_acknowledgement_stops_escalation_on(store: StoreEngine) {
    let config = r#"
[alerting]
default_rules = false

[[rule]]
name = "down"
plugin = "health"
channels = ["ops"]
severity = "high"
escalation = "oncall"

[[escalation]]
name = "oncall"
[[escalation.step]]
after = "5m"
channels = ["pager"]
severity = "critical"
"#;
    let mut bench = Bench::three_down(store, config).await;
    let silence = bench.silence("b", (0, 600)).await;

    let sent = bench.run(0, 59).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(checks_in(&sent[0].1), [("a".to_string(), Status::Firing), ("c".to_string(), Status::Firing)]);
    assert_eq!(bench.column("b", "silenced_by").await, Some(silence.id.to_string()), "b is silenced and says by what");
    assert_eq!(bench.column("b", "state").await.as_deref(), Some("firing"));

    let c: i64 = bench.column("c", "id").await.unwrap().parse().unwrap();
    bench.storage.acknowledge(c, Some("ops".into()), "on it".into()).await.unwrap();

    let sent = bench.run(60, 599).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (when, paged) = &sent[0];
    assert_eq!((*when, paged.channel.as_str()), (330, "pager"), "5 minutes unacknowledged, then the group wait");
    assert_eq!(checks_in(paged), [("a".to_string(), Status::Firing)], "c was acknowledged, b is silenced");
    assert_eq!(paged.alerts[0].severity, "critical");
    assert_eq!(bench.column("a", "escalation_step").await.as_deref(), Some("1"));
    assert_eq!(bench.column("a", "severity").await.as_deref(), Some("critical"));
    assert_eq!(bench.column("c", "escalation_step").await.as_deref(), Some("0"));

    let sent = bench.run(600, 700).await;
    let b: Vec<_> = sent.iter().filter(|(_, n)| checks_in(n).iter().any(|(c, _)| c == "b")).collect();
    assert!(!b.is_empty() && b.iter().all(|(when, _)| *when >= 600), "b speaks up once its silence is over: {sent:?}");
    assert_eq!(bench.column("b", "silenced_by").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_neither_repeats_what_was_sent_nor_loses_a_resolution() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        a_restart_neither_repeats_what_was_sent_nor_loses_a_resolution_on(store).await;
    }
}

async fn a_restart_neither_repeats_what_was_sent_nor_loses_a_resolution_on(store: StoreEngine) {
    let config = r#"
[alerting]
default_rules = false

[[rule]]
name = "down"
plugin = "health"
channels = ["ops"]
"#;
    let mut bench = Bench::three_down(store, config).await;
    let sent = bench.run(0, 60).await;
    assert_eq!(checks_in(&sent[0].1).len(), 3);
    bench.silence("c", (100, 3700)).await;
    bench.run(100, 110).await;

    bench.restart().await;
    bench.record("a", "http", Health::Healthy, at(200));
    let sent = bench.run(200, 600).await;
    assert_eq!(sent.len(), 1, "only the news: {sent:?}");
    assert_eq!(sent[0].0, 500, "a group carried over counts as just sent: its news waits group_interval");
    assert_eq!(checks_in(&sent[0].1), [("b".to_string(), Status::Firing), ("a".to_string(), Status::Resolved)]);

    // c resolves while silenced: its channel was told it fired, so it hears that it resolved.
    bench.record("c", "http", Health::Healthy, at(700));
    let sent = bench.run(700, 1100).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(checks_in(&sent[0].1).contains(&("c".to_string(), Status::Resolved)), "{sent:?}");
    assert!(!checks_in(&sent[0].1).contains(&("c".to_string(), Status::Firing)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_in_rule_works_and_one_that_traps_or_hangs_is_reported_not_fatal() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        a_dropped_in_rule_works_and_one_that_traps_or_hangs_is_reported_not_fatal_on(store).await;
    }
}

async fn a_dropped_in_rule_works_and_one_that_traps_or_hangs_is_reported_not_fatal_on(store: StoreEngine) {
    let config = r#"
[alerting]
default_rules = false

[[rule]]
name = "custom"
plugin = "custom-rule"
channels = ["ops"]

[[rule]]
name = "crashing"
plugin = "custom-rule"
config = { mode = "trap" }

[[rule]]
name = "hanging"
plugin = "custom-rule"
config = { mode = "loop" }

[[rule]]
name = "builtin"
plugin = "health"
"#;
    let mut bench =
        Bench::new(store, config, &[("web", "http", &[])], &[("custom-rule", selfmon_plugin_artifacts::guests::RULE)])
            .await;
    bench.record("web", "http", Health::Unhealthy, at(0));
    let status = bench.engine.status();
    let sent = bench.run(0, 30).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.alerts[0].labels["alertname"], "custom_down", "the plugin named its alert");
    assert_eq!(sent[0].1.alerts[0].severity, "low", "and chose its severity");
    let states = status.lock().unwrap().clone();
    assert_eq!(states["custom"].state, "firing");
    assert_eq!(states["builtin"].state, "firing");
    let crashed = states["crashing"].error.clone().unwrap();
    assert!(crashed.contains("the rule fell over"), "{crashed}");
    let hung = states["hanging"].error.clone().unwrap();
    assert!(hung.contains("deadline of 5s exceeded"), "{hung}");
    assert_eq!(states["hanging"].state, "inactive");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cleanup_forgets_old_resolved_alerts_and_attempts_but_never_active_ones() {
    for store in ENGINES {
        eprintln!("on {store:?}");
        the_cleanup_forgets_old_resolved_alerts_and_attempts_but_never_active_ones_on(store).await;
    }
}

async fn the_cleanup_forgets_old_resolved_alerts_and_attempts_but_never_active_ones_on(store: StoreEngine) {
    let workdir = Workdir::on(store, "", &[]);
    let storage = workdir.store().await;
    let now = millis(SystemTime::now());
    let (old, recent) = (now - 100 * 86_400_000, now - 86_400_000);
    storage
        .apply(move |db| {
            db.execute_batch(&format!(
                "INSERT INTO alerts (fingerprint, rule, severity, state, summary, labels, started_at, resolved_at)
                 VALUES ('a', 'r', 'low', 'resolved', 'old', '{{}}', {old}, {old}),
                        ('b', 'r', 'low', 'resolved', 'recent', '{{}}', {old}, {recent}),
                        ('c', 'r', 'low', 'firing', 'firing for months', '{{}}', {old}, NULL);
                 INSERT INTO alert_notifications (channel, group_key, status, alerts, attempt, at, outcome, duration_ms)
                 VALUES ('ops', 'k', 'firing', '[1]', 1, {old}, 'delivered', 1.0),
                        ('ops', 'k', 'firing', '[2]', 1, {recent}, 'delivered', 1.0);
                 INSERT INTO silences (matchers, starts_at, ends_at, comment)
                 VALUES ('{{}}', {old}, {old}, 'long over'), ('{{}}', {old}, {recent}, 'recently over');"
            ))
        })
        .await
        .unwrap();
    let config = selfmon::config::RetentionConfig::default();
    let sweep = selfmon::ops::retention::sweep(&storage, &config, &tokio_util::sync::CancellationToken::new()).await;
    assert!(sweep.failed.is_empty(), "{sweep:?}");
    assert_eq!(sweep.swept.alerts, 3, "{sweep:?}");
    let (summaries, counts) = storage
        .read(|db| {
            let summaries: Vec<String> = db.query_map("SELECT summary FROM alerts ORDER BY id", [], |r| r.get(0))?;
            let count =
                |table: &str| db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0));
            Ok((summaries, (count("alert_notifications")?, count("silences")?)))
        })
        .await
        .unwrap();
    assert_eq!(summaries, ["recent", "firing for months"]);
    assert_eq!(counts, (1, 1));
    storage.close().await.unwrap();
}
