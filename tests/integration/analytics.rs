//! Events over real HTTP into a real SQLite file: analytics over a generated but realistic stream checked against
//! expectations computed here, AI cost from the configured price table and its budget seen by the alert rules, and
//! privacy: no raw user id, email address or token in the database file, the API's answers or selfmon's own log;
//! erasing a user removes everything of theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::{ENGINES, Engine, PATIENCE, Selfmon, Workdir, free_port, serve_binary};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

async fn post_events(url: &str, key: Option<&str>, events: &[Value]) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{url}/v1/events")).json(&json!({ "events": events }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// One generated event, with what the test needs to know of it.
struct Generated {
    ts: i64,
    user: String,
    body: Value,
}

/// 60 users over 20 days: sessions of a few messages minutes apart, conversations (most completed), assessments
/// (half completed), ratings and AI calls on three models, one of them without a price. Seeded: the same stream
/// every run.
fn stream(now: i64) -> Vec<Generated> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut events = Vec::new();
    let models =
        [("openai", "gpt-4o-mini-2024-07-18"), ("anthropic", "claude-3-5-sonnet-20241022"), ("meta", "llama-3-70b")];
    for user in 0..60 {
        let user_id = format!("tg:{}", 100_000 + user);
        let first_day = rng.i64(0..20);
        for day in (0..=first_day).rev() {
            if day != first_day && rng.u8(0..3) == 0 {
                continue;
            }
            // A day's sessions start 7 to 21 hours into the day back and last at most about 5 hours, so no event is
            // near the 1-, 7- or 30-day boundaries (or in the future).
            let mut at = now - day * DAY_MS - rng.i64(7..=21) * HOUR_MS;
            for _ in 0..rng.usize(1..=2) {
                let mut push = |ts: i64, body: Value| events.push(Generated { ts, user: user_id.clone(), body });
                push(at, json!({"type": "conversation_started", "user_id": user_id}));
                for n in 0..rng.usize(1..=6) {
                    at += rng.i64(1..=5) * 60_000;
                    let action = if n == 0 && rng.bool() { "command_start" } else { "message_sent" };
                    push(
                        at,
                        json!({"type": "user_activity", "user_id": user_id, "action": action,
                                    "metadata": {"chat": "private"}}),
                    );
                    let (provider, model) = models[rng.usize(0..3)];
                    let (input, output) = (rng.u64(100..3000), rng.u64(50..800));
                    push(
                        at + 500,
                        json!({"type": "ai_usage", "user_id": user_id, "provider": provider, "model": model,
                                          "input_tokens": input, "output_tokens": output,
                                          "latency_ms": rng.u32(300..4000), "success": rng.u8(0..20) != 0}),
                    );
                }
                if rng.u8(0..4) != 0 {
                    at += 60_000;
                    push(at, json!({"type": "conversation_completed", "user_id": user_id}));
                    push(at + 1000, json!({"type": "satisfaction", "user_id": user_id, "rating": rng.u8(1..=5)}));
                }
                if rng.u8(0..5) == 0 {
                    push(at + 2000, json!({"type": "assessment_started", "user_id": user_id}));
                    if rng.bool() {
                        push(at + 120_000, json!({"type": "assessment_completed", "user_id": user_id}));
                    }
                }
                at += rng.i64(2..=4) * HOUR_MS;
            }
        }
    }
    for event in &mut events {
        event.body["timestamp"] = json!(event.ts as f64 / 1000.0);
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_agree_with_the_event_stream() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        analytics_agree_with_the_event_stream_on(engine).await;
    }
}

