//! Scale-out, on this one machine (so the shape of the numbers is the point, not their size):
//!
//! 1. Log ingestion: POSTERS clients post JSON batches of BATCH lines over HTTP for WINDOW, spread over the nodes;
//!    lines a second acknowledged (a 202 comes once the lines are committed). One node on SQLite, one node on
//!    PostgreSQL, three nodes on PostgreSQL.
//! 2. Check runs: CHECKS `http` checks of a local server every second, shared out among the nodes; runs a second
//!    over WINDOW, counted by the nodes' own `/v1/status`, in the same three set-ups.
//! 3. Search latency on a million stored lines on each engine: a word, a word with filters, a phrase.
//!
//! PostgreSQL is a throwaway server this benchmark starts from `initdb` (scripts/setup installs it) and stops.
//! `cargo bench -p selfmon --bench cluster`; `SELFMON_BENCH_LINES` sets the search store's size (default 1 000 000).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ports::free_port;
use programs::{as_server_user, program, running_as_root};
use selfmon::config::Secret;
use selfmon::logs::NewRecord;
use selfmon::logs::search::Search;
use selfmon::storage::Storage;

#[path = "../integration/support/ports.rs"]
mod ports;
#[path = "../integration/support/programs.rs"]
mod programs;
mod support;

const POSTERS: usize = 8;
const BATCH: usize = 500;
const CHECKS: usize = 2000;
const WINDOW: Duration = Duration::from_secs(20);
/// Written to a search store at a time.
const CHUNK: usize = 10_000;

fn main() {
    // reqwest, as selfmon builds it, takes the process's TLS provider: selfmon's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lines: usize = std::env::var("SELFMON_BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(run(lines));
}

async fn run(lines: usize) {
    let postgres = Postgres::start();
    let target = local_target().await;
    let scratch = tempfile::tempdir().unwrap();
    println!("set-up              ingest lines/s   check runs/s");
    for (name, nodes) in [("1 node, SQLite", 0), ("1 node, PostgreSQL", 1), ("3 nodes, PostgreSQL", 3)] {
        let url = (nodes > 0).then(|| postgres.database());
        let ingest = {
            let started = start_nodes(scratch.path(), url.as_deref(), nodes.max(1), "").await;
            let rate = ingest(&started).await;
            drop(started);
            rate
        };
        let url = (nodes > 0).then(|| postgres.database());
        let checks = check_config(&target);
        let started = start_nodes(scratch.path(), url.as_deref(), nodes.max(1), &checks).await;
        let runs = check_runs(&started).await;
        drop(started);
        println!("{name:<20}{ingest:>15.0}{runs:>15.0}");
    }

    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = Storage::open(&sqlite_dir.path().join("search.db")).unwrap();
    let pg = Storage::connect(&Secret::new(postgres.database()), |_| Err(std::io::ErrorKind::NotFound.into()))
        .await
        .unwrap();
    for (engine, store) in [("SQLite", &sqlite), ("PostgreSQL", &pg)] {
        let started = Instant::now();
        fill(store, lines).await;
        let took = started.elapsed();
        println!(
            "{engine}: {lines} lines stored in {:.1} s ({:.0} lines/s)",
            took.as_secs_f64(),
            lines as f64 / took.as_secs_f64()
        );
        let word = Search { text: Some("checkout".into()), limit: 100, ..Search::default() };
        let filtered = Search { levels: vec!["error".into()], service: Some("shop".into()), ..word.clone() };
        let phrase = Search { text: Some("\"payment declined\"".into()), ..word.clone() };
        for (what, search) in [("word", &word), ("word, level and service", &filtered), ("phrase", &phrase)] {
            let (median, slowest, found) = support::search_latency(store, search, 21).await;
            println!(
                "  search {what}: {:.2} ms median, {:.2} ms slowest ({found} records)",
                median.as_secs_f64() * 1000.0,
                slowest.as_secs_f64() * 1000.0
            );
        }
    }
    sqlite.close().await.unwrap();
    pg.close().await.unwrap();
}

/// A throwaway PostgreSQL on a free loopback port, in a temporary directory; stopped when dropped.
struct Postgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    next: AtomicU64,
}

