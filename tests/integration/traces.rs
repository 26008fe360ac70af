//! OTLP/HTTP into selfmon over real HTTP: the real OpenTelemetry Python SDK with its OTLP/HTTP exporters (installed
//! from PyPI by `scripts/setup`), and the protocol's corners with bodies built here: both encodings, gzip,
//! malformed and oversized bodies, partial success, and back-pressure.

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

use crate::support::{CLIENT_PYTHON as PYTHON, ENGINES, Engine, Selfmon, Workdir, get_json_with_key, gzip};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..KeyValue::default()
    }
}

fn now_nanos() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// A span of `trace` (one byte repeated) with id `span`, under `parent` (0: none), `millis` long.
fn span(trace: u8, span: u8, parent: u8, name: &str, millis: u64) -> Span {
    let start = now_nanos() - 60_000_000_000;
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        parent_span_id: if parent == 0 { Vec::new() } else { vec![parent; 8] },
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + millis * 1_000_000,
        ..Span::default()
    }
}

fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", service)], ..Resource::default() }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn post(selfmon: &Selfmon, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().post(format!("{}{path}", selfmon.url)).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_opentelemetry_sdk_exports_spans_and_linked_logs() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        the_python_opentelemetry_sdk_exports_spans_and_linked_logs_on(engine).await;
    }
}

