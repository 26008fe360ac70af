//! The API's read side over real HTTP: stored metrics by name, labels and time (raw and downsampled, paged), and
//! selfmon's own status; bad parameters get a clear 400, never a 5xx.

use crate::support::{Selfmon, Target, Workdir};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_by_name_labels_and_time_and_status_describes_selfmon() {
    let target = Target::start().await;
    let config = format!(
        "[system]\nenabled = true\ninterval = \"1s\"\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n\n\
         [[check]]\nname = \"other\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n",
        ok = target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
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
    ] {
        let (status, body) = selfmon.get(&format!("/v1/metrics?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query");
        assert!(body["error"]["message"].as_str().unwrap().contains(message), "{query}: {body}");
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
    selfmon.stop().await;
}