impl Postgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the server's directory to the postgres user");
        }
        let data = dir.path().join("data");
        let initdb = as_server_user(&program("initdb"))
            .args(["-D", &data.display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(initdb.success(), "initdb failed");
        let port = free_port();
        let child = as_server_user(&program("postgres"))
            .args(["-D", &data.display().to_string(), "-p", &port.to_string(), "-k", &dir.path().display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=400", "-c", "shared_buffers=256MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let postgres = Self { child, port, _dir: dir, next: AtomicU64::new(0) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !postgres.psql("SELECT 1") {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        postgres
    }

    fn psql(&self, sql: &str) -> bool {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        Command::new(program("psql"))
            .args([url.as_str(), "-X", "-q", "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A new database: its URL.
    fn database(&self) -> String {
        let name = format!("bench_{}", self.next.fetch_add(1, Ordering::SeqCst));
        assert!(self.psql(&format!("CREATE DATABASE {name}")));
        format!("postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

/// A server on loopback answering `GET /ok` with 200, for the checks.
async fn local_target() -> String {
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ok", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn check_config(target: &str) -> String {
    let mut config = "[scheduler]\nmax_concurrent = 256\n\n".to_string();
    for i in 0..CHECKS {
        config.push_str(&format!(
            "[[check]]\nname = \"c{i:04}\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{target}\"\n\n"
        ));
    }
    config
}

/// selfmon processes, stopped when dropped; their API URLs.
struct Nodes {
    children: Vec<Child>,
    apis: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// `count` nodes on `url` (SQLite when `None`), each with `extra` in its config, once all answer.
async fn start_nodes(scratch: &Path, url: Option<&str>, count: usize, extra: &str) -> Nodes {
    let cache = scratch.join("plugin-cache");
    let mut nodes = Nodes { children: Vec::new(), apis: Vec::new(), _dirs: Vec::new() };
    for index in 0..count {
        let dir = tempfile::tempdir_in(scratch).unwrap();
        let port = free_port();
        let storage = match url {
            Some(url) => format!("[storage]\nurl = {url:?}\n\n[privacy]\nkey = \"bench-privacy-key-0123456789\"\n\n"),
            None => "[storage]\npath = \"selfmon.db\"\n\n".into(),
        };
        let config = format!(
            "{storage}[cluster]\nnode = \"node-{index}\"\n\n[server]\napi_listen = \"127.0.0.1:{port}\"\n\n\
             [plugins]\ncache_dir = {:?}\n\n[system]\nenabled = false\n\n[dashboard]\nenabled = false\n\n\
             [api]\nrate_limit = 0\nmax_body = \"16 MiB\"\n\n{extra}",
            cache.display().to_string()
        );
        std::fs::write(dir.path().join("selfmon.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_selfmon"))
            .arg("serve")
            .current_dir(dir.path())
            .env("SELFMON_CONFIG", dir.path().join("selfmon.toml"))
            .env("SELFMON_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        nodes.children.push(child);
        nodes.apis.push(format!("http://127.0.0.1:{port}"));
        nodes._dirs.push(dir);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for api in &nodes.apis {
        while reqwest::get(format!("{api}/health")).await.is_err() {
            assert!(Instant::now() < deadline, "selfmon did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    nodes
}

/// Lines a second acknowledged by the nodes over WINDOW.
async fn ingest(nodes: &Nodes) -> f64 {
    let acknowledged = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut posters = tokio::task::JoinSet::new();
    for poster in 0..POSTERS {
        let url = format!("{}/v1/logs?service=shop", nodes.apis[poster % nodes.apis.len()]);
        let (client, acknowledged) = (client.clone(), acknowledged.clone());
        posters.spawn(async move {
            let mut batch_number = 0usize;
            while started.elapsed() < WINDOW {
                let body: Vec<serde_json::Value> = (0..BATCH)
                    .map(|i| {
                        let n = batch_number * BATCH + i;
                        serde_json::json!({"level": if n.is_multiple_of(10) { "error" } else { "info" }, "msg": message(n), "user_id": (n % 5000).to_string()})
                    })
                    .collect();
                batch_number += 1;
                if let Ok(response) = client.post(&url).json(&body).send().await
                    && response.status().as_u16() == 202
                {
                    acknowledged.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            }
        });
    }
    while posters.join_next().await.is_some() {}
    acknowledged.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The nodes' check runs so far, from their `/v1/status`.
async fn runs_so_far(nodes: &Nodes) -> u64 {
    let mut total = 0;
    for api in &nodes.apis {
        let status: serde_json::Value = reqwest::get(format!("{api}/v1/status")).await.unwrap().json().await.unwrap();
        total += status["scheduler"]["runs"].as_u64().unwrap_or(0);
    }
    total
}

/// Check runs a second over WINDOW, after the checks are shared out and have warmed up.
async fn check_runs(nodes: &Nodes) -> f64 {
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (before, started) = (runs_so_far(nodes).await, Instant::now());
    tokio::time::sleep(WINDOW).await;
    (runs_so_far(nodes).await - before) as f64 / started.elapsed().as_secs_f64()
}

/// A varied message, as a shop's service logs them.
fn message(n: usize) -> String {
    let actions =
        ["checkout started", "payment declined by the bank", "cart updated", "checkout completed", "session closed"];
    format!(
        "order {} {} for user {} in {} ms",
        n / 7,
        actions[n % actions.len()],
        1000 + (n * 7919) % 50_000,
        (n * 31) % 2000
    )
}

/// `lines` records written to `store`, over the past day.
async fn fill(store: &Storage, lines: usize) {
    let now = SystemTime::now();
    for start in (0..lines).step_by(CHUNK) {
        let records: Vec<NewRecord> = (start..(start + CHUNK).min(lines))
            .map(|n| {
                let ts = now - Duration::from_millis(((lines - n) as u64 * 86_400_000) / lines as u64);
                let level = if n.is_multiple_of(10) { "error" } else { "info" };
                let mut record = NewRecord::plain(ts, level, "bench".into(), message(n));
                record.service = Some(if n.is_multiple_of(3) { "shop" } else { "bot" }.into());
                record
            })
            .collect();
        store.write_logs(records, None).await.unwrap();
    }
}
