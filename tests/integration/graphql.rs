//! GraphQL at `/graphql` over real HTTP and a real WebSocket: queries, mutations with their role check, a
//! subscription that receives a health change as it happens, requests refused by the size, depth and cost limits,
//! and the schema fetched by a real client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{CLIENT_PYTHON, ENGINES, Engine, PATIENCE, Selfmon, Target, Workdir};

const ADMIN: &str = "admin-key-0123456789";
const READ: &str = "read-key-0123456789";

fn keys() -> String {
    format!(
        "[api]\nrate_limit = 0\nkeys = [\n  {{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }},\n  \
         {{ name = \"grafana\", key = \"{READ}\", role = \"read\" }},\n]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_and_mutations_answer_what_rest_answers() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        queries_and_mutations_answer_what_rest_answers_on(engine).await;
    }
}

async fn queries_and_mutations_answer_what_rest_answers_on(engine: Engine) {
    let target = Target::start().await;
    let config = format!(
        "{}\n[[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n\n[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n",
        keys(),
        target.url("/ok")
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let health = loop {
        let health = selfmon.graphql(Some(READ),
            "{ health { status checks { name plugin status responseTimeMs history(limit: 2) { status durationMs } } } }",
            Value::Null,
        )
        .await;
        if health["data"]["health"]["checks"][0]["history"].as_array().is_some_and(|h| h.len() == 2) {
            break health;
        }
        assert!(tokio::time::Instant::now() < deadline, "no history: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let web = &health["data"]["health"]["checks"][0];
    assert_eq!((web["name"].as_str(), web["status"].as_str()), (Some("web"), Some("HEALTHY")));
    assert_eq!(web["history"][0]["status"], "HEALTHY");
    assert_eq!(health["data"]["health"]["status"], "HEALTHY");
    // The same answer as REST's.
    let rest: Value = client
        .get(format!("{}/v1/health?service=web", selfmon.url))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["checks"][0]["plugin"], web["plugin"]);

    let unknown = selfmon.graphql(Some(READ), "{ check(name: \"nope\") { name } }", Value::Null).await;
    assert_eq!(unknown["errors"][0]["message"], "no check named `nope`");
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "unknown_check");

    let metrics = selfmon.graphql(Some(READ),
        "{ metricNames { name series } series(name: \"response_time_seconds\", labels: [{name: \"check\", value: \"web\"}]) { total series { labels points { time value } } } status }",
        Value::Null,
    )
    .await;
    assert!(metrics["data"]["metricNames"].as_array().unwrap().iter().any(|m| m["name"] == "response_time_seconds"));
    assert_eq!(metrics["data"]["series"]["total"], 1);
    assert_eq!(metrics["data"]["series"]["series"][0]["labels"]["check"], "web");
    assert!(!metrics["data"]["series"]["series"][0]["points"].as_array().unwrap().is_empty());
    assert_eq!(metrics["data"]["status"]["version"], env!("CARGO_PKG_VERSION"));

    let create = "mutation($rule: AlertRuleInput!) { createAlertRule(rule: $rule) { name condition severity createdBy notificationChannels } }";
    let rule = json!({ "rule": {
        "name": "slow-openai", "condition": "avg(check_duration_seconds{check=\"openai\"}[5m]) > 5",
        "severity": "high", "notificationChannels": ["webhook"], "for": "2m"
    }});
    let refused = selfmon.graphql(Some(READ), create, rule.clone()).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "forbidden", "{refused}");
    let created = selfmon.graphql(Some(ADMIN), create, rule).await;
    assert_eq!(created["data"]["createAlertRule"]["createdBy"], "ops", "{created}");
    let invalid = selfmon
        .graphql(
            Some(ADMIN),
            create,
            json!({ "rule": { "name": "broken", "condition": "avg(x[5m) > 1", "severity": "high" } }),
        )
        .await;
    let message = invalid["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`condition` at column 9: expected `]` to close the range"), "{message}");

    // Visible to REST, and deleted through GraphQL.
    let (status, rules) = (
        client.get(format!("{}/v1/alerts/rules", selfmon.url)).bearer_auth(READ).send().await.unwrap().status(),
        selfmon.graphql(Some(READ), "{ alertRules { total items { name forSeconds } } }", Value::Null).await,
    );
    assert_eq!(status, 200);
    assert_eq!(rules["data"]["alertRules"]["items"][0], json!({ "name": "slow-openai", "forSeconds": 120.0 }));
    let deleted =
        selfmon.graphql(Some(ADMIN), "mutation { deleteAlertRule(name: \"slow-openai\") }", Value::Null).await;
    assert_eq!(deleted["data"]["deleteAlertRule"], true);
    let again = selfmon.graphql(Some(ADMIN), "mutation { deleteAlertRule(name: \"slow-openai\") }", Value::Null).await;
    assert_eq!(again["data"]["deleteAlertRule"], false);

    // Without a key, nothing.
    let anonymous = client.post(format!("{}/graphql", selfmon.url)).json(&json!({"query": "{ status }"})).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);
    selfmon.stop().await;
}

