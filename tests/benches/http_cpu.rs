//! CPU per HTTP check: selfmon (the built-in `http` plugin in its sandbox, results stored in SQLite) and Prometheus'
//! blackbox_exporter probing the same loopback target at the same rate, side by side in one run.
//!
//! `scripts/bench` (or `cargo bench --bench http_cpu` with `prometheus-blackbox-exporter` installed). Both run as
//! their own processes; CPU is read from /proc for each. blackbox_exporter is driven the way Prometheus drives it:
//! one `/probe` request per target per interval, from this process (whose CPU is not counted).
//! `SELFMON_BENCH_TARGETS` (default 20, one probe per target per second) and `SELFMON_BENCH_SECONDS` (default 60)
//! set the load and the measuring window.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use ports::free_port;

#[path = "../integration/support/ports.rs"]
mod ports;

const BLACKBOX: &str = "prometheus-blackbox-exporter";

fn main() {
    // reqwest, as selfmon builds it, takes the process's TLS provider: selfmon's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `cargo bench` passes harness flags such as `--bench`; this benchmark takes none.
    let targets: usize = env_or("SELFMON_BENCH_TARGETS", 20);
    let seconds: u64 = env_or("SELFMON_BENCH_SECONDS", 60);
    if Command::new(BLACKBOX).arg("--version").stderr(Stdio::null()).stdout(Stdio::null()).status().is_err() {
        eprintln!(
            "error: `{BLACKBOX}` is not installed (Debian package prometheus-blackbox-exporter; scripts/bench installs it)"
        );
        std::process::exit(1);
    }
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(run(targets, seconds));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Requests the target received, by the first word of the client's User-Agent.
type Hits = Arc<Mutex<HashMap<String, u64>>>;

async fn run(targets: usize, seconds: u64) {
    let hits: Hits = Arc::default();
    let counted = hits.clone();
    let app = Router::new().route(
        "/ok",
        get(move |headers: HeaderMap| {
            let hits = counted.clone();
            async move {
                let agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("none");
                let client = agent.split(['/', ' ']).next().unwrap_or("none").to_lowercase();
                *hits.lock().unwrap().entry(client).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/ok", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let selfmon_port = free_port();
    let mut config = format!(
        "[server]\napi_listen = \"127.0.0.1:{selfmon_port}\"\n[storage]\npath = \"selfmon.db\"\n[plugins]\ncache_dir = \"cache\"\n[system]\nenabled = false\n[scheduler]\nmax_concurrent = {targets}\n"
    );
    for i in 0..targets {
        config.push_str(&format!(
            "[[check]]\nname = \"target-{i}\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{target}\"\n"
        ));
    }
    std::fs::write(dir.path().join("selfmon.toml"), config).unwrap();
    let selfmon = Command::new(env!("CARGO_BIN_EXE_selfmon"))
        .args(["serve", "--config"])
        .arg(dir.path().join("selfmon.toml"))
        .env("SELFMON_LOG", "warn")
        .spawn()
        .unwrap();
    let selfmon = Guard(selfmon);

    let blackbox_port = free_port();
    std::fs::write(
        dir.path().join("blackbox.yml"),
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n",
    )
    .unwrap();
    let blackbox = Command::new(BLACKBOX)
        .arg(format!("--config.file={}", dir.path().join("blackbox.yml").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{blackbox_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let blackbox = Guard(blackbox);
    wait_for(&format!("http://127.0.0.1:{selfmon_port}/health")).await;
    wait_for(&format!("http://127.0.0.1:{blackbox_port}/-/healthy")).await;

    // Prometheus' side: every target scraped once a second through /probe.
    let probe = format!("http://127.0.0.1:{blackbox_port}/probe?module=http_2xx&target={target}");
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / targets as u32);
        loop {
            tick.tick().await;
            let client = client.clone();
            let probe = probe.clone();
            tokio::spawn(async move {
                let body = client.get(&probe).send().await.unwrap().text().await.unwrap();
                assert!(body.contains("probe_success 1"), "blackbox probe failed: {body}");
            });
        }
    });

    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = (cpu_seconds(&selfmon.0), cpu_seconds(&blackbox.0), hits.lock().unwrap().clone());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = (cpu_seconds(&selfmon.0), cpu_seconds(&blackbox.0), hits.lock().unwrap().clone());

    let probes = |who: &str| after.2.get(who).copied().unwrap_or(0) - before.2.get(who).copied().unwrap_or(0);
    let (selfmon_probes, blackbox_probes) = (probes("selfmon"), probes("blackbox"));
    let selfmon_cpu = after.0 - before.0;
    let blackbox_cpu = after.1 - before.1;
    let per_probe = |cpu: f64, n: u64| cpu * 1000.0 / n.max(1) as f64;
    println!("CPU per HTTP check, {targets} targets once a second, {seconds} s window");
    println!("{:<22} {:>8} {:>12} {:>16}", "", "probes", "CPU (s)", "CPU/probe (ms)");
    println!(
        "{:<22} {:>8} {:>12.2} {:>16.3}",
        "selfmon",
        selfmon_probes,
        selfmon_cpu,
        per_probe(selfmon_cpu, selfmon_probes)
    );
    println!(
        "{:<22} {:>8} {:>12.2} {:>16.3}",
        "blackbox_exporter",
        blackbox_probes,
        blackbox_cpu,
        per_probe(blackbox_cpu, blackbox_probes)
    );
    println!(
        "selfmon uses {:.2}x blackbox_exporter's CPU per probe",
        per_probe(selfmon_cpu, selfmon_probes) / per_probe(blackbox_cpu, blackbox_probes)
    );
}

/// Kills the process when dropped, so a failed benchmark leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(url: &str) {
    for _ in 0..600 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// User plus system CPU time of a process so far, from /proc/PID/stat.
fn cpu_seconds(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(100.0)
}
