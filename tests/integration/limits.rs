//! Bounded ingestion: bodies that inflate or decode into far more than they weigh on the wire are refused before they
//! are decoded, on every ingest route, and selfmon keeps answering meanwhile.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

use crate::support::{Selfmon, Workdir, gzip};

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
