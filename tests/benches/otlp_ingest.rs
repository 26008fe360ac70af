//! Spans and privacy.
//!
//! 1. OTLP/HTTP trace exports over real loopback HTTP into selfmon (served in-process, privacy on by default):
//!    exports of 512 spans each (the OpenTelemetry SDKs' default batch), protobuf and gzip as the SDKs send them,
//!    from 4 clients at once, a quarter of the spans GenAI calls that also become priced AI usage events. Spans a
//!    second until every one is committed, and the time to answer a trace tree and a trace search afterwards.
//! 2. What privacy costs per log record: the default redaction patterns over realistic messages (most with nothing
//!    to redact, some with an email, phone number or token), and pseudonymizing a user id.
//!
//! `cargo bench -p selfmon --bench otlp_ingest`. `SELFMON_BENCH_SPANS` sets the number of spans (default 200 000).

use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const BATCH: usize = 512;
const CLIENTS: usize = 4;

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

/// One export: requests of 4 spans (a server span, a database call, an AI call, a reply), `BATCH` spans in all.
fn export(first_trace: u64, now: u64) -> Vec<u8> {
    let mut spans = Vec::with_capacity(BATCH);
    for t in 0..(BATCH / 4) as u64 {
        let trace = (first_trace + t).to_be_bytes().repeat(2);
        let start = now - 60_000_000_000 + t * 1_000_000;
        let span = |n: u8, parent: Option<u8>, name: &str, offset: u64, millis: u64, attributes: Vec<KeyValue>| Span {
            trace_id: trace.clone(),
            span_id: vec![n; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: if parent.is_none() { 2 } else { 3 },
            start_time_unix_nano: start + offset * 1_000_000,
            end_time_unix_nano: start + (offset + millis) * 1_000_000,
            attributes,
            ..Span::default()
        };
        let user = format!("tg:{}", 100_000 + (first_trace + t) % 5000);
        spans.push(span(
            1,
            None,
            "handle_message",
            0,
            900,
            vec![attribute("enduser.id", any_value::Value::StringValue(user))],
        ));
        spans.push(span(
            2,
            Some(1),
            "SELECT messages",
            5,
            12,
            vec![attribute("db.system", any_value::Value::StringValue("postgresql".into()))],
        ));
        spans.push(span(
            3,
            Some(1),
            "chat gpt-4o-mini",
            20,
            800,
            vec![
                attribute("gen_ai.system", any_value::Value::StringValue("openai".into())),
                attribute("gen_ai.request.model", any_value::Value::StringValue("gpt-4o-mini".into())),
                attribute("gen_ai.usage.input_tokens", any_value::Value::IntValue(1500)),
                attribute("gen_ai.usage.output_tokens", any_value::Value::IntValue(400)),
            ],
        ));
        spans.push(span(4, Some(1), "send_reply", 830, 60, Vec::new()));
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", any_value::Value::StringValue("coach-bot".into()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &request.encode_to_vec()).unwrap();
    encoder.finish().unwrap()
}

fn main() {
    // reqwest, as selfmon builds it, takes the process's TLS provider: selfmon's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spans: usize = std::env::var("SELFMON_BENCH_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(ingest(spans));
    privacy();
}

async fn ingest(spans: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[storage]\npath = {:?}\n\n[plugins]\ncache_dir = {:?}\n\n[system]\nenabled = false\n\n[api]\nrate_limit = 0\nmax_body = \"8 MiB\"\n",
        dir.path().join("selfmon.db").display().to_string(),
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache").display().to_string(),
    );
    let config = selfmon::config::Config::parse(&config, Some(&dir.path().join("selfmon.toml"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(selfmon::app::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    while client.get(format!("{url}/health")).send().await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let now =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    let exports = spans / BATCH;
    // Trace ids from 1: an all-zero one is invalid.
    let bodies: Vec<Vec<u8>> = (0..exports).map(|e| export(1 + (e * BATCH / 4) as u64, now)).collect();
    let started = Instant::now();
    let mut senders = Vec::new();
    for client_index in 0..CLIENTS {
        let mine: Vec<Vec<u8>> = bodies.iter().skip(client_index).step_by(CLIENTS).cloned().collect();
        let (client, url) = (client.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            for body in mine {
                loop {
                    let response = client
                        .post(format!("{url}/v1/traces"))
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "gzip")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => break,
                        503 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                        other => panic!("export answered {other}"),
                    }
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let took = started.elapsed();
    let sent = exports * BATCH;
    println!(
        "OTLP trace ingestion: {sent} spans in {exports} gzip protobuf exports from {CLIENTS} clients: {:.2} s, {:.0} spans/s \
         ({:.0} AI usage events/s alongside)",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        (sent / 4) as f64 / took.as_secs_f64()
    );

    let trace_id = format!("{:016x}{:016x}", 7u64, 7u64);
    let started = Instant::now();
    let answer: serde_json::Value =
        client.get(format!("{url}/v1/traces/{trace_id}")).send().await.unwrap().json().await.unwrap();
    println!("  a trace tree: {:.1} ms ({} spans)", started.elapsed().as_secs_f64() * 1000.0, answer["span_count"]);
    let started = Instant::now();
    let found: serde_json::Value =
        client.get(format!("{url}/v1/traces?user_id=tg:100007&limit=20")).send().await.unwrap().json().await.unwrap();
    println!(
        "  a search by user among {sent} spans: {:.1} ms ({} traces)",
        started.elapsed().as_secs_f64() * 1000.0,
        found["traces"].as_array().map_or(0, Vec::len)
    );
    let started = Instant::now();
    let performance: serde_json::Value =
        client.get(format!("{url}/v1/performance?time_window=3600")).send().await.unwrap().json().await.unwrap();
    println!(
        "  per-operation profile of the last hour: {:.0} ms ({} operations)",
        started.elapsed().as_secs_f64() * 1000.0,
        performance["operations"].as_array().map_or(0, Vec::len)
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let stored: i64 = rusqlite::Connection::open(dir.path().join("selfmon.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as usize, sent, "every span stored");
}

fn privacy() {
    let dir = tempfile::tempdir().unwrap();
    let privacy = selfmon::storage::Privacy::build(
        &selfmon::config::PrivacyConfig::default(),
        &selfmon::config::Source::default(),
        &|_| None,
        &dir.path().join("privacy.key"),
        selfmon::storage::KeyFile::Make,
    )
    .unwrap();
    let messages: Vec<String> = (0..200_000)
        .map(|i| match i % 10 {
            0 => format!("Reply to user {i} failed for anna.k{i}@example.com"),
            1 => format!("Calling +7 912 345-{:02}-{:02} back", i % 100, (i / 100) % 100),
            2 => format!(
                "POST https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw{}/sendMessage",
                i % 10
            ),
            _ => format!("User {i} message_sent in {} ms (conversation {})", (i * 31) % 2000, i / 13),
        })
        .collect();
    let started = Instant::now();
    let mut redacted = 0usize;
    for message in &messages {
        if let std::borrow::Cow::Owned(_) = privacy.redact(message) {
            redacted += 1;
        }
    }
    let took = started.elapsed();
    println!(
        "Redaction with the default patterns: {} messages ({redacted} redacted) in {:.0} ms: {:.2} µs a message",
        messages.len(),
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1e6 / messages.len() as f64
    );
    let started = Instant::now();
    let mut last = String::new();
    for i in 0..200_000 {
        last = privacy.user(&format!("tg:{i}"));
    }
    assert!(last.starts_with("u_"));
    println!("Pseudonymization: {:.2} µs a user id", started.elapsed().as_secs_f64() * 1e6 / 200_000.0);
}