async fn analytics_agree_with_the_event_stream_on(engine: Engine) {
    let config = r#"
[ai]
default_prices = false
daily_budget = 1000.0
monthly_budget = 5000.0

[ai.prices]
"gpt-4o-mini" = { input = 0.15, output = 0.60 }
"claude-3-5-sonnet" = { input = 3.0, output = 15.0 }
"#;
    let workdir = Workdir::on(engine, config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let now = now_ms();
    let events = stream(now);
    for batch in events.chunks(500) {
        let bodies: Vec<Value> = batch.iter().map(|e| e.body.clone()).collect();
        let (status, answer) = post_events(&selfmon.url, None, &bodies).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!((answer["accepted"].as_u64(), &answer["rejected"]), (Some(batch.len() as u64), &json!([])));
    }
    let (status, analytics) = selfmon.get("/v1/analytics?days=30").await;
    assert_eq!(status, 200, "{analytics}");

    // Active users.
    let active_within = |days: i64| {
        events.iter().filter(|e| now - e.ts < days * DAY_MS).map(|e| e.user.as_str()).collect::<BTreeSet<_>>().len()
    };
    let users = &analytics["users"];
    assert_eq!(users["daily_active"], active_within(1), "{users}");
    assert_eq!(users["weekly_active"], active_within(7));
    assert_eq!(users["monthly_active"], 60);
    assert_eq!((users["active"].as_u64(), users["new"].as_u64()), (Some(60), Some(60)));
    let mut per_day: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for event in &events {
        per_day.entry(event.ts.div_euclid(DAY_MS)).or_default().insert(&event.user);
    }
    let by_day: Vec<u64> = users["by_day"].as_array().unwrap().iter().map(|d| d["count"].as_u64().unwrap()).collect();
    assert_eq!(by_day, per_day.values().map(|s| s.len() as u64).collect::<Vec<_>>());

    // Engagement: actions, and sessions split at 30 minutes without an event.
    let kind = |name: &str| events.iter().filter(|e| e.body["type"] == name).count() as u64;
    let engagement = &analytics["engagement"];
    assert_eq!(engagement["actions"], kind("user_activity"));
    let starts = events.iter().filter(|e| e.body["action"] == "command_start").count() as u64;
    let top: BTreeMap<&str, u64> = engagement["top_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, BTreeMap::from([("command_start", starts), ("message_sent", kind("user_activity") - starts)]));
    let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for event in &events {
        times.entry(&event.user).or_default().push(event.ts);
    }
    let mut durations = Vec::new();
    for list in times.values_mut() {
        list.sort_unstable();
        let mut first = list[0];
        for pair in list.windows(2) {
            if pair[1] - pair[0] > 30 * 60_000 {
                durations.push(pair[0] - first);
                first = pair[1];
            }
        }
        durations.push(list[list.len() - 1] - first);
    }
    assert_eq!(engagement["sessions"], durations.len());
    let mean = durations.iter().sum::<i64>() as f64 / durations.len() as f64 / 1000.0;
    assert!((engagement["mean_session_seconds"].as_f64().unwrap() - mean).abs() < 1e-6, "{engagement}");

    // Completion rates and satisfaction.
    let funnel = &analytics["conversations"];
    assert_eq!(
        (funnel["started"].as_u64(), funnel["completed"].as_u64()),
        (Some(kind("conversation_started")), Some(kind("conversation_completed")))
    );
    let rate = kind("conversation_completed") as f64 / kind("conversation_started") as f64;
    assert!((funnel["completion_rate"].as_f64().unwrap() - rate).abs() < 1e-12);
    assert_eq!(analytics["assessments"]["completed"], kind("assessment_completed"));
    let ratings: Vec<f64> = events.iter().filter_map(|e| e.body["rating"].as_f64()).collect();
    let satisfaction = &analytics["satisfaction"];
    assert_eq!(satisfaction["ratings"], ratings.len());
    let average = ratings.iter().sum::<f64>() / ratings.len() as f64;
    assert!((satisfaction["average"].as_f64().unwrap() - average).abs() < 1e-9);
    let fives = ratings.iter().filter(|r| **r == 5.0).count();
    assert_eq!(satisfaction["distribution"][4], fives);

    // Retention: each user in the cohort of the Monday of their first event (1970-01-01 was a Thursday).
    let monday = |ts: i64| {
        let day = ts.div_euclid(DAY_MS);
        day - (day + 3).rem_euclid(7)
    };
    let mut cohorts: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (user, list) in &times {
        cohorts.entry(monday(list[0])).or_default().push(user);
    }
    let retention = analytics["retention"].as_array().unwrap();
    assert_eq!(retention.len(), cohorts.len());
    for (cohort, (week, members)) in retention.iter().zip(&cohorts) {
        assert_eq!(cohort["users"], members.len());
        assert_eq!(cohort["retained"][0], 1.0, "everyone is active in their first week");
        if let Some(share) = cohort["retained"][1].as_f64() {
            let back = members.iter().filter(|u| times[**u].iter().any(|ts| monday(*ts) == week + 7)).count();
            assert!((share - back as f64 / members.len() as f64).abs() < 1e-12, "{cohort}");
        }
    }

    // AI cost from the configured prices; the model without a price costs nothing and is named.
    let price = |model: &str| match model {
        m if m.starts_with("gpt-4o-mini") => Some((0.15, 0.60)),
        m if m.starts_with("claude-3-5-sonnet") => Some((3.0, 15.0)),
        _ => None,
    };
    let mut cost_by_model: BTreeMap<String, f64> = BTreeMap::new();
    let mut cost_by_user: BTreeMap<&str, f64> = BTreeMap::new();
    for event in events.iter().filter(|e| e.body["type"] == "ai_usage") {
        let model = event.body["model"].as_str().unwrap();
        let (input, output) = price(model).unwrap_or((0.0, 0.0));
        let cost = (event.body["input_tokens"].as_f64().unwrap() * input
            + event.body["output_tokens"].as_f64().unwrap() * output)
            / 1e6;
        *cost_by_model.entry(model.to_string()).or_default() += cost;
        *cost_by_user.entry(&event.user).or_default() += cost;
    }
    let ai = &analytics["ai"];
    assert_eq!(ai["requests"], kind("ai_usage"));
    for model in ai["by_model"].as_array().unwrap() {
        let expected = cost_by_model[model["model"].as_str().unwrap()];
        assert!((model["cost"].as_f64().unwrap() - expected).abs() < 1e-9, "{model}");
    }
    assert_eq!(ai["unpriced_models"], json!(["llama-3-70b"]));
    let total: f64 = cost_by_model.values().sum();
    assert!((ai["cost"].as_f64().unwrap() - total).abs() < 1e-9);
    let top = cost_by_user.values().copied().fold(0.0, f64::max);
    assert!((ai["top_users"][0]["cost"].as_f64().unwrap() - top).abs() < 1e-9);
    let last_day: f64 = events
        .iter()
        .filter(|e| e.body["type"] == "ai_usage" && now - e.ts < DAY_MS)
        .map(|e| {
            let (input, output) = price(e.body["model"].as_str().unwrap()).unwrap_or((0.0, 0.0));
            (e.body["input_tokens"].as_f64().unwrap() * input + e.body["output_tokens"].as_f64().unwrap() * output)
                / 1e6
        })
        .sum();
    assert!((ai["budget"]["last_24_hours"].as_f64().unwrap() - last_day).abs() < 1e-9, "{}", ai["budget"]);
    assert_eq!(ai["budget"]["monthly_budget"], 5000.0);

    // The same through GraphQL.
    let answer =
        selfmon.graphql(None, "{ analytics(days: 30) { users { monthlyActive } ai { requests } } }", json!({})).await;
    assert_eq!(answer["data"]["analytics"]["users"]["monthlyActive"], 60, "{answer}");
    assert_eq!(answer["data"]["analytics"]["ai"]["requests"], kind("ai_usage"));

    // Bad events are refused one by one; a batch of nothing valid is a 400.
    let (status, answer) = post_events(
        &selfmon.url,
        None,
        &[
            json!({"type": "satisfaction", "rating": 9}),
            json!({"type": "user_activity", "action": "ok", "user_id": "x"}),
        ],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(answer["rejected"], json!([{"index": 0, "error": "`rating` must be between 1 and 5, not 9"}]));
    let (status, answer) = post_events(&selfmon.url, None, &[json!({"type": "nothing"})]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["details"][0].as_str().unwrap().starts_with("event 0: `type` `nothing`"), "{answer}");
    selfmon.stop().await;
}

/// The default rules read what the events produce: spend over `[ai] daily_budget` fires `high_ai_costs`, and low
/// ratings fire `user_satisfaction`.
#[tokio::test(flavor = "multi_thread")]
async fn crossing_the_daily_budget_and_low_ratings_fire_the_default_rules() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        crossing_the_daily_budget_and_low_ratings_fire_the_default_rules_on(engine).await;
    }
}

async fn crossing_the_daily_budget_and_low_ratings_fire_the_default_rules_on(engine: Engine) {
    let config = r#"
[alerting]
interval = "1s"
group_wait = "1s"

[ai]
daily_budget = 1.0
default_prices = false

[ai.prices]
"gpt-4o" = { input = 2.5, output = 10.0 }
"#;
    let workdir = Workdir::on(engine, config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    // 100k input and 35k output tokens: $0.25 + $0.35 = $0.60, under the budget.
    let call = json!({"type": "ai_usage", "provider": "openai", "model": "gpt-4o", "input_tokens": 100_000,
                      "output_tokens": 35_000, "user_id": "tg:1"});
    assert_eq!(post_events(&selfmon.url, None, std::slice::from_ref(&call)).await.0, 202);
    let firing = |rule: &'static str| {
        let selfmon = &selfmon;
        async move {
            let (_, alerts) = selfmon.get("/v1/alerts").await;
            alerts["active"].as_array().unwrap().iter().any(|a| a["rule"] == rule && a["state"] == "firing")
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!firing("high_ai_costs").await, "$0.60 is under the $1 budget");
    assert!(!firing("user_satisfaction").await);

    // Another $0.60 crosses it; ratings averaging 2 sink satisfaction.
    let ratings: Vec<Value> = [1, 2, 3].iter().map(|r| json!({"type": "satisfaction", "rating": r})).collect();
    assert_eq!(post_events(&selfmon.url, None, &[vec![call], ratings].concat()).await.0, 202);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !firing("high_ai_costs").await {
        assert!(tokio::time::Instant::now() < deadline, "high_ai_costs never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, alerts) = selfmon.get("/v1/alerts").await;
    let alert = alerts["active"].as_array().unwrap().iter().find(|a| a["rule"] == "high_ai_costs").unwrap().clone();
    assert!(alert["summary"].as_str().unwrap().contains("is 1.2"), "{alert}");
    // `user_satisfaction` holds for 30 minutes before it fires; it is pending already.
    let (_, states) = selfmon.get("/v1/alerts").await;
    assert!(
        states["active"].as_array().unwrap().iter().any(|a| a["rule"] == "user_satisfaction"),
        "a low average is seen by the rule: {states}"
    );
    let (_, metrics) = selfmon.get("/v1/metrics?name=ai_cost_dollars_total").await;
    assert_eq!(metrics["series"][0]["labels"], json!({"model": "gpt-4o", "provider": "openai"}), "{metrics}");
    selfmon.stop().await;
}

/// Raw user ids, emails and tokens sent in events, spans and logs never reach the database file, the API or
/// selfmon's own log; erasing a user removes all of theirs and says how much, with an audit record.
#[tokio::test(flavor = "multi_thread")]
async fn personal_data_never_reaches_the_store_and_erasure_removes_a_user() {
    let port = free_port();
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[[api.keys]]\nname = \"ops\"\nkey = \"admin-key-123456\"\nrole = \"admin\"\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let (mut child, url) = serve_binary(&workdir, port, "debug", Stdio::piped()).await;
    let client = reqwest::Client::new();
    let key = Some("admin-key-123456");

    let secrets = [
        "tg:31337001",
        "tg:31337002",
        "anna.k@example.com",
        "+7 912 345-67-89",
        "sk-proj-AbCdEf0123456789xyzXYZ",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
        "4111 1111 1111 1111",
        "tg:31337003",
        "dXNlcjpwYXNz",
        "hunter22",
    ];
    let events = [
        json!({"type": "user_activity", "user_id": "tg:31337001", "action": "message_sent",
               "metadata": {"text": "write to anna.k@example.com or +7 912 345-67-89"}}),
        json!({"type": "ai_usage", "user_id": "tg:31337001", "provider": "openai", "model": "gpt-4o",
               "input_tokens": 10, "output_tokens": 5, "metadata": {"key": "sk-proj-AbCdEf0123456789xyzXYZ"}}),
        json!({"type": "satisfaction", "user_id": "tg:31337002", "rating": 5}),
    ];
    assert_eq!(post_events(&url, key, &events).await.0, 202);
    let logs = json!([
        {"level": "error", "msg": "card 4111 1111 1111 1111 declined", "user_id": "tg:31337001"},
        {"level": "info", "msg": "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 started", "user_id": "tg:31337002"}
    ]);
    let response =
        client.post(format!("{url}/v1/logs")).bearer_auth("admin-key-123456").json(&logs).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    // A minute ago: well inside `[retention] spans`, which the first cleanup applies.
    let start = (now_ms() - 60_000) * 1_000_000;
    let trace = json!({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "bot"}},
            {"key": "enduser.id", "value": {"stringValue": "tg:31337003"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "reply", "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 500_000_000).to_string(),
            "attributes": [{"key": "enduser.id", "value": {"stringValue": "tg:31337001"}},
                           {"key": "http.url", "value": {"stringValue": "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0/sendMessage"}},
                           {"key": "email", "value": {"stringValue": "anna.k@example.com"}},
                           {"key": "http.request.header.authorization", "value": {"stringValue": "Basic dXNlcjpwYXNz"}}],
            "events": [{"timeUnixNano": (start + 100_000_000).to_string(), "name": "login",
                        "attributes": [{"key": "user_id", "value": {"stringValue": "tg:31337002"}},
                                       {"key": "password", "value": {"stringValue": "hunter22"}}]}]}]}]}]});
    let response = client
        .post(format!("{url}/v1/traces"))
        .bearer_auth("admin-key-123456")
        .header("content-type", "application/json")
        .body(trace.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A log line of that request, with its trace id but no user: it is the user's too.
    let log = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "reply sent"},
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}]});
    let response = client
        .post(format!("{url}/v1/logs"))
        .bearer_auth("admin-key-123456")
        .header("content-type", "application/json")
        .body(log.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Every answer the API gives about them.
    let mut answers = String::new();
    for path in [
        "/v1/analytics?days=1",
        "/v1/logs?limit=100",
        "/v1/logs?user_id=tg:31337001",
        "/v1/traces/5b8efff798038103d269b633813fc60c",
        "/v1/traces?user_id=tg:31337001",
        "/metrics",
    ] {
        let response = client.get(format!("{url}{path}")).bearer_auth("admin-key-123456").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        answers.push_str(&response.text().await.unwrap());
    }
    let (_, found) =
        crate::support::get_json_with_key(&format!("{url}/v1/logs?user_id=tg:31337001"), "admin-key-123456").await;
    let messages: Vec<&str> =
        found["records"].as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(
        messages,
        ["reply sent", "card [redacted:card] declined"],
        "found by the raw id, the log line of their trace included: {found}"
    );

    let erase =
        client.delete(format!("{url}/v1/users/tg:31337001/data")).bearer_auth("admin-key-123456").send().await.unwrap();
    assert_eq!(erase.status().as_u16(), 200);
    let erased: Value = erase.json().await.unwrap();
    assert_eq!(erased, json!({"events": 2, "spans": 1, "log_records": 2}));
    let again =
        client.delete(format!("{url}/v1/users/tg:31337001/data")).bearer_auth("admin-key-123456").send().await.unwrap();
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"events": 0, "spans": 0, "log_records": 0}));
    // The AUDIT records of selfmon's own log, stored as it reads its log back.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, audit) =
            crate::support::get_json_with_key(&format!("{url}/v1/logs?level=audit"), "admin-key-123456").await;
        let messages: Vec<&str> =
            audit["records"].as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap()).collect();
        if messages.len() == 2 {
            assert_eq!(
                messages,
                [
                    "Erased the data of a user on request of ops: 0 events, 0 spans, 0 log records",
                    "Erased the data of a user on request of ops: 2 events, 1 spans, 2 log records",
                ],
                "newest first"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    crate::support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(output.0.success(), "{}", output.1);
    let mut own_log = output.1;
    for kind in ["application/selfmon.log", "errors/errors.log", "performance/performance.log", "security/security.log"]
    {
        own_log.push_str(&std::fs::read_to_string(workdir.path().join("logs").join(kind)).unwrap());
    }

    // The database file, its write-ahead log, the API's answers and selfmon's own log, byte by byte.
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(workdir.path().join(format!("selfmon.db{suffix}"))) {
            stored.extend(bytes);
        }
    }
    assert!(stored.len() > 4096);
    for secret in secrets {
        let found = stored.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "`{secret}` is in the database file");
        assert!(!answers.contains(secret), "`{secret}` is in an API answer");
        assert!(!own_log.contains(secret), "`{secret}` is in selfmon's log");
    }
    // What is left of the other user, under their pseudonym only.
    let db = workdir.db();
    let users: Vec<String> = db
        .prepare(
            "SELECT DISTINCT user_id FROM events UNION SELECT DISTINCT user_id FROM logs WHERE user_id IS NOT NULL",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].starts_with("u_"), "{users:?}");
}
