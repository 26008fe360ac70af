//! `GET /v1/openapi.json` is generated from the handlers, so it cannot list a route that does not exist; this holds
//! the other direction: the answers of every documented GET, errors included, validate against the schemas the
//! document gives for them (made strict: an answer with a field the document does not declare fails). And
//! schemathesis, from PyPI, calls every operation with generated requests, valid and not, and finds no server error,
//! no answer the document does not describe (status, content type, headers, body, the live tail's events), no
//! request the document forbids that is taken (a value out of range, a missing field, an array for an object, no
//! key) and, where JSON Schema can say it all, none it allows that is refused.

use serde_json::{Value, json};

use crate::support::{CLIENT_PYTHON, Selfmon, Target, Workdir};

/// The key schemathesis calls with: without it, every call must be refused.
const ADMIN_KEY: &str = "contract-admin-key-0123456789";

/// Every object schema without `additionalProperties` gets `unevaluatedProperties: false`, which for a composition
/// (`allOf`) counts the properties its parts declare; the parts themselves, and schemas used as parts, stay open.
fn strict(document: &mut Value) {
    let text = document.to_string();
    let composed: Vec<String> = document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| text.contains(&format!("\"allOf\":[{{\"$ref\":\"#/components/schemas/{name}\"")))
        .cloned()
        .collect();
    fn walk(schema: &mut Value, in_all_of: bool) {
        match schema {
            Value::Object(map) => {
                let object = map.contains_key("properties") || map.contains_key("allOf");
                if !in_all_of && object && !map.contains_key("additionalProperties") {
                    map.insert("unevaluatedProperties".into(), Value::Bool(false));
                }
                for (key, value) in map.iter_mut() {
                    walk(value, key == "allOf");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, in_all_of)),
            _ => {}
        }
    }
    for (name, schema) in document["components"]["schemas"].as_object_mut().unwrap() {
        walk(schema, composed.contains(name));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_answer_matches_its_schema() {
    let target = Target::start().await;
    let config = format!(
        "[system]\nenabled = true\ninterval = \"1s\"\n\n\
         [webhooks]\nallow_networks = [\"127.0.0.1\"]\n\n\
         [alerting]\ninterval = \"1s\"\ngroup_wait = \"0s\"\ndefault_channels = [\"sink\"]\n\n\
         [[channel]]\nname = \"sink\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nmax_attempts = 1\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n\
         [check.recovery]\nafter = 2\nhttp = {{ url = \"{}\", method = \"POST\" }}\n",
        target.url("/status/500"),
        target.url("/restart"),
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{}{path}", selfmon.url)).json(&body).send();
    post("/v1/alerts/rules", json!({"name": "r1", "condition": "x > 1", "severity": "low", "for": "1m"}))
        .await
        .unwrap();
    post(
        "/v1/webhooks",
        json!({"url": "http://127.0.0.1:9/", "events": ["alert.fired"], "secret": "0123456789abcdef"}),
    )
    .await
    .unwrap();
    post("/v1/logs", json!([{"msg": "hello", "level": "error", "trace_id": "t1", "extra": {"a": 1}}, "hello raw"]))
        .await
        .unwrap();
    workdir
        .db()
        .execute_batch(
            "INSERT INTO alerts (fingerprint, rule, severity, state, summary, labels, started_at, acknowledged_at, acknowledged_by, ack_comment)
             VALUES ('f', 'r1', 'low', 'firing', 'x is 2', '{}', 1795730000000, 1795730001000, 'ops', 'on it');",
        )
        .unwrap();
    post("/v1/silences", json!({"matchers": {"check": "other"}, "duration": "1h", "comment": "maintenance"}))
        .await
        .unwrap();
    // Recovery has acted, the system collector has sampled and `service_down` has tried its channel, so those
    // answers have content to check.
    selfmon.wait_for("web", "a recovery attempt", |s| s["recovery"]["attempts"].as_u64().unwrap_or(0) >= 1).await;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while selfmon.get("/v1/alerts/notifications").await.1["total"] == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no notification was attempted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let (status, document) = selfmon.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut operations: Vec<String> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    for expected in [
        "GET /v1/health",
        "GET /v1/health/{service}/history",
        "GET /v1/metrics",
        "GET /v1/performance",
        "GET /v1/errors",
        "GET /v1/alerts",
        "POST /v1/alerts/rules",
        "GET /v1/alerts/rules",
        "DELETE /v1/alerts/rules/{name}",
        "POST /v1/alerts/{id}/acknowledge",
        "GET /v1/status",
        "POST /v1/webhooks",
        "GET /v1/webhooks/{id}/deliveries",
        "GET /v1/alerts/rule-states",
        "GET /v1/alerts/notifications",
        "GET /v1/silences",
        "POST /v1/silences",
        "DELETE /v1/silences/{id}",
        "GET /metrics",
        "GET /health",
    ] {
        assert!(operations.iter().any(|o| o == expected), "{expected} is not documented: {operations:?}");
    }

    let mut strict_document = document.clone();
    strict(&mut strict_document);
    let checked = [
        ("/health", "/health", 200),
        ("/v1/health", "/v1/health", 200),
        ("/v1/health", "/v1/health?service=nope", 404),
        ("/v1/health/{service}/history", "/v1/health/web/history?limit=3", 200),
        ("/v1/status", "/v1/status", 200),
        ("/v1/metrics", "/v1/metrics", 200),
        ("/v1/metrics", "/v1/metrics?name=response_time_seconds&step=1m", 200),
        ("/v1/metrics", "/v1/metrics?from=yesterday", 400),
        ("/v1/performance", "/v1/performance?time_window=600", 200),
        ("/v1/errors", "/v1/errors?time_window=600", 200),
        ("/v1/alerts", "/v1/alerts", 200),
        ("/v1/alerts/rules", "/v1/alerts/rules", 200),
        ("/v1/alerts/rules/{name}", "/v1/alerts/rules/r1", 200),
        ("/v1/alerts/rules/{name}", "/v1/alerts/rules/none", 404),
        ("/v1/alerts/rule-states", "/v1/alerts/rule-states", 200),
        ("/v1/alerts/{id}", "/v1/alerts/1", 200),
        ("/v1/alerts/{id}", "/v1/alerts/999", 404),
        ("/v1/alerts/notifications", "/v1/alerts/notifications", 200),
        ("/v1/silences", "/v1/silences", 200),
        ("/v1/silences/{id}", "/v1/silences/1", 200),
        ("/v1/webhooks", "/v1/webhooks", 200),
        ("/v1/webhooks/{id}/deliveries", "/v1/webhooks/1/deliveries", 200),
        ("/v1/recovery", "/v1/recovery", 200),
        ("/v1/logs", "/v1/logs?q=hello", 200),
        ("/v1/logs", "/v1/logs?q=%22open", 400),
    ];
    for (template, url, code) in checked {
        let (status, answer) = selfmon.get(url).await;
        assert_eq!(status.as_u16(), code, "{url}: {answer}");
        let schema = &strict_document["paths"][template]["get"]["responses"][code.to_string()]["content"]["application/json"]
            ["schema"];
        assert!(schema.is_object(), "{template} documents no JSON answer for {code}");
        let validator = validator(&strict_document, schema);
        assert_valid(&validator, &answer, url);
        // The check itself can fail: a field the document does not declare is caught.
        if let Value::Object(mut fields) = answer {
            fields.insert("undeclared".into(), json!(1));
            assert!(!validator.is_valid(&Value::Object(fields)), "{url}: strict validation missed a field");
        }
    }

    // The live tail's events, as an SSE client reads them, match the event schema, and their data the record's.
    let events = sse_events(&format!("{}/v1/logs/tail?backlog=10", selfmon.url), 2).await;
    let tail = &strict_document["paths"]["/v1/logs/tail"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    let event = validator(&strict_document, &tail["schema"]);
    let record = validator(&strict_document, &json!({"$ref": "#/components/schemas/StoredRecord"}));
    for sent in &events {
        assert_valid(&event, sent, "a live tail event");
        let data: Value = serde_json::from_str(sent["data"].as_str().unwrap()).unwrap();
        assert_valid(&record, &data, "a live tail event's data");
    }
    selfmon.stop().await;
}

/// A validator for `schema`, its references resolved in `document`.
fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    jsonschema::draft202012::new(&root).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, answer: &Value, what: &str) {
    let problems: Vec<String> =
        validator.iter_errors(answer).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(problems.is_empty(), "{what} does not match its schema:\n{}\n{answer:#}", problems.join("\n"));
}

/// The first `count` server-sent events of a stream, each as `{event, id, data}`.
async fn sse_events(url: &str, count: usize) -> Vec<Value> {
    let mut response = reqwest::get(url).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|block| block.contains("data:"))
            .map(|block| {
                let mut event = serde_json::Map::new();
                for line in block.lines() {
                    if let Some((field, value)) = line.split_once(':') {
                        event.insert(field.to_string(), json!(value.strip_prefix(' ').unwrap_or(value)));
                    }
                }
                Value::Object(event)
            })
            .collect();
        if events.len() >= count && text.ends_with("\n\n") {
            return events;
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("the tail sent too little");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the tail ended")));
    }
}

/// Run schemathesis against `selfmon`'s document with `arguments`; its report when it finds a problem.
async fn schemathesis(selfmon: &Selfmon, arguments: &[&str]) -> Result<(), String> {
    let program = std::path::Path::new(CLIENT_PYTHON).with_file_name("schemathesis");
    let mut command = tokio::process::Command::new(program);
    command
        // Where a request the document allows may still be refused, and why.
        .args(["--config-file", concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/integration/schemathesis.toml")])
        .arg("run")
        .arg(format!("{}/v1/openapi.json", selfmon.url))
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
        // Every check (the settings turn some off for some operations); `object_level_authorization` compares what
        // different users see, and selfmon's keys see the same things.
        .args(["--exclude-checks", "object_level_authorization"])
        .args(["--seed", "1", "--continue-on-failure", "--no-color"])
        .args(arguments)
        .kill_on_drop(true);
    let output = command.output().await.map_err(|e| format!("schemathesis did not run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let target = Target::start().await;
    let config = format!(
        "[[api.keys]]\nname = \"contract\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n",
        target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some(ADMIN_KEY.into());
    selfmon.first_result("web").await;
    // Records to find and to tail.
    let posted = reqwest::Client::new()
        .post(format!("{}/v1/logs", selfmon.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!([{"level": "info", "msg": "tail this"}, {"level": "error", "msg": "and this"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    // The tail never ends: each call is cut after two seconds (its events are checked by the test above).
    let found = schemathesis(&selfmon, &["--max-examples", "10", "--request-timeout", "2"]).await;
    selfmon.stop().await;
    found.unwrap_or_else(|report| panic!("{report}"));
}
