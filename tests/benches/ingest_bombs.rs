//! Memory under hostile ingestion: the `selfmon` binary, with the default config, takes rounds of eight parallel
//! posts of about 65 KB that inflate or decode into far more, while `/health` is asked every 10 ms:
//!
//! 1. `POST /v1/logs`, gzip of 64 MiB of line breaks (64 million empty lines once split);
//! 2. `POST /v1/traces`, gzip of 32 million empty spans in protobuf (two bytes each);
//! 3. `POST /v1/traces`, 400 000 empty spans in plain protobuf, within `[api] max_body`.
//!
//! The rate limit is off, as every request comes from one address. Printed: the answers' statuses, the slowest `/health`, and selfmon's resident memory at rest and at its peak
//! (`VmHWM`). `cargo bench -p selfmon --bench ingest_bombs`; `SELFMON_BENCH_ROUNDS` sets the rounds (default 5).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn main() {
    // reqwest, as selfmon builds it, takes the process's TLS provider: selfmon's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::var("SELFMON_BENCH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(rounds));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn empty_spans(count: usize) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); count], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// A line of `/proc/PID/status`, in MiB.
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

async fn run(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("selfmon.toml"),
        // The rate limit off: every request here comes from one address.
        format!(
            "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[api]\nrate_limit = 0\n\n[dashboard]\nenabled = false\n"
        ),
    )
    .unwrap();
    let child = Serving(
        std::process::Command::new(env!("CARGO_BIN_EXE_selfmon"))
            .args(["--config", "selfmon.toml", "serve"])
            .current_dir(dir.path())
            .env("SELFMON_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{url}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "selfmon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_rest = memory_mib(child.0.id(), "VmRSS:");

    let bombs = [
        ("logs: gzip of 64 MiB of line breaks", "/v1/logs", "application/json", gzip(&vec![b'\n'; 64 << 20]), true),
        (
            "traces: gzip of 32 M empty spans",
            "/v1/traces",
            "application/x-protobuf",
            gzip(&empty_spans(32 << 20)),
            true,
        ),
        ("traces: 400 000 empty spans, plain", "/v1/traces", "application/x-protobuf", empty_spans(400_000), false),
    ];
    // /health, every 10 ms, until the bombs are done.
    let done = tokio_util::sync::CancellationToken::new();
    let prober = {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut asked = 0;
            while !done.is_cancelled() {
                let started = Instant::now();
                let answer = client.get(format!("{url}/health")).send().await.unwrap();
                assert_eq!(answer.status(), 200);
                slowest = slowest.max(started.elapsed());
                asked += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (slowest, asked)
        })
    };
    let started = Instant::now();
    for (name, path, content_type, body, gzipped) in &bombs {
        println!("{name}: {} KB on the wire", body.len() / 1000);
        let mut statuses = BTreeMap::new();
        for _ in 0..rounds {
            let posts: Vec<_> = (0..8)
                .map(|_| {
                    let mut request =
                        client.post(format!("{url}{path}")).header("content-type", *content_type).body(body.clone());
                    if *gzipped {
                        request = request.header("content-encoding", "gzip");
                    }
                    tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
                })
                .collect();
            for post in posts {
                *statuses.entry(post.await.unwrap()).or_insert(0) += 1;
            }
        }
        println!("  answers: {statuses:?}");
    }
    done.cancel();
    let (slowest, asked) = prober.await.unwrap();
    println!(
        "{} rounds of 8 in {:.1} s; /health asked {asked} times meanwhile, slowest {:.1} ms",
        rounds,
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    println!(
        "selfmon's resident memory: {at_rest:.0} MiB at rest, {:.0} MiB at its peak",
        memory_mib(child.0.id(), "VmHWM:")
    );
}

/// The server, stopped when the benchmark ends, however it ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
