//! Acknowledged means stored: the `selfmon` binary, killed with SIGKILL while every HTTP ingest path is being
//! posted to, keeps every log record, span and event it answered 2xx for; a tailed file's lines are stored exactly
//! once however often it is rotated and selfmon killed; and a notification being delivered when selfmon is killed
//! goes out once it is back.

use std::io::Write;
use std::path::Path;
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

use crate::support::receiver::AlertReceiver;
use crate::support::{PATIENCE, Workdir, free_port, serve_binary, signal, switchable_service, within};

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

/// Lines in the rotated log, and after how many a rotation comes.
const LINES: usize = 30_000;
const SEGMENT: usize = 2_500;

/// Rotate `logs/app.log` the way logrotate does: the rotated files move up one number, then the log is renamed to
/// `app.log.1` (its writer goes on writing to it for a while) or copied there and truncated.
fn rotate(dir: &Path, rotated: &mut usize, writer: &mut std::fs::File, copy: bool) {
    for n in (1..=*rotated).rev() {
        std::fs::rename(dir.join(format!("app.log.{n}")), dir.join(format!("app.log.{}", n + 1))).unwrap();
    }
    *rotated += 1;
    let log = dir.join("app.log");
    if copy {
        std::fs::copy(&log, dir.join("app.log.1")).unwrap();
        writer.set_len(0).unwrap();
    } else {
        std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    }
}

/// Write the log in bursts, rotating it after every segment, alternately by rename and by copy-truncate.
fn write_rotating_log(dir: &Path) {
    let open = || std::fs::OpenOptions::new().create(true).append(true).open(dir.join("app.log")).unwrap();
    let mut writer = open();
    let mut rotated = 0;
    for burst in (0..LINES).step_by(100) {
        let lines: String =
            (burst..burst + 100).map(|n| format!("{{\"level\":\"info\",\"msg\":\"rotated line {n:05}\"}}\n")).collect();
        writer.write_all(lines.as_bytes()).unwrap();
        let written = burst + 100;
        if written.is_multiple_of(SEGMENT) && written < LINES {
            let copy = (written / SEGMENT).is_multiple_of(2);
            rotate(dir, &mut rotated, &mut writer, copy);
            if !copy {
                // The application reopens its log a little later, as on a signal from logrotate.
                std::thread::sleep(Duration::from_millis(30));
                writer = open();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tailed_lines_are_stored_exactly_once_through_rotation_and_kill_9() {
    let port = free_port();
    // Rotated names are matched too, as Fluent Bit and Vector setups have them.
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[[log_source]]\nname = \"app\"\nkind = \"file\"\n\
         paths = [\"{{workdir}}/logs/app.log*\"]\npoll = \"50ms\"\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let dir = workdir.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let (mut child, _) = serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await;

    let writer = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || write_rotating_log(&dir)
    });
    // Killed at moments of chance while the log is written and rotated, and started again at once.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1500))).await;
        signal(&child, nix::sys::signal::Signal::SIGKILL);
        child.wait().unwrap();
        child = serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await.0;
    }
    writer.await.unwrap();

    let db = workdir.db();
    let stored = || {
        db.query_row("SELECT COUNT(*), COUNT(DISTINCT message) FROM logs WHERE source = 'app'", [], |r| {
            Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
        })
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while stored().1 < LINES && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever was held back while the file was growing has settled by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
    let (count, distinct) = stored();
    assert_eq!(distinct, LINES, "every line stored");
    assert_eq!(count, LINES, "no line stored twice");
}

/// A notification selfmon was delivering when it was killed goes out after its restart, once, and nothing else is
/// repeated: the receiver holds the first message unanswered while selfmon is killed.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_cut_short_by_kill_9_goes_out_after_the_restart() {
    let (up, service) = switchable_service().await;
    let (received, hook) = AlertReceiver::start(1).await;
    let port = free_port();
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[alerting]\ninterval = \"1s\"\ngroup_wait = \"0s\"\n\
         group_interval = \"1s\"\ndefault_channels = [\"receiver\"]\n\n[[channel]]\nname = \"receiver\"\n\
         kind = \"webhook\"\nurl = \"{hook}\"\n\n[[check]]\nname = \"flappy\"\nplugin = \"http\"\ninterval = \"1s\"\n\
         target = \"{service}\"\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let (mut child, _) = serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await;
    up.store(false, Ordering::SeqCst);
    within(PATIENCE, "the firing notification at the receiver", async || (received.arrived() == 1).then_some(())).await;
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(received.statuses("flappy").is_empty(), "the first message was held unanswered");

    let (mut child, _) = serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await;
    received.wait_for("flappy", &["firing"]).await;
    up.store(true, Ordering::SeqCst);
    received.wait_for("flappy", &["firing", "resolved"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
    assert_eq!(received.statuses("flappy"), ["firing", "resolved"]);
    assert_eq!(received.arrived(), 3, "the message cut short, then each once");
}
