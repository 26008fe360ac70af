//! The API's read side over real HTTP: stored metrics by name, labels and time (raw and downsampled, paged), and
//! selfmon's own status; bad parameters get a clear 400, never a 5xx.

use crate::support::{ENGINES, Engine, Selfmon, Target, Workdir};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_by_name_labels_and_time_and_status_describes_selfmon() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        metrics_are_served_by_name_labels_and_time_and_status_describes_selfmon_on(engine).await;
    }
}

async fn metrics_are_served_by_name_labels_and_time_and_status_describes_selfmon_on(engine: Engine) {
    let target = Target::start().await;
    let config = format!(
        "[system]\nenabled = true\ninterval = \"1s\"\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n\n\
         [[check]]\nname = \"other\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n",
        ok = target.url("/ok")
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (_, body) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web").await;
        if body["series"][0]["points"].as_array().is_some_and(|p| p.len() >= 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no samples were served: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let (status, names) = selfmon.get("/v1/metrics").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = names["metrics"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    for expected in ["check_duration_seconds", "check_status", "response_time_seconds", "system_memory_used_ratio"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    let (_, web) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web").await;
    assert_eq!(web["total"], 1);
    let series = &web["series"][0];
    assert_eq!(series["labels"], serde_json::json!({"check": "web", "plugin": "http"}));
    let points = series["points"].as_array().unwrap();
    let times: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "points in time order: {times:?}");
    assert!(points.iter().all(|p| p[1].as_f64().unwrap() > 0.0));

    // Both checks without a label filter, a page at a time.
    let (_, all) = selfmon.get("/v1/metrics?name=response_time_seconds&limit=1").await;
    assert_eq!((all["total"].as_u64(), all["series"].as_array().unwrap().len()), (Some(2), 1));
    let (_, second) = selfmon.get("/v1/metrics?name=response_time_seconds&limit=1&offset=1").await;
    assert_ne!(all["series"][0]["labels"], second["series"][0]["labels"]);

    // One bucket per hour: everything so far averages into at most two points.
    let (_, hourly) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web&step=1h").await;
    assert!(hourly["series"][0]["points"].as_array().unwrap().len() <= 2, "{hourly}");
    assert_eq!(hourly["step_seconds"], 3600.0);

    // A range that ends before anything was measured.
    let (_, past) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web&from=0&to=60").await;
    assert_eq!(past["series"][0]["points"], serde_json::json!([]));
    let (_, none) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=nope").await;
    assert_eq!(none["total"], 0);

    for (query, message) in [
        ("name=x&step=often", "`step`"),
        ("name=x&from=yesterday", "neither RFC 3339 nor Unix seconds"),
        ("name=x&from=100&to=50", "`from` is after `to`"),
        ("name=x&labels=check", "is not name=value"),
        ("name=x&step=0", "`step` must be at least 1s"),
        ("colour=red", "unknown field"),
        ("name=x&from=1e5", "neither RFC 3339 nor Unix seconds"),
        ("name=x&to=2026-11-26T10:00:00+02:00", "neither RFC 3339 nor Unix seconds"),
        ("limit=1001", "`limit` must be 1 to 1000, not 1001"),
        ("limit=0", "`limit` must be 1 to 1000, not 0"),
        ("offset=-1", "`offset` must not be negative"),
    ] {
        let (status, body) = selfmon.get(&format!("/v1/metrics?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query");
        assert!(body["error"]["message"].as_str().unwrap().contains(message), "{query}: {body}");
    }
    // Every paged list refuses a page size out of range rather than quietly changing it, and so do the others.
    for path in [
        "/v1/logs?limit=5000",
        "/v1/alerts?limit=1001",
        "/v1/health?offset=-3",
        "/v1/recovery?limit=0",
        "/v1/traces?limit=201",
        "/v1/traces?min_duration_ms=-1",
        "/v1/health/web/history?limit=1001",
    ] {
        let (status, body) = selfmon.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{path}: {body}");
    }
    // Bodies the document gives as objects are objects: serde would read these arrays as the fields in order.
    for (path, array) in [
        ("/v1/silences", r#"[{"check": "web"}, null, null, "2099-01-01T00:00:00Z", "maintenance"]"#),
        ("/v1/alerts/1/acknowledge", r#"["seen"]"#),
        ("/v1/traces", "[]"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", selfmon.url))
            .header("content-type", "application/json")
            .body(array)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}: {}", response.text().await.unwrap());
    }

    let (status, about) = selfmon.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(about["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(about["contract"], "0.1.0");
    let plugins: Vec<&str> = about["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(plugins.contains(&"http") && plugins.contains(&"postgres"), "{plugins:?}");
    assert_eq!(about["checks"]["configured"], 2);
    assert_eq!(about["checks"]["by_status"]["healthy"], 2);
    assert!(about["storage"]["runs_stored"].as_i64().unwrap() >= 2);
    assert!(about["storage"]["bytes_on_disk"].as_u64().unwrap() > 0);
    assert!(about["uptime_seconds"].as_f64().unwrap() > 0.0);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_roles_cors_and_body_limits_guard_the_api() {
    let config = r#"
[api]
rate_limit = 0
cors_origins = ["https://grafana.example.com"]
max_body = "1 KiB"
keys = [
    { name = "grafana", key = "read-key-0123456789", role = "read" },
    { name = "ops", key = "file:ops.key", role = "admin" },
]
"#;
    let workdir = Workdir::new(config, &[]);
    std::fs::write(workdir.path().join("ops.key"), "admin-key-9876543210\n").unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", selfmon.url);
    let call = |method: reqwest::Method, path: &str, key: Option<&str>| {
        let mut request = client.request(method, url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request
    };
    let code = |body: &serde_json::Value| body["error"]["code"].as_str().unwrap_or_default().to_string();

    assert_eq!(
        call(reqwest::Method::GET, "/health", None).send().await.unwrap().status(),
        200,
        "liveness needs no key"
    );
    let missing = call(reqwest::Method::GET, "/v1/health", None).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(code(&missing.json().await.unwrap()), "missing_key");
    let wrong = call(reqwest::Method::GET, "/v1/health", Some("read-key-0123456780")).send().await.unwrap();
    assert_eq!((wrong.status().as_u16(), code(&wrong.json().await.unwrap())), (401, "invalid_key".to_string()));
    assert_eq!(
        call(reqwest::Method::GET, "/v1/health", Some("read-key-0123456789")).send().await.unwrap().status(),
        200
    );
    let read_only = call(reqwest::Method::POST, "/v1/health", Some("read-key-0123456789")).send().await.unwrap();
    assert_eq!((read_only.status().as_u16(), code(&read_only.json().await.unwrap())), (403, "forbidden".to_string()));
    let admin = call(reqwest::Method::POST, "/v1/health", Some("admin-key-9876543210")).send().await.unwrap();
    assert_eq!(admin.status(), 405, "the admin key passes; the route takes no POST");
    let oversized = call(reqwest::Method::POST, "/v1/health", Some("admin-key-9876543210"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(
        (oversized.status().as_u16(), code(&oversized.json().await.unwrap())),
        (413, "body_too_large".to_string())
    );

    let preflight = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, url("/v1/health"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://grafana.example.com").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://grafana.example.com");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{:?}", other.headers());

    let status: serde_json::Value = call(reqwest::Method::GET, "/v1/status", Some("read-key-0123456789"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["api"]["open"], false);
    assert_eq!(status["api"]["refused_calls"], 3, "missing, wrong, and too weak: {status}");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_over_their_rate_get_429_with_retry_after() {
    let config = "[api]\nrate_limit = 3\nkeys = [{ name = \"tool\", key = \"tool-key-0123456789\" }]\n";
    let workdir = Workdir::new(config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response =
            client.get(format!("{}/v1/health", selfmon.url)).bearer_auth("tool-key-0123456789").send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Guessing keys is limited per address, like calling without one: wrong keys (each different), a malformed
    // header. The liveness route still answers that address: a load balancer in front of many callers, or a
    // service manager, must not see selfmon as down because others used up the rate.
    let mut guesses = Vec::new();
    for guess in 0..3 {
        let response = client
            .get(format!("{}/v1/health", selfmon.url))
            .bearer_auth(format!("guess-{guess}"))
            .send()
            .await
            .unwrap();
        guesses.push(response.status().as_u16());
    }
    let malformed =
        client.get(format!("{}/v1/health", selfmon.url)).header("authorization", "Basic Zm9vOmJhcg==").send().await;
    guesses.push(malformed.unwrap().status().as_u16());
    assert_eq!(guesses, [401, 401, 401, 429], "three a minute, /health polls not counted");
    for _ in 0..10 {
        assert_eq!(client.get(format!("{}/health", selfmon.url)).send().await.unwrap().status(), 200);
    }
    // The scheme is case-insensitive; the key's own quota is separate from its address's.
    let lower = client.get(format!("{}/v1/status", selfmon.url)).header("authorization", "bearer tool-key-0123456789");
    assert_eq!(lower.send().await.unwrap().status(), 429, "the key itself is still over its rate");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_are_validated_stored_paged_and_deleted_and_alerts_acknowledged() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        alert_rules_are_validated_stored_paged_and_deleted_and_alerts_acknowledged_on(engine).await;
    }
}

async fn alert_rules_are_validated_stored_paged_and_deleted_and_alerts_acknowledged_on(engine: Engine) {
    let target = Target::start().await;
    let config = format!(
        r#"
[api]
rate_limit = 0
keys = [
    {{ name = "grafana", key = "read-key-0123456789", role = "read" }},
    {{ name = "ops", key = "admin-key-9876543210", role = "admin" }},
]

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "{}"

# Channels of the two kinds the original platform's example names.
[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/"

[[channel]]
name = "mail"
kind = "email"
smtp = "127.0.0.1:2525"
security = "none"
from = "selfmon@example.com"
to = ["ops@example.com"]
"#,
        target.url("/ok")
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some("read-key-0123456789".into());
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", selfmon.url);
    let (read, admin) = ("read-key-0123456789", "admin-key-9876543210");
    let post =
        |path: &str, key: &str, body: serde_json::Value| client.post(url(path)).bearer_auth(key).json(&body).send();

    // The original platform's own example.
    let example = serde_json::json!({
        "name": "high_user_errors", "condition": "user_error_rate > 5", "threshold": 5.0,
        "severity": "high", "notification_channels": ["webhook", "email"]
    });
    let created = post("/v1/alerts/rules", admin, example.clone()).await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/alerts/rules/high_user_errors");
    let rule: serde_json::Value = created.json().await.unwrap();
    assert_eq!(rule["condition"], "user_error_rate > 5");
    assert_eq!(rule["notification_channels"], serde_json::json!(["webhook", "email"]));
    assert_eq!(rule["created_by"], "ops");

    let twice = post("/v1/alerts/rules", admin, example.clone()).await.unwrap();
    assert_eq!(twice.status(), 409);
    assert_eq!(post("/v1/alerts/rules", read, example).await.unwrap().status(), 403);

    let invalid = post(
        "/v1/alerts/rules",
        admin,
        serde_json::json!({"name": "x", "condition": "rate(errors_total) > 1", "severity": "loud", "notification_channels": ["pager"]}),
    )
    .await
    .unwrap();
    assert_eq!(invalid.status(), 400);
    let invalid: serde_json::Value = invalid.json().await.unwrap();
    assert_eq!(invalid["error"]["code"], "invalid");
    let details: Vec<&str> =
        invalid["error"]["details"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(details.len(), 3, "{details:?}");
    assert_eq!(details[0], "`condition` at column 6: `rate` needs a range, such as `errors_total[5m]`");
    let unknown_field = post(
        "/v1/alerts/rules",
        admin,
        serde_json::json!({"name": "x", "condition": "a > 1", "severity": "low", "colour": "red"}),
    )
    .await
    .unwrap();
    assert_eq!(unknown_field.status(), 400);
    let unknown_field: serde_json::Value = unknown_field.json().await.unwrap();
    assert_eq!(unknown_field["error"]["code"], "invalid");
    assert!(unknown_field["error"]["message"].as_str().unwrap().contains("unknown field `colour`"), "{unknown_field}");
    let garbage = client
        .post(url("/v1/alerts/rules"))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert_eq!(garbage.json::<serde_json::Value>().await.unwrap()["error"]["code"], "bad_json");
    let not_json = client.post(url("/v1/alerts/rules")).bearer_auth(admin).body("name=x").send().await.unwrap();
    assert_eq!(not_json.status(), 415);

    for name in ["b-rule", "c-rule"] {
        let body = serde_json::json!({"name": name, "condition": "last(system_memory_used_ratio) > 0.9", "severity": "critical"});
        assert_eq!(post("/v1/alerts/rules", admin, body).await.unwrap().status(), 201);
    }
    let (_, page) = crate::support::get_json_with_key(&url("/v1/alerts/rules?limit=2"), read).await;
    assert_eq!((page["total"].as_u64(), page["items"].as_array().unwrap().len()), (Some(3), 2));
    assert_eq!(page["items"][0]["name"], "b-rule");
    let (_, rest) = crate::support::get_json_with_key(&url("/v1/alerts/rules?limit=2&offset=2"), read).await;
    assert_eq!(rest["items"][0]["name"], "high_user_errors");
    let (status, _) = crate::support::get_json_with_key(&url("/v1/alerts/rules?limit=many"), read).await;
    assert_eq!(status, 400);

    let delete = || client.delete(url("/v1/alerts/rules/b-rule")).bearer_auth(admin).send();
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(delete().await.unwrap().status(), 404);
    let (status, _) = crate::support::get_json_with_key(&url("/v1/alerts/rules/b-rule"), read).await;
    assert_eq!(status, 404);

    // Alerts as the alerting engine stores them: one firing, one resolved.
    workdir.execute_sql(
            "INSERT INTO alerts (id, fingerprint, rule, severity, state, summary, labels, started_at, resolved_at)
             VALUES (1, 'f1', 'high_user_errors', 'high', 'firing', 'user_error_rate is 7', '{\"service\":\"bot\"}', 1795730000000, NULL),
                    (2, 'f2', 'c-rule', 'critical', 'resolved', 'memory at 95%', '{}', 1795720000000, 1795721000000);",
        );
    let (_, alerts) = crate::support::get_json_with_key(&url("/v1/alerts"), read).await;
    assert_eq!(alerts["active"][0]["labels"]["service"], "bot", "{alerts}");
    assert_eq!(alerts["history"]["total"], 1);
    assert_eq!(alerts["history"]["items"][0]["resolved_at"], "2026-11-26T19:23:20.000Z");
    let ack = post("/v1/alerts/1/acknowledge", admin, serde_json::json!({"comment": "looking into it"})).await.unwrap();
    assert_eq!(ack.status(), 200);
    let ack: serde_json::Value = ack.json().await.unwrap();
    assert_eq!((ack["acknowledged_by"].as_str(), ack["ack_comment"].as_str()), (Some("ops"), Some("looking into it")));
    assert_eq!(post("/v1/alerts/2/acknowledge", admin, serde_json::json!({})).await.unwrap().status(), 404);
    let bad_id = post("/v1/alerts/first/acknowledge", admin, serde_json::json!({})).await.unwrap();
    assert_eq!(bad_id.status(), 400);

    // A check's history (a run is committed within the writer's grouping window after it is reported).
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let history = loop {
        let (status, history) = crate::support::get_json_with_key(&url("/v1/health/web/history?limit=1"), read).await;
        assert_eq!(status, 200);
        if !history["runs"].as_array().unwrap().is_empty() {
            break history;
        }
        assert!(tokio::time::Instant::now() < deadline, "no run stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(history["runs"].as_array().unwrap().len(), 1);
    assert_eq!(history["runs"][0]["status"], "healthy");
    let (status, _) = crate::support::get_json_with_key(&url("/v1/health/nope/history"), read).await;
    assert_eq!(status, 404);

    // Rules are stored: a restart keeps them.
    selfmon.stop().await;
    let selfmon = Selfmon::start(&workdir).await;
    let (_, after) = crate::support::get_json_with_key(&format!("{}/v1/alerts/rules", selfmon.url), read).await;
    let names: Vec<&str> = after["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c-rule", "high_user_errors"]);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn performance_and_errors_summarise_the_stored_runs() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        performance_and_errors_summarise_the_stored_runs_on(engine).await;
    }
}

async fn performance_and_errors_summarise_the_stored_runs_on(engine: Engine) {
    let target = Target::start().await;
    let config = format!(
        "[[check]]\nname = \"slow\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n\n\
         [[check]]\nname = \"broken\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n",
        target.url("/slow/150"),
        target.url("/ok"),
        target.url("/status/503"),
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let performance = loop {
        let (status, body) = selfmon.get("/v1/performance?time_window=600").await;
        assert_eq!(status, 200, "{body}");
        let counts: Vec<u64> =
            body["checks"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).collect();
        if counts.len() == 3 && counts.iter().all(|&c| c >= 3) {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "not enough runs: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let check =
        |name: &str| performance["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).unwrap().clone();
    let (slow, web, broken) = (check("slow"), check("web"), check("broken"));
    let ms = |c: &serde_json::Value, field: &str| c[field].as_f64().unwrap();
    assert!(ms(&slow, "p50_ms") >= 150.0, "{slow}");
    assert!(ms(&web, "p50_ms") < ms(&slow, "p50_ms"), "{web}");
    assert!(ms(&slow, "p50_ms") <= ms(&slow, "p95_ms") && ms(&slow, "p95_ms") <= ms(&slow, "p99_ms"));
    assert!(ms(&slow, "p99_ms") <= ms(&slow, "max_ms"));
    assert_eq!((ms(&web, "error_rate"), ms(&broken, "error_rate")), (0.0, 1.0));
    assert_eq!(ms(&broken, "throughput_per_minute"), broken["count"].as_f64().unwrap() / 10.0);
    assert_eq!(performance["slowest"][0]["check"], "slow");
    assert_eq!(performance["time_window_seconds"], 600.0);

    let (status, errors) = selfmon.get("/v1/errors?time_window=600").await;
    assert_eq!(status, 200);
    assert!(errors["errors"].as_u64().unwrap() >= 3);
    assert_eq!(errors["by_check"][0]["check"], "broken");
    assert_eq!(errors["by_check"].as_array().unwrap().len(), 1, "only failing checks are listed: {errors}");
    let top = &errors["top_patterns"][0];
    assert_eq!(top["count"], errors["by_check"][0]["errors"], "every failure of `broken` is one pattern: {errors}");
    assert!(top["pattern"].as_str().unwrap().contains("503"), "{top}");
    assert_eq!(top["checks"], serde_json::json!(["broken"]));
    assert!(top["first_seen"].as_str().unwrap() < top["last_seen"].as_str().unwrap());

    // The GraphQL twin answers the same.
    let graphql = selfmon
        .graphql(
            None,
            "{ errors(timeWindow: 600) { byCheck { check } } performance(timeWindow: 600) { slowest { check } } }",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(graphql["data"]["errors"]["byCheck"][0]["check"], "broken", "{graphql}");
    assert_eq!(graphql["data"]["performance"]["slowest"][0]["check"], "slow");

    for query in ["time_window=0", "time_window=abc", "time_window=99999999", "window=60"] {
        let (status, body) = selfmon.get(&format!("/v1/performance?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_a_clear_json_4xx_never_a_5xx() {
    let workdir = Workdir::new("[api]\nrate_limit = 0\nmax_body = \"4 KiB\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let many = (0..2000).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&");
    let long = "x".repeat(8000);
    let cases: Vec<(reqwest::Method, String, Option<String>)> = vec![
        (reqwest::Method::GET, "/v1/health?service=%FF%FE".into(), None),
        (reqwest::Method::GET, "/v1/metrics?limit=-1".into(), None),
        (reqwest::Method::GET, "/v1/metrics?name=x&from=1e300".into(), None),
        (reqwest::Method::GET, "/v1/metrics?name=x&to=NaN".into(), None),
        (reqwest::Method::GET, "/v1/metrics?name=x&step=0".into(), None),
        (reqwest::Method::GET, format!("/v1/metrics?{many}"), None),
        (reqwest::Method::GET, format!("/v1/alerts/rules/{long}"), None),
        (reqwest::Method::GET, "/v1/health/..%2F..%2Fetc%2Fpasswd/history".into(), None),
        (reqwest::Method::GET, "/v1/webhooks/99999999999999999999999/deliveries".into(), None),
        (reqwest::Method::GET, "/v1/performance?time_window=-5".into(), None),
        (reqwest::Method::PATCH, "/v1/health".into(), None),
        (reqwest::Method::GET, "/graphql".into(), None),
        (reqwest::Method::POST, "/graphql".into(), Some("{\"query\": ".into())),
        (reqwest::Method::POST, "/v1/alerts/rules".into(), Some(deep)),
        (reqwest::Method::POST, "/v1/alerts/rules".into(), Some("null".into())),
        (reqwest::Method::POST, "/v1/webhooks".into(), Some(format!("{{\"url\": \"{}\"}}", "y".repeat(10_000)))),
        (reqwest::Method::POST, "/v1/alerts/1/acknowledge".into(), Some("{\"comment\": 5}".into())),
    ];
    for (method, path, body) in cases {
        let mut request = client.request(method.clone(), format!("{}{path}", selfmon.url));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let shown = &path[..path.len().min(80)];
        assert!(status.is_client_error(), "{method} {shown}: {status} {text}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {shown}: not JSON: {text}"));
        assert!(body["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{method} {shown}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {shown}: {body}");
    }
    // Still serving.
    assert_eq!(selfmon.get("/v1/status").await.0, 200);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silences_are_validated_listed_and_expired_and_config_rule_names_are_taken() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        silences_are_validated_listed_and_expired_and_config_rule_names_are_taken_on(engine).await;
    }
}

async fn silences_are_validated_listed_and_expired_and_config_rule_names_are_taken_on(engine: Engine) {
    let config = r#"
[api]
rate_limit = 0
keys = [
    { name = "grafana", key = "read-key-0123456789", role = "read" },
    { name = "ops", key = "admin-key-9876543210", role = "admin" },
]
"#;
    let workdir = Workdir::on(engine, config, &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some("read-key-0123456789".into());
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", selfmon.url);
    let (read, admin) = ("read-key-0123456789", "admin-key-9876543210");
    let post =
        |path: &str, key: &str, body: serde_json::Value| client.post(url(path)).bearer_auth(key).json(&body).send();

    let invalid = post("/v1/silences", admin, serde_json::json!({"matchers": {}, "duration": "soon"})).await.unwrap();
    assert_eq!(invalid.status(), 400);
    let invalid: serde_json::Value = invalid.json().await.unwrap();
    let details: Vec<&str> =
        invalid["error"]["details"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(
        details,
        [
            "`matchers` is empty: a silence of everything is not allowed",
            "`comment` is required: say why",
            "`duration`: `soon` is not a duration such as `2h` or `30m`"
        ]
    );

    let body = serde_json::json!({"matchers": {"check": "db"}, "duration": "2h", "comment": "migrating"});
    assert_eq!(post("/v1/silences", read, body.clone()).await.unwrap().status(), 403);
    let created = post("/v1/silences", admin, body).await.unwrap();
    assert_eq!(created.status(), 201);
    let silence: serde_json::Value = created.json().await.unwrap();
    assert_eq!((silence["state"].as_str(), silence["created_by"].as_str()), (Some("active"), Some("ops")));
    let starts = humantime::parse_rfc3339(silence["starts_at"].as_str().unwrap()).unwrap();
    let ends = humantime::parse_rfc3339(silence["ends_at"].as_str().unwrap()).unwrap();
    assert_eq!(ends.duration_since(starts).unwrap(), std::time::Duration::from_secs(7200));

    let (_, listed) = selfmon.get("/v1/silences").await;
    assert_eq!((listed["total"].as_u64(), listed["items"][0]["matchers"]["check"].as_str()), (Some(1), Some("db")));
    let id = silence["id"].as_i64().unwrap();
    let expire = || client.delete(url(&format!("/v1/silences/{id}"))).bearer_auth(admin).send();
    let expired: serde_json::Value = expire().await.unwrap().json().await.unwrap();
    assert_eq!(expired["state"], "expired");
    assert_eq!(expire().await.unwrap().status(), 404, "an expired silence cannot end again");

    let (status, one) = selfmon.get(&format!("/v1/silences/{id}")).await;
    assert_eq!((status.as_u16(), one["state"].as_str()), (200, Some("expired")));
    let later = serde_json::json!({"matchers": {"check": "db"}, "starts_at": "2030-01-01T00:00:00Z", "duration": "1h", "comment": "planned"});
    let later: serde_json::Value = post("/v1/silences", admin, later).await.unwrap().json().await.unwrap();
    assert_eq!(later["state"], "pending");
    let ended = client.delete(url(&format!("/v1/silences/{}", later["id"]))).bearer_auth(admin).send().await.unwrap();
    assert_eq!(
        ended.json::<serde_json::Value>().await.unwrap()["state"],
        "expired",
        "a planned silence can be called off"
    );

    let taken = serde_json::json!({"name": "service_down", "condition": "x > 1", "severity": "low"});
    let taken = post("/v1/alerts/rules", admin, taken).await.unwrap();
    assert_eq!(taken.status(), 409, "a default rule has that name");
    let delete = client.delete(url("/v1/alerts/rules/service_down")).bearer_auth(admin).send().await.unwrap();
    assert_eq!(delete.status(), 409);
    let (status, answer) = selfmon.get("/v1/alerts/rules/service_down").await;
    assert_eq!(status, 404);
    assert!(answer["error"]["message"].as_str().unwrap().contains("a rule of the config"), "{answer}");

    let via_graphql = selfmon
        .graphql(
            Some(admin),
            "mutation { createSilence(silence: {matchers: {alertname: \"slow_responses\"}, duration: \"30m\", comment: \"deploy\"}) { id state matchers } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(via_graphql["data"]["createSilence"]["state"], "active", "{via_graphql}");
    let query = "{ ruleStates { name origin plugin state condition } }";
    let states = selfmon.graphql(Some(read), query, serde_json::json!({})).await;
    let states = states["data"]["ruleStates"].as_array().unwrap();
    assert_eq!(states.len(), 9);
    assert!(states.iter().any(|s| s["name"] == "service_down" && s["plugin"] == "health" && s["origin"] == "default"));
    let memory = states.iter().find(|s| s["name"] == "memory_usage").unwrap();
    assert_eq!(memory["condition"], "last(system_memory_used_ratio) > 0.9");

    // Acknowledgement and history through GraphQL, as through REST.
    workdir.execute_sql(
        r#"INSERT INTO alerts (fingerprint, rule, name, severity, state, summary, labels, started_at)
               VALUES ('g1', 'service_down', 'service_down', 'critical', 'firing', 'db is unhealthy', '{"check":"db"}',
                       1795730000000);"#,
    );
    let (_, listed) = selfmon.get("/v1/alerts").await;
    let id = listed["active"][0]["id"].as_i64().unwrap();
    let ack = format!(
        r#"mutation {{ acknowledgeAlert(id: {id}, comment: "restarting db") {{ acknowledgedBy ackComment state }} }}"#
    );
    let refused = selfmon.graphql(Some(read), &ack, serde_json::json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "forbidden", "{refused}");
    let acked = selfmon.graphql(Some(admin), &ack, serde_json::json!({})).await;
    assert_eq!(
        acked["data"]["acknowledgeAlert"],
        serde_json::json!({"acknowledgedBy": "ops", "ackComment": "restarting db", "state": "firing"}),
        "{acked}"
    );
    let query = "{ alerts(active: true) { items { rule labels acknowledgedBy } } }";
    let active = selfmon.graphql(Some(read), query, serde_json::json!({})).await;
    assert_eq!(active["data"]["alerts"]["items"][0]["acknowledgedBy"], "ops", "{active}");
    assert_eq!(active["data"]["alerts"]["items"][0]["labels"]["check"], "db");
    selfmon.stop().await;
}