/// The first error of a GraphQL answer, which must have no data.
fn refusal(answer: &Value) -> &str {
    assert!(answer["data"].is_null(), "{answer}");
    answer["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_before_they_run() {
    let workdir = Workdir::new(&keys(), &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let running = &selfmon;
    let ask = |query: String| async move { running.graphql(Some(READ), &query, Value::Null).await };

    let children = "children { ".repeat(10) + "name" + &" }".repeat(10);
    let deep = ask(format!("{{ trace(traceId: \"t\") {{ roots {{ {children} }} }} }}")).await;
    assert_eq!(refusal(&deep), "the query nests 13 fields deep, more than the 10 allowed");
    let nested_listing = ask("{ __schema { types { fields { type { fields { name } } } } } }".into()).await;
    assert!(refusal(&nested_listing).contains("once on a path"), "{nested_listing}");

    // Lists cost their limit; scans their window; aliases each their own.
    let wide = ask("{ health { checks { history(limit: 1000) { status summary startedAt } } } }".into()).await;
    assert!(refusal(&wide).starts_with("the query costs 3"), "{wide}");
    let longest = "logAnalysis(hours: 2160) { totalRecords }";
    let one = ask(format!("{{ a: {longest} }}")).await;
    assert!(one["errors"].is_null(), "one scan of the longest window runs: {one}");
    let two = ask(format!("{{ a: {longest} b: {longest} }}")).await;
    assert!(refusal(&two).starts_with("the query costs 1002,"), "{two}");
    let aliases =
        |n: usize| (0..n).map(|i| format!("p{i}: performance {{ timeWindowSeconds }}")).collect::<Vec<_>>().join(" ");
    assert!(ask(format!("{{ {} }}", aliases(10))).await["errors"].is_null());
    assert!(refusal(&ask(format!("{{ {} }}", aliases(20))).await).starts_with("the query costs"));
    // A log search costs the time it covers: the whole store twice is too much, the last hour many times is not.
    let whole = "logs(text: \"error\", limit: 10) { message }";
    assert!(ask(format!("{{ a: {whole} }}")).await["errors"].is_null());
    assert!(refusal(&ask(format!("{{ a: {whole} b: {whole} }}")).await).starts_with("the query costs 1020,"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hour = format!("logs(text: \"error\", from: {}, limit: 10) {{ message }}", now - 3600);
    let hours = (0..10).map(|i| format!("h{i}: {hour}")).collect::<Vec<_>>().join(" ");
    assert!(ask(format!("{{ {hours} }}")).await["errors"].is_null());

    // Fragments that spread each other twice over: refused unexpanded (2^30 fields expanded).
    let mut fragments = String::from("{ ...F0 }\n");
    for i in 0..30 {
        fragments.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} ...F{} }}\n", i + 1, i + 1));
    }
    fragments.push_str("fragment F30 on QueryRoot { status }\n");
    assert!(refusal(&ask(fragments).await).contains("fields once its fragments are expanded"));
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_client_fetches_the_schema_and_validates_queries_against_it() {
    let target = Target::start().await;
    let config =
        format!("{}\n[[check]]\nname = \"web\"\nplugin = \"http\"\ntarget = \"{}\"\n", keys(), target.url("/ok"));
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let python = std::path::Path::new(CLIENT_PYTHON);
    assert!(python.exists(), "{CLIENT_PYTHON} is missing: run scripts/setup, which installs gql");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/integration/scripts/graphql_client.py");
    let output = tokio::process::Command::new(python)
        .args([script, &format!("{}/graphql", selfmon.url), READ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let said: Value = serde_json::from_slice(&output.stdout).unwrap();
    for field in ["health", "logs", "traces", "analytics", "performance"] {
        assert!(said["query_fields"].as_array().unwrap().contains(&json!(field)), "{said}");
    }
    assert_eq!(said["answer"]["health"]["total"], 1, "{said}");
    assert_eq!(said["answer"]["health"]["checks"][0]["name"], "web");
    assert_eq!(said["invalid"], "Cannot query field 'uptime' on type 'HealthReport'.", "{said}");
    selfmon.stop().await;
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message of the graphql-transport-ws protocol, as JSON.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next()).await.expect("a message in time");
        if let Message::Text(text) = message.unwrap().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_receives_a_health_change_as_it_happens() {
    // A service whose health the test switches.
    let up = Arc::new(AtomicBool::new(true));
    let switch = up.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let up = switch.load(Ordering::SeqCst);
            async move { if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE } }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = format!(
        "{}\n[[check]]\nname = \"bot\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{service}\"\n",
        keys()
    );
    let workdir = Workdir::new(&config, &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some(READ.into());
    selfmon.wait_for("bot", "healthy", |s| s["status"] == "healthy").await;

    let mut request = format!("{}/graphql", selfmon.url.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    request.headers_mut().insert("authorization", format!("Bearer {READ}").parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    socket.send(Message::text(json!({"type": "connection_init"}).to_string())).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "connection_ack");
    let subscribe = json!({
        "id": "1", "type": "subscribe",
        "payload": { "query": "subscription { healthChanges(check: \"bot\") { check from to summary } }" }
    });
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    // Subscribed before the switch: give the server a moment to start the stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.store(false, Ordering::SeqCst);

    let event = next(&mut socket).await;
    assert_eq!(event["type"], "next", "{event}");
    let change = &event["payload"]["data"]["healthChanges"];
    assert_eq!(
        (change["check"].as_str(), change["from"].as_str(), change["to"].as_str()),
        (Some("bot"), Some("HEALTHY"), Some("UNHEALTHY")),
        "{event}"
    );
    assert!(change["summary"].as_str().unwrap().contains("503"), "{event}");

    up.store(true, Ordering::SeqCst);
    let back = next(&mut socket).await;
    assert_eq!(back["payload"]["data"]["healthChanges"]["to"], "HEALTHY", "{back}");
    socket.close(None).await.unwrap();
    selfmon.stop().await;
}