async fn the_python_opentelemetry_sdk_exports_spans_and_linked_logs_on(engine: Engine) {
    let config = r#"
[[api.keys]]
name = "coach-bot"
key = "ingest-key-123456"
role = "ingest"

[[api.keys]]
name = "grafana"
key = "read-key-1234567"
"#;
    let workdir = Workdir::on(engine, config, &[]);
    let selfmon = Selfmon::start(&workdir).await;

    let python = std::path::Path::new(PYTHON);
    assert!(python.exists(), "{PYTHON} is missing: run scripts/setup, which installs the OpenTelemetry SDK");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/integration/scripts/otel_service.py");
    // Configured only through the SDK's standard environment variables.
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &selfmon.url)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20ingest-key-123456")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .env("OTEL_SERVICE_NAME", "coach-bot")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("Failed to export"), "the exporter reported a failure: {stderr}");
    let ids: Value = serde_json::from_slice(&output.stdout).unwrap();
    let trace_id = ids["trace_id"].as_str().unwrap();

    let read = |path: String| {
        let url = format!("{}{path}", selfmon.url);
        async move { get_json_with_key(&url, "read-key-1234567").await }
    };
    let (status, trace) = read(format!("/v1/traces/{trace_id}")).await;
    assert_eq!(status, 200, "{trace}");
    assert_eq!((trace["span_count"].as_u64(), trace["error_count"].as_u64()), (Some(4), Some(1)), "{trace:#}");
    let [root] = trace["roots"].as_array().unwrap().as_slice() else { panic!("one root: {trace:#}") };
    assert_eq!((root["name"].as_str(), root["kind"].as_str()), (Some("handle_message"), Some("server")));
    assert_eq!(root["span_id"], ids["root"]);
    assert_eq!(root["service"], "coach-bot");
    let children: Vec<&str> =
        root["children"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(children, ["SELECT messages", "chat gpt-4o-mini", "send_reply"], "children by start time");
    let child = |name: &str| root["children"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(child("chat gpt-4o-mini")["parent_id"], ids["root"]);
    assert_eq!(child("chat gpt-4o-mini")["attributes"]["gen_ai.usage.input_tokens"], 1500);
    let reply = child("send_reply");
    assert_eq!((reply["status"].as_str(), reply["status_message"].as_str()), (Some("error"), Some("reply failed")));
    assert_eq!(reply["events"][0]["name"], "exception");
    assert_eq!(reply["events"][0]["attributes"]["exception.type"], "TimeoutError");
    // The root's time less its children's.
    let children_ms: f64 =
        root["children"].as_array().unwrap().iter().map(|c| c["duration_ms"].as_f64().unwrap()).sum();
    let self_ms = root["self_time_ms"].as_f64().unwrap();
    assert!((self_ms - (root["duration_ms"].as_f64().unwrap() - children_ms)).abs() < 1e-3, "{root:#}");
    // The user is stored as a pseudonym, which the children take from the request's span.
    let user = root["user_id"].as_str().unwrap();
    assert!(user.starts_with("u_") && user != "tg:777001", "{user}");
    assert_eq!(child("chat gpt-4o-mini")["user_id"], user);

    // The log line written inside the AI call, linked to its trace and span, its email address redacted.
    let [record] = trace["logs"].as_array().unwrap().as_slice() else { panic!("one linked record: {trace:#}") };
    assert_eq!(record["message"], "Slow AI reply for [redacted:email]");
    assert_eq!((record["level"].as_str(), record["source"].as_str()), (Some("warning"), Some("otlp")));
    assert_eq!((record["service"].as_str(), record["logger"].as_str()), (Some("coach-bot"), Some("coach.ai")));
    assert_eq!(record["span_id"], ids["ai"]);
    assert_eq!(record["fields"]["latency_ms"], 2300);
    let (_, found) = read(format!("/v1/logs?trace_id={trace_id}")).await;
    assert_eq!(found["records"][0]["id"], record["id"]);

    // Searches by the user as the platform knows them, by error, by operation and duration.
    for query in [
        "user_id=tg:777001".to_string(),
        format!("user_id={user}"),
        "error=true".into(),
        "service=coach-bot&operation=SELECT%20messages".into(),
    ] {
        let (status, found) = read(format!("/v1/traces?{query}")).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["traces"][0]["trace_id"], trace_id, "{query}: {found}");
        assert_eq!(found["traces"][0]["operation"], "handle_message", "named by its root");
    }
    for query in ["user_id=tg:777002", "error=false", "min_duration_ms=60000"] {
        let (_, found) = read(format!("/v1/traces?{query}")).await;
        assert_eq!(found["traces"], json!([]), "{query}: {found}");
    }

    // The AI call counts as AI usage, priced from the table: gpt-4o-mini at $0.15 and $0.60 per million tokens.
    let (_, analytics) = read("/v1/analytics?days=1".into()).await;
    let ai = &analytics["ai"];
    assert_eq!(ai["requests"], 1, "{analytics:#}");
    assert_eq!(ai["by_model"][0]["model"], "gpt-4o-mini-2024-07-18");
    let expected = (1500.0 * 0.15 + 400.0 * 0.60) / 1e6;
    assert!((ai["cost"].as_f64().unwrap() - expected).abs() < 1e-12, "{ai}");
    assert_eq!(ai["top_users"][0]["user_id"], user);

    // Performance per operation, from the spans.
    let (_, performance) = read("/v1/performance?time_window=3600".into()).await;
    let operations = performance["operations"].as_array().unwrap();
    let handle = operations.iter().find(|o| o["operation"] == "handle_message").unwrap();
    assert_eq!((handle["service"].as_str(), handle["count"].as_u64()), (Some("coach-bot"), Some(1)));
    let reply = operations.iter().find(|o| o["operation"] == "send_reply").unwrap();
    assert_eq!(reply["error_rate"], 1.0);

    // The ingest key sends; it reads nothing.
    let (status, _) = get_json_with_key(&format!("{}/v1/traces/{trace_id}", selfmon.url), "ingest-key-123456").await;
    assert_eq!(status, 403);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_encodings_gzip_and_partial_success_follow_the_otlp_specification() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        both_encodings_gzip_and_partial_success_follow_the_otlp_specification_on(engine).await;
    }
}

