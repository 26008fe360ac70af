//! Bounded ingestion: bodies that inflate or decode into far more than they weigh on the wire are refused before they
//! are decoded, on every ingest route, and selfmon keeps answering meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

use crate::support::{PATIENCE, Selfmon, Target, Workdir, gzip};

/// POST `body` with headers; the status, the `Retry-After` header and the body.
async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new().post(url).body(body).timeout(Duration::from_secs(60));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap();
    let retry = answer.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (answer.status().as_u16(), retry, answer.text().await.unwrap_or_default())
}

/// Records posted over HTTP that are stored.
async fn stored(selfmon: &Selfmon) -> usize {
    let (_, found) = selfmon.get("/v1/logs?source=http&limit=1000").await;
    found["records"].as_array().unwrap_or_else(|| panic!("{found}")).len()
}

/// Spans with nothing in them: two bytes each on the wire.
fn empty_spans(count: usize) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); count], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bombs_in_parallel_are_refused_while_health_answers_and_nothing_of_them_is_stored() {
    let workdir = Workdir::new("", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let logs = format!("{}/v1/logs", selfmon.url);
    // 64 MiB of line breaks in about 65 KB: 64 million empty lines once split.
    let bomb = gzip(&vec![b'\n'; 64 << 20]);
    assert!(bomb.len() < 70_000, "{}", bomb.len());

    let bombs: Vec<_> = (0..8)
        .map(|_| {
            let (logs, bomb) = (logs.clone(), bomb.clone());
            tokio::spawn(async move { post(&logs, bomb, &[("content-encoding", "gzip")]).await })
        })
        .collect();
    // /health answers while they are taken in.
    let health = format!("{}/health", selfmon.url);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..10 {
        assert_eq!(client.get(&health).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for bomb in bombs {
        let (status, retry, body) = bomb.await.unwrap();
        match status {
            413 => assert!(body.contains("`[ingest] max_inflated`"), "{body}"),
            503 => assert_eq!(retry.as_deref(), Some("1"), "{body}"),
            other => panic!("a bomb was answered {other}: {body}"),
        }
    }
    assert_eq!(stored(&selfmon).await, 0, "nothing of a refused request is stored");

    // The same body within the inflate limit still splits into more lines than a request may hold.
    let lines = gzip(&vec![b'\n'; 200_000]);
    let (status, _, body) = post(&logs, lines, &[("content-encoding", "gzip")]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 100000 lines (`[ingest] max_items`)"), "{body}");
    let records = format!("[{}]", vec![r#"{"msg":"x"}"#; 100_001].join(","));
    let (status, _, body) = post(&logs, gzip(records.as_bytes()), &[("content-encoding", "gzip")]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 100000 records"), "{body}");

    // A request that fits is taken as before.
    let (status, _, body) = post(&logs, br#"[{"msg": "after the bombs"}]"#.to_vec(), &[]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stored(&selfmon).await, 1);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_and_event_bodies_are_counted_and_weighed_before_they_are_decoded() {
    let workdir = Workdir::new("[ingest]\nmax_items = 50000\nmemory = \"8 MiB\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let traces = format!("{}/v1/traces", selfmon.url);
    let protobuf = ("content-type", "application/x-protobuf");
    let gzipped = ("content-encoding", "gzip");

    // More spans than a request may hold: refused by count, as OTLP refuses (a google.rpc.Status).
    let (status, _, body) = post(&traces, gzip(&empty_spans(60_000)), &[protobuf, gzipped]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 50000 spans (`[ingest] max_items`)"), "{body}");

    // Fewer, but more than the ingest memory once decoded: 40 000 empty spans are 80 KB on the wire.
    let bomb = empty_spans(40_000);
    assert!(bomb.len() < 100_000);
    let (status, _, body) = post(&traces, gzip(&bomb), &[protobuf, gzipped]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than `[ingest] memory` (8.0 MiB)"), "{body}");

    // The same in OTLP JSON, where `{}` is a span.
    let spans = vec!["{}"; 40_000].join(",");
    let json = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    let (status, _, body) =
        post(&traces, gzip(json.as_bytes()), &[("content-type", "application/json"), gzipped]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("`[ingest] memory`"), "{body}");

    // OTLP logs on /v1/logs, and events, the same way.
    let (status, _, body) =
        post(&format!("{}/v1/logs", selfmon.url), gzip(&empty_spans(40_000)), &[protobuf, gzipped]).await;
    assert_eq!(status, 413, "{body}");
    let events = format!("[{}]", vec!["{}"; 10_001].join(","));
    let (status, _, body) = post(&format!("{}/v1/events", selfmon.url), events.into_bytes(), &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 10000 events"), "{body}");
    let nested = format!("[[{}]]", vec!["0"; 200_000].join(","));
    let (status, _, body) = post(&format!("{}/v1/events", selfmon.url), gzip(nested.as_bytes()), &[gzipped]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("`[ingest] memory`"), "{body}");

    // Nothing of them was stored, and a real export still goes through.
    let (_, found) = selfmon.get("/v1/traces").await;
    assert_eq!(found["traces"].as_array().map(Vec::len), Some(0), "{found}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: "GET /users".into(),
        start_time_unix_nano: now - 2_000_000,
        end_time_unix_nano: now,
        ..Span::default()
    };
    let export = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    };
    let (status, _, body) = post(&traces, gzip(&export.encode_to_vec()), &[protobuf, gzipped]).await;
    assert_eq!(status, 200, "{body}");
    let (status, trace): (_, Value) = selfmon.get(&format!("/v1/traces/{}", "07".repeat(16))).await;
    assert_eq!(status, 200, "{trace}");
    selfmon.stop().await;
}

/// Connect `count` clients that send nothing, or half a request's headers, and never the rest.
async fn silent_clients(address: &str, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut clients = Vec::with_capacity(count);
    for n in 0..count {
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        if n % 2 == 1 {
            tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        clients.push(client);
    }
    clients
}

/// Whether the server has closed `client` within `wait`: what it read (perhaps an answer) ends.
async fn closed_within(client: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut sink = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(client, &mut sink);
    tokio::time::timeout(wait, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_half_open_connections_are_closed_and_health_answers_meanwhile() {
    let workdir = Workdir::new("[server]\nheader_timeout = \"2s\"\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let address = selfmon.url.trim_start_matches("http://").to_string();
    let mut clients = silent_clients(&address, 2000).await;

    // Two thousand clients hold connections and send nothing useful; /health answers at once all the same.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    for _ in 0..5 {
        assert_eq!(client.get(format!("{}/health", selfmon.url)).send().await.unwrap().status(), 200);
    }
    // Each is closed once it has been silent for `[server] header_timeout`.
    for silent in &mut clients {
        assert!(closed_within(silent, Duration::from_secs(10)).await, "a silent connection was kept open");
    }
    // A kept connection that goes quiet between requests is closed the same way.
    let mut kept = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut kept, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut kept, &mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await, "an idle kept connection stayed open");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_closed_at_once() {
    let workdir = Workdir::new("[server]\nheader_timeout = \"3s\"\nmax_connections = 20\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let address = selfmon.url.trim_start_matches("http://").to_string();
    let mut held = silent_clients(&address, 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut one_more = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut one_more, Duration::from_secs(1)).await, "a connection past the cap was kept");
    // The held ones are still open (their header time is not up) ...
    let mut sink = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut held[0], &mut sink);
    assert!(tokio::time::timeout(Duration::from_millis(300), read).await.is_err(), "a held connection was closed");
    // ... and once they are closed, new clients are served again.
    for silent in &mut held {
        assert!(closed_within(silent, Duration::from_secs(10)).await);
    }
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/health", selfmon.url)).send().await.unwrap().status(), 200);
    selfmon.stop().await;
}

/// A webhook receiver on loopback: every notification's JSON, in order of arrival; and its URL.
async fn notifications() -> (Arc<Mutex<Vec<Value>>>, String) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let kept = kept.clone();
            async move { kept.lock().unwrap().push(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, url)
}

/// Wait until `received` holds a notification of `status` for the rule `storage_full`.
async fn storage_full_notified(received: &Mutex<Vec<Value>>, status: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found = received.lock().unwrap().iter().any(|n| {
            n["status"] == status
                && n["alerts"].as_array().is_some_and(|alerts| {
                    alerts.iter().any(|a| a["labels"]["alertname"] == "storage_full" && a["status"] == status)
                })
        });
        if found {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {status} storage_full notification: {received:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` JSON lines of about 400 bytes, numbered from `first`.
fn filler(first: usize, count: usize) -> Vec<u8> {
    (first..first + count)
        .map(|n| format!("{{\"level\":\"info\",\"msg\":\"filler {n} {}\"}}\n", "lorem ipsum dolor ".repeat(20)))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_refuses_ingestion_keeps_checking_alerts_and_resumes_by_itself() {
    let target = Target::start().await;
    let (received, hooks) = notifications().await;
    let config = format!(
        r#"
[storage]
size_limit = "2MiB"

[alerting]
interval = "1s"
group_wait = "0s"
group_interval = "1s"
default_channels = ["receiver"]

[[check]]
name = "api"
plugin = "http"
interval = "1s"
target = "{}"

[[channel]]
name = "receiver"
kind = "webhook"
url = "{hooks}"

[[log_source]]
name = "app"
kind = "file"
paths = ["{{workdir}}/logs/app.log"]
poll = "100ms"
"#,
        target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let logs = workdir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.first_result("api").await;
    let url = format!("{}/v1/logs", selfmon.url);

    // Filled to `size_limit` (the database may not grow past it, as on a full disk).
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 200 * 100, "2 MiB never filled");
        let (status, retry_after, body) = post(&url, filler(accepted, 100), &[]).await;
        if status == 202 {
            accepted += 100;
            continue;
        }
        break (status, retry_after, body);
    };
    assert_eq!(refusal.0, 507, "{refusal:?}");
    assert_eq!(refusal.1.as_deref(), Some("30"), "{refusal:?}");
    let body: Value = serde_json::from_str(&refusal.2).unwrap();
    assert_eq!(body["error"]["code"], "storage_full", "{body}");

    // Served and checking meanwhile; the alert goes out though it cannot be stored.
    let (status, _) = selfmon.get("/health").await;
    assert_eq!(status, 200);
    let before = selfmon.check("api").await["last_run"].clone();
    selfmon.wait_for("api", "another run", |s| s["last_run"] != before && s["status"] == "healthy").await;
    storage_full_notified(&received, "firing").await;
    let metrics = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("selfmon_storage_full 1"), "{metrics}");
    // What was refused is not counted as stored: the count is no more than the records stored (read after it).
    let counted: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("selfmon_log_records_total{level=\"info\"} "))
        .map_or(0, |n| n.parse().unwrap());
    let db = workdir.db();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let stored_info: i64 = db.query_row("SELECT COUNT(*) FROM logs WHERE level = 'info'", [], |r| r.get(0)).unwrap();
    assert!(
        counted >= i64::try_from(accepted).unwrap() && counted <= stored_info,
        "{counted} counted, {stored_info} stored"
    );

    // Lines written to a tailed file while the store is full, and the file then renamed to a name its source does
    // not match (rotation), wait for room: they are read through the handle the tailer keeps.
    let tailed: String =
        (0..20).map(|n| format!("{{\"msg\":\"tailed while full {n} {}\"}}\n", "x".repeat(2000))).collect();
    std::fs::write(logs.join("app.log"), tailed).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::rename(logs.join("app.log"), logs.join("app.log.1")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nothing that was accepted is lost.
    let count = |db: &rusqlite::Connection| {
        db.query_row("SELECT COUNT(*) FROM logs WHERE message LIKE 'filler %'", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    assert_eq!(count(&db), i64::try_from(accepted).unwrap());

    // Room again (as retention would make it): writing resumes by itself, and the alert resolves.
    db.execute("DELETE FROM logs WHERE message LIKE 'filler %'", []).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _, body) = post(&url, filler(1_000_000, 10), &[]).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 507, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "writing never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    storage_full_notified(&received, "resolved").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let tailed = || {
        db.query_row("SELECT COUNT(*) FROM logs WHERE message LIKE 'tailed while full %'", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    while tailed() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "the tailed lines were lost: {} stored", tailed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tailed(), 20);
    selfmon.stop().await;
}

/// `count` records of about 1 KiB at `ts`, each of its own words (so the full-text index grows with them).
fn old_records(first: usize, count: usize, ts: std::time::SystemTime) -> Vec<selfmon::logs::NewRecord> {
    (first..first + count)
        .map(|n| {
            let words: Vec<String> = (0..120).map(|w| format!("w{}", (n * 131 + w * 7) % 50_021)).collect();
            selfmon::logs::NewRecord::plain(ts, "info", "test".into(), format!("record {n} {}", words.join(" ")))
        })
        .collect()
}

/// A store at `[storage] size_limit` frees room by itself: the cleanup's deletions (which write to the full-text
/// index before they free anything) still fit, by retention and by `[retention] max_size` alike, and writing
/// resumes afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn the_cleanup_makes_room_in_a_store_at_its_size_limit() {
    use bytesize::ByteSize;
    use selfmon::config::RetentionConfig;
    use selfmon::storage::{Storage, StorageError};
    use std::time::SystemTime;

    let stop = tokio_util::sync::CancellationToken::new();
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for by_size in [false, true] {
        let workdir = Workdir::new("", &[]);
        let storage = Storage::open(&workdir.path().join("selfmon.db")).unwrap();
        storage.limit_size(Some(2 << 20)).await.unwrap();
        let mut accepted = 0;
        loop {
            assert!(accepted < 100_000, "2 MiB never filled");
            match storage.write_logs(old_records(accepted, 50, day_ago), None).await {
                Ok(n) => accepted += n,
                Err(StorageError::Full(_)) => break,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(storage.is_full());
        let config = if by_size {
            RetentionConfig { max_size: Some(ByteSize::b(1 << 20)), ..RetentionConfig::default() }
        } else {
            RetentionConfig { logs: Duration::from_secs(3600), ..RetentionConfig::default() }
        };
        let swept = selfmon::ops::retention::sweep(&storage, &config, &stop).await;
        let removed = if by_size { swept.swept.logs_over_size } else { swept.swept.logs_expired };
        assert!(swept.failed.is_empty(), "by size: {by_size}: {:?}", swept.failed);
        assert!(removed > 0 && (by_size || removed == accepted as u64), "by size {by_size}: {swept:?} of {accepted}");
        storage.write_logs(old_records(accepted, 50, SystemTime::now()), None).await.unwrap();
        storage.close().await.unwrap();
    }
}

/// A step of the cleanup that fails does not keep the later ones from running: expired log records that cannot be
/// deleted (their full-text index is gone) leave expired events to be deleted all the same, and the failure is
/// reported with its step.
#[tokio::test(flavor = "multi_thread")]
async fn a_cleanup_step_that_fails_leaves_the_others_to_run() {
    use selfmon::config::RetentionConfig;
    use selfmon::storage::Storage;
    use std::time::SystemTime;

    let workdir = Workdir::new("", &[]);
    let storage = Storage::open(&workdir.path().join("selfmon.db")).unwrap();
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    storage.write_logs(old_records(0, 10, day_ago), None).await.unwrap();
    let old = selfmon::storage::to_millis(day_ago);
    storage
        .apply(move |db| {
            for n in 0..7 {
                db.execute("INSERT INTO events (ts, kind, action) VALUES (?1, 'user_activity', 'message')", [old + n])?;
            }
            db.execute_batch("DROP TABLE logs_fts")
        })
        .await
        .unwrap();
    let config =
        RetentionConfig { logs: Duration::from_secs(3600), events: Duration::from_secs(3600), ..Default::default() };
    let sweep = selfmon::ops::retention::sweep(&storage, &config, &tokio_util::sync::CancellationToken::new()).await;
    let failed: Vec<&str> = sweep.failed.iter().map(|(step, _)| *step).collect();
    assert_eq!(failed, ["expired logs"], "{sweep:?}");
    assert!(sweep.failed[0].1.to_string().contains("logs_fts"), "{sweep:?}");
    assert_eq!((sweep.swept.logs_expired, sweep.swept.events), (0, 7), "{sweep:?}");
    storage.close().await.unwrap();
}

/// A burst of reads keeps no more than `READERS` connections to the database open: reads past that many wait for a
/// turn instead of each opening a connection (with its page cache) that stays open afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_reads_leaves_a_bounded_number_of_connections() {
    let workdir = Workdir::new("[api]\nrate_limit = 0\n", &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let (status, _, body) = post(&format!("{}/v1/logs", selfmon.url), filler(0, 2000), &[]).await;
    assert_eq!(status, 202, "{body}");
    let database = workdir.path().join("selfmon.db").canonicalize().unwrap();
    let connections = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| *target == database)
            .count()
    };
    let client = reqwest::Client::new();
    let searches = (0..400).map(|n| {
        let url = format!("{}/v1/logs?q=filler%20{n}&limit=5", selfmon.url);
        let client = client.clone();
        async move { client.get(url).send().await.map(|answer| answer.status().as_u16()) }
    });
    let answers = futures_util::future::join_all(searches).await;
    assert!(answers.iter().all(|answer| matches!(answer, Ok(200))), "{answers:?}");
    // The writer's connection, and the readers'.
    let open = connections();
    assert!((2..=1 + selfmon::storage::READERS).contains(&open), "{open} connections to the database");
    selfmon.stop().await;
}
