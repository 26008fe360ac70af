//! Acknowledged means stored: the `selfmon` binary, killed with SIGKILL while every HTTP ingest path is being
//! posted to, keeps every log record, span and event it answered 2xx for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

use crate::support::{Workdir, free_port, serve_binary, signal};

/// Items in each request.
const BATCH: usize = 10;

fn now_nanos() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// The body of request `n` on `path`, and its content type.
fn body(path: &str, n: usize) -> (Vec<u8>, &'static str) {
    let ids = (n * BATCH)..((n + 1) * BATCH);
    match path {
        "json" => {
            let records: Vec<_> = ids.map(|i| json!({"level": "info", "msg": format!("durable json {i}")})).collect();
            (serde_json::to_vec(&records).unwrap(), "application/json")
        }
        "otlp-logs" => {
            let log_records = ids
                .map(|i| LogRecord {
                    time_unix_nano: now_nanos(),
                    body: Some(AnyValue { value: Some(any_value::Value::StringValue(format!("durable otlp {i}"))) }),
                    ..LogRecord::default()
                })
                .collect();
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs { log_records, ..ScopeLogs::default() }],
                    ..ResourceLogs::default()
                }],
            };
            (request.encode_to_vec(), "application/x-protobuf")
        }
        "traces" => {
            let end = now_nanos();
            let spans = ids
                .map(|i| Span {
                    trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    name: "durable".into(),
                    start_time_unix_nano: end - 1_000_000,
                    end_time_unix_nano: end,
                    ..Span::default()
                })
                .collect();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
                    ..ResourceSpans::default()
                }],
            };
            (request.encode_to_vec(), "application/x-protobuf")
        }
        _ => {
            let events: Vec<_> =
                ids.map(|i| json!({"type": "conversation_started", "user_id": format!("tg:{i}")})).collect();
            (serde_json::to_vec(&json!({ "events": events })).unwrap(), "application/json")
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_was_acknowledged_survives_kill_9_on_every_ingest_path() {
    let port = free_port();
    let workdir = Workdir::new(&format!("[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[api]\nrate_limit = 0\n"), &[]);
    let (mut child, url) = serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await;

    let paths = ["json", "otlp-logs", "traces", "events"];
    let acknowledged: Vec<Arc<AtomicUsize>> = paths.iter().map(|_| Arc::default()).collect();
    let sent: Vec<Arc<AtomicUsize>> = paths.iter().map(|_| Arc::default()).collect();
    let posters: Vec<_> = paths
        .iter()
        .zip(acknowledged.iter().cloned().zip(sent.iter().cloned()))
        .map(|(path, (acknowledged, sent))| {
            let route = match *path {
                "json" | "otlp-logs" => format!("{url}/v1/logs"),
                "traces" => format!("{url}/v1/traces"),
                _ => format!("{url}/v1/events"),
            };
            let path = path.to_string();
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                // Bounded: the server is killed long before.
                for n in 0..10_000 {
                    let (body, content_type) = body(&path, n);
                    sent.fetch_add(BATCH, Ordering::SeqCst);
                    match client.post(&route).header("content-type", content_type).body(body).send().await {
                        Ok(answer) if answer.status().is_success() => {
                            acknowledged.fetch_add(BATCH, Ordering::SeqCst);
                        }
                        Ok(answer) => assert_eq!(answer.status(), 503, "{path}"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    for poster in posters {
        poster.await.unwrap();
    }

    let db = workdir.db();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize;
    let stored = [
        count("SELECT COUNT(*) FROM logs WHERE message LIKE 'durable json %'"),
        count("SELECT COUNT(*) FROM logs WHERE message LIKE 'durable otlp %'"),
        count("SELECT COUNT(*) FROM spans WHERE name = 'durable'"),
        count("SELECT COUNT(*) FROM events"),
    ];
    for (index, path) in paths.iter().enumerate() {
        let (acknowledged, sent) = (acknowledged[index].load(Ordering::SeqCst), sent[index].load(Ordering::SeqCst));
        assert!(acknowledged > 0, "{path}: nothing was acknowledged before the kill");
        assert!(
            stored[index] >= acknowledged && stored[index] <= sent,
            "{path}: {acknowledged} acknowledged, {} stored, {sent} sent",
            stored[index]
        );
    }
}