async fn both_encodings_gzip_and_partial_success_follow_the_otlp_specification_on(engine: Engine) {
    let workdir = Workdir::on(engine, "[api]\nmax_body = \"64 KiB\"\n\n[ingest]\nmax_inflated = \"256 KiB\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;

    // Protobuf, gzip-compressed: 200 with an empty response (nothing refused).
    let request = export("api", vec![span(1, 1, 0, "GET /users", 30), span(1, 2, 1, "SELECT users", 12)]);
    let answer =
        post(&selfmon, "/v1/traces", gzip(&request.encode_to_vec()), &[PROTOBUF, ("content-encoding", "gzip")]).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "application/x-protobuf"));
    let response = ExportTraceServiceResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(response.partial_success, None);

    // JSON as the specification writes it: hex ids, 64-bit integers as strings, enums as numbers; one span with an
    // all-zero trace id is refused and counted in a partial success, the rest is stored.
    let start = now_nanos() - 30_000_000_000;
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
        "scopeSpans": [{"scope": {"name": "jobs"}, "spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "send_digest",
             "kind": 1, "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 5_000_000).to_string(),
             "attributes": [{"key": "retries", "value": {"intValue": "2"}},
                            {"key": "ratio", "value": {"doubleValue": 0.5}},
                            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}],
             "status": {"code": 2, "message": "SMTP refused"}},
            {"traceId": "00000000000000000000000000000000", "spanId": "b7ad6b7169203332", "name": "bad",
             "startTimeUnixNano": start.to_string(), "endTimeUnixNano": start.to_string()}
        ]}]
    }]});
    let answer = post(&selfmon, "/v1/traces", body.to_string().into_bytes(), &[JSON]).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "application/json"));
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(response["partialSuccess"]["rejectedSpans"], "1", "an int64 is a string in OTLP JSON: {response}");
    assert!(response["partialSuccess"]["errorMessage"].as_str().unwrap().contains("trace_id"), "{response}");
    let (status, trace) = selfmon.get("/v1/traces/0af7651916cd43dd8448eb211c80319c").await;
    assert_eq!(status, 200, "{trace}");
    let stored = &trace["roots"][0];
    assert_eq!(stored["attributes"], json!({"retries": 2, "ratio": 0.5, "tags": ["a"]}));
    assert_eq!((stored["kind"].as_str(), stored["status"].as_str()), (Some("internal"), Some("error")));
    assert_eq!(stored["duration_ms"], 5.0);

    // The protobuf trace came through whole.
    let (_, trace) = selfmon.get(&format!("/v1/traces/{}", "01".repeat(16))).await;
    assert_eq!(trace["roots"][0]["children"][0]["name"], "SELECT users", "{trace}");

    // Malformed bodies: 400 with a google.rpc.Status in the request's encoding (clients must not retry).
    let answer = post(&selfmon, "/v1/traces", b"\xff\xff\xff not protobuf".to_vec(), &[PROTOBUF]).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (400, "application/x-protobuf"));
    let status = RpcStatus::decode(answer.body.as_slice()).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(status.message.contains("not a valid OTLP protobuf request"), "{}", status.message);
    let answer = post(&selfmon, "/v1/traces", b"{\"resourceSpans\": 7}".to_vec(), &[JSON]).await;
    assert_eq!(answer.status, 400);
    let status: Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(status["message"].as_str().unwrap().contains("not a valid OTLP JSON request"), "{status}");
    let answer = post(&selfmon, "/v1/traces", b"not gzip".to_vec(), &[PROTOBUF, ("content-encoding", "gzip")]).await;
    assert_eq!(answer.status, 400);
    let answer = post(&selfmon, "/v1/traces", b"x".to_vec(), &[("content-type", "text/plain")]).await;
    assert_eq!(answer.status, 415);
    let answer = post(&selfmon, "/v1/traces", b"x".to_vec(), &[PROTOBUF, ("content-encoding", "br")]).await;
    assert_eq!(answer.status, 415);

    // Oversized: a small gzip body that inflates past `[ingest] max_inflated`, and a body past `[api] max_body`.
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 4096);
    let answer = post(&selfmon, "/v1/traces", bomb, &[PROTOBUF, ("content-encoding", "gzip")]).await;
    assert_eq!(answer.status, 413);
    assert!(RpcStatus::decode(answer.body.as_slice()).unwrap().message.contains("256.0 KiB"));
    let answer = post(&selfmon, "/v1/traces", vec![b' '; 80 << 10], &[JSON]).await;
    assert_eq!(answer.status, 413);

    // OTLP logs on the same path as selfmon's own log API: protobuf and a JSON object of `resourceLogs`.
    let logs = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
        "scopeLogs": [{"scope": {"name": "jobs.digest"}, "logRecords": [
            {"timeUnixNano": start.to_string(), "severityNumber": 17, "severityText": "ERROR",
             "body": {"stringValue": "digest failed for +7 912 345-67-89"},
             "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
             "attributes": [{"key": "user_id", "value": {"stringValue": "tg:5"}}]}
        ]}]
    }]});
    let answer = post(&selfmon, "/v1/logs", logs.to_string().into_bytes(), &[JSON]).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(serde_json::from_slice::<Value>(&answer.body).unwrap(), json!({}));
    let (_, trace) = selfmon.get("/v1/traces/0af7651916cd43dd8448eb211c80319c").await;
    let record = &trace["logs"][0];
    assert_eq!(record["message"], "digest failed for [redacted:phone]", "{trace}");
    assert_eq!((record["level"].as_str(), record["logger"].as_str()), (Some("error"), Some("jobs.digest")));
    assert!(record["user_id"].as_str().unwrap().starts_with("u_"));
    // selfmon's own formats still work beside it.
    let answer = post(&selfmon, "/v1/logs", br#"[{"level": "info", "msg": "plain"}]"#.to_vec(), &[JSON]).await;
    assert_eq!(answer.status, 202);
    selfmon.stop().await;
}

