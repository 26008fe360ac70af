//! What HTTPS costs on the API (served in-process over loopback, with a P-256 certificate from a CA made here):
//!
//! 1. a new connection: TCP connect, the TLS 1.3 handshake (verified against the CA), `GET /health`, close; and the
//!    same over plain HTTP;
//! 2. a request on a connection kept open, over HTTPS and over plain HTTP.
//!
//! Each is timed one after another from one client; the medians and the rate of new connections are printed.
//! `cargo bench -p selfmon --bench tls`. `SELFMON_BENCH_CONNECTIONS` sets the count (default 2 000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

fn main() {
    let count: usize = std::env::var("SELFMON_BENCH_CONNECTIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(count));
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = tokio_rustls::TlsConnector::from(Arc::new(client));

    let plain = start(&dir, false).await;
    let https = start(&dir, true).await;

    println!("{count} requests, one after another");
    let mut took: [Vec<Duration>; 4] = Default::default();
    for _ in 0..count {
        for (index, tls) in [None, Some(&client)].into_iter().enumerate() {
            let started = Instant::now();
            once(&mut open(if tls.is_some() { https } else { plain }, tls).await).await;
            took[index].push(started.elapsed());
        }
    }
    let mut kept = [open(plain, None).await, open(https, Some(&client)).await];
    for _ in 0..count {
        for (index, sender) in kept.iter_mut().enumerate() {
            let started = Instant::now();
            once(sender).await;
            took[2 + index].push(started.elapsed());
        }
    }
    for (what, took) in [
        "plain HTTP, new connection (connect, GET /health, close)",
        "HTTPS, new connection (with the TLS 1.3 handshake)",
        "plain HTTP, kept connection",
        "HTTPS, kept connection",
    ]
    .into_iter()
    .zip(&took)
    {
        report(what, took);
    }
}

/// selfmon serving on loopback, over TLS with the certificate in `dir` when `tls`; its address.
async fn start(dir: &tempfile::TempDir, tls: bool) -> SocketAddr {
    let name = if tls { "https" } else { "plain" };
    let mut config = format!(
        "[storage]\npath = {:?}\n\n[plugins]\ncache_dir = {:?}\n\n[system]\nenabled = false\n\n[dashboard]\nenabled = false\n\n[api]\nrate_limit = 0\n\n[logging]\nenabled = false\n",
        dir.path().join(format!("{name}.db")).display().to_string(),
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache").display().to_string(),
    );
    if tls {
        config.push_str("\n[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n");
    }
    let config = selfmon::config::Config::parse(&config, Some(&dir.path().join("selfmon.toml"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(selfmon::app::serve(config, listener, std::future::pending()));
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    address
}

/// A connection to `address`, over TLS with `tls`.
async fn open(address: SocketAddr, tls: Option<&tokio_rustls::TlsConnector>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match tls {
        Some(connector) => {
            let stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        }
        None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
    }
}

async fn handshake<T>(io: T) -> Sender
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn once(sender: &mut Sender) {
    let request = http::Request::get("/health").header("host", "localhost").body(Empty::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap();
}

fn report(what: &str, took: &[Duration]) {
    let mut sorted = took.to_vec();
    sorted.sort();
    let total: Duration = took.iter().sum();
    println!(
        "{what:<45} median {:>8.1} µs, p99 {:>8.1} µs, {:>7.0} a second",
        sorted[sorted.len() / 2].as_secs_f64() * 1e6,
        sorted[sorted.len() * 99 / 100].as_secs_f64() * 1e6,
        took.len() as f64 / total.as_secs_f64()
    );
}