/// While storage cannot commit, exports past the ones that may wait are refused with 503 and `Retry-After` (as
/// OTLP exporters expect, to retry later), and every accepted export is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn back_pressure_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    let workdir = Workdir::new("", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let lock = rusqlite::Connection::open(workdir.path().join("selfmon.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let exports: Vec<_> = (0..48u8)
        .map(|n| {
            let url = format!("{}/v1/traces", selfmon.url);
            let body = export("api", vec![span(100 + n, 1, 0, "GET /", 5)]).encode_to_vec();
            tokio::spawn(async move {
                let response =
                    reqwest::Client::new().post(url).header(PROTOBUF.0, PROTOBUF.1).body(body).send().await.unwrap();
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                (n, response.status().as_u16(), retry_after, response.bytes().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    lock.execute_batch("COMMIT").unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for export in exports {
        match export.await.unwrap() {
            (n, 200, _, _) => accepted.push(n),
            (_, 503, retry_after, body) => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(RpcStatus::decode(body).unwrap().code, 14, "UNAVAILABLE");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 48 - 32, "at most 32 wait for storage: {refused} refused");
    let stored: Vec<u8> = workdir
        .db()
        .prepare("SELECT trace_id FROM spans ORDER BY trace_id")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|id| u8::from_str_radix(&id.unwrap()[..2], 16).unwrap() - 100)
        .collect();
    accepted.sort_unstable();
    assert_eq!(stored, accepted, "exactly the accepted exports are stored");
    selfmon.stop().await;
}

/// `[retention] spans` and `events` are enforced by the cleanup; an event already older than its retention is
/// refused when it arrives.
#[tokio::test(flavor = "multi_thread")]
async fn spans_and_events_past_their_retention_are_cleaned_up() {
    let workdir = Workdir::new("[retention]\nspans = \"1h\"\nevents = \"1h\"\ninterval = \"1s\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let mut old = span(9, 1, 0, "GET /old", 5);
    old.start_time_unix_nano -= 2 * 3_600_000_000_000;
    old.end_time_unix_nano -= 2 * 3_600_000_000_000;
    let body = export("api", vec![old, span(10, 1, 0, "GET /new", 5)]).encode_to_vec();
    assert_eq!(post(&selfmon, "/v1/traces", body, &[PROTOBUF]).await.status, 200);
    let recent = serde_json::json!({"events": [
        {"type": "user_activity", "action": "message_sent", "user_id": "tg:1"},
        {"type": "user_activity", "action": "message_sent", "user_id": "tg:1",
         "timestamp": (now_nanos() / 1_000_000_000 - 7200) as f64}
    ]});
    let answer = post(&selfmon, "/v1/events", recent.to_string().into_bytes(), &[JSON]).await;
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(answer["rejected"][0]["error"], "`timestamp` is older than `[retention] events`", "{answer}");

    let db = workdir.db();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let names: Vec<String> = db
            .prepare("SELECT name FROM spans")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if names == ["GET /new"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{names:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let events: i64 = db.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(events, 1, "the recent event stays");
    selfmon.stop().await;
}

/// Exporters send a request's inner spans before the span that names the user, in separate exports, and resend
/// exports that timed out: a GenAI span's cost counts once, and belongs to the user its trace names.
#[tokio::test(flavor = "multi_thread")]
async fn ai_spans_count_once_and_take_their_trace_user_across_exports() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        ai_spans_count_once_and_take_their_trace_user_across_exports_on(engine).await;
    }
}

async fn ai_spans_count_once_and_take_their_trace_user_across_exports_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let mut ai = span(20, 2, 1, "chat gpt-4o", 800);
    ai.attributes = vec![
        text("gen_ai.system", "openai"),
        text("gen_ai.request.model", "gpt-4o"),
        KeyValue {
            key: "gen_ai.usage.input_tokens".into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(1000)) }),
            ..KeyValue::default()
        },
    ];
    let first = export("bot", vec![ai]).encode_to_vec();
    for _ in 0..2 {
        assert_eq!(post(&selfmon, "/v1/traces", first.clone(), &[PROTOBUF]).await.status, 200, "sent, then resent");
    }
    let mut root = span(20, 1, 0, "handle_message", 900);
    root.attributes = vec![text("enduser.id", "tg:4242")];
    assert_eq!(post(&selfmon, "/v1/traces", export("bot", vec![root]).encode_to_vec(), &[PROTOBUF]).await.status, 200);

    let (_, analytics) = selfmon.get("/v1/analytics?days=1").await;
    let ai = &analytics["ai"];
    assert_eq!(ai["requests"], 1, "counted once: {ai}");
    assert!((ai["cost"].as_f64().unwrap() - 1000.0 * 2.5 / 1e6).abs() < 1e-12, "{ai}");
    let (_, trace) = selfmon.get(&format!("/v1/traces/{}", "14".repeat(16))).await;
    let user = trace["roots"][0]["user_id"].as_str().unwrap().to_string();
    assert_eq!(trace["roots"][0]["children"][0]["user_id"], user.as_str(), "the earlier span took the user: {trace}");
    assert_eq!(ai["top_users"][0]["user_id"], user.as_str(), "and so did its AI usage");
    let (_, metrics) = selfmon.get("/v1/metrics?name=ai_cost_dollars_total").await;
    let points = metrics["series"][0]["points"].as_array().unwrap();
    let last = points.last().unwrap()[1].as_f64().unwrap();
    assert!((last - 0.0025).abs() < 1e-12, "the counter counts the call once: {points:?}");
    selfmon.stop().await;
}

/// The slowest operation and the spans that dominate it by self time, over REST and its GraphQL twin.
#[tokio::test(flavor = "multi_thread")]
async fn the_slowest_operations_name_where_their_time_goes() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        the_slowest_operations_name_where_their_time_goes_on(engine).await;
    }
}

async fn the_slowest_operations_name_where_their_time_goes_on(engine: Engine) {
    let workdir = Workdir::on(engine, "", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    // GET /checkout takes 100 ms: 60 in the database, 30 in the payment call, 10 of its own.
    let root = span(30, 1, 0, "GET /checkout", 100);
    let mut database = span(30, 2, 1, "SELECT cart", 60);
    let mut payment = span(30, 3, 1, "call payment", 30);
    database.start_time_unix_nano = root.start_time_unix_nano + 5_000_000;
    database.end_time_unix_nano = database.start_time_unix_nano + 60_000_000;
    payment.start_time_unix_nano = root.start_time_unix_nano + 65_000_000;
    payment.end_time_unix_nano = payment.start_time_unix_nano + 30_000_000;
    let body = export("shop", vec![root, database, payment]).encode_to_vec();
    assert_eq!(post(&selfmon, "/v1/traces", body, &[PROTOBUF]).await.status, 200);

    let (_, performance) = selfmon.get("/v1/performance?time_window=3600").await;
    let slowest = &performance["slowest_operations"][0];
    assert_eq!((slowest["operation"].as_str(), slowest["p95_ms"].as_f64()), (Some("GET /checkout"), Some(100.0)));
    let dominated: Vec<(&str, f64, f64)> = slowest["dominated_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["operation"].as_str().unwrap(), d["self_ms"].as_f64().unwrap(), d["share"].as_f64().unwrap()))
        .collect();
    assert_eq!(dominated, [("SELECT cart", 60.0, 0.6), ("call payment", 30.0, 0.3), ("GET /checkout", 10.0, 0.1)]);
    let checkout = performance["operations"].as_array().unwrap().iter().find(|o| o["operation"] == "GET /checkout");
    assert_eq!(checkout.unwrap()["mean_self_ms"], 10.0);

    let query =
        "{ performance(timeWindow: 3600) { slowestOperations { operation dominatedBy { operation selfMs } } } }";
    let answer = selfmon.graphql(None, query, Value::Null).await;
    assert_eq!(
        answer["data"]["performance"]["slowestOperations"][0]["dominatedBy"][0],
        json!({"operation": "SELECT cart", "selfMs": 60.0}),
        "{answer}"
    );
    selfmon.stop().await;
}

/// `[traces] otlp_listen`: OTLP/HTTP on a listener of its own (the port exporters default to, 4318, in real use),
/// with the API's keys; it answers the OTLP paths only.
#[tokio::test(flavor = "multi_thread")]
async fn an_otlp_listener_of_its_own_takes_the_sdks_exports_with_the_apis_keys() {
    let port = crate::support::free_port();
    let config = format!(
        "[traces]\notlp_listen = \"127.0.0.1:{port}\"\n\n[[api.keys]]\nname = \"coach-bot\"\nkey = \"ingest-key-123456\"\n\
         role = \"ingest\"\n\n[[api.keys]]\nname = \"grafana\"\nkey = \"read-key-1234567\"\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let listener = format!("http://127.0.0.1:{port}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/integration/scripts/otel_service.py");
    let output = tokio::process::Command::new(PYTHON)
        .arg(script)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &listener)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20ingest-key-123456")
        .env("OTEL_SERVICE_NAME", "coach-bot")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("Failed to export"), "{stderr}");
    let ids: Value = serde_json::from_slice(&output.stdout).unwrap();
    let trace_id = ids["trace_id"].as_str().unwrap();
    let (status, trace) = get_json_with_key(&format!("{}/v1/traces/{trace_id}", selfmon.url), "read-key-1234567").await;
    assert_eq!((status.as_u16(), trace["span_count"].as_u64()), (200, Some(4)), "{trace}");

    let client = reqwest::Client::new();
    let keyless = client.post(format!("{listener}/v1/traces")).header("content-type", "application/json").body("{}");
    assert_eq!(keyless.send().await.unwrap().status(), 401, "the API's keys hold on the listener");
    let elsewhere = client.get(format!("{listener}/v1/health")).bearer_auth("read-key-1234567").send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
    let body: Value = elsewhere.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    selfmon.stop().await;
}
