//! `GET /metrics` against the real Prometheus tools: `promtool check metrics` on a live scrape, a real Prometheus
//! server that scrapes selfmon (with a key, when `/metrics` is not public) and finds the target up, and the Grafana
//! dashboard's queries answered by it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use selfmon_plugin_artifacts::guests;

use crate::support::{PATIENCE, Selfmon, Target, Workdir, free_port, serve_binary, signal};

/// A scrape as `series → value`, where a series is written as in the exposition: `name{label="value",…}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("not a value: {line}")))
        })
        .collect()
}

async fn scrape(selfmon: &Selfmon) -> (String, String) {
    let response = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_scrape_passes_promtool_and_counts_runs_failures_and_requests() {
    let target = Target::start().await;
    let config = format!(
        r#"
[system]
enabled = true
interval = "1s"

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "{ok}"

[[check]]
name = "trap"
plugin = "trap"
interval = "1s"

[[check]]
name = "gives-up"
plugin = "noop"
interval = "1s"
[check.config]
fail = "not configured yet"
"#,
        ok = target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[("trap", guests::TRAP), ("noop", guests::NOOP)]);
    let selfmon = Selfmon::start(&workdir).await;
    for name in ["web", "trap", "gives-up"] {
        selfmon.first_result(name).await;
    }
    let (status, _) = selfmon.get("/no/such/page").await;
    assert_eq!(status, 404);

    // The system collector's first sample comes a second after start-up.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (content_type, text) = loop {
        let (content_type, text) = scrape(&selfmon).await;
        if text.contains("\nsystem_memory_total_bytes ") {
            break (content_type, text);
        }
        assert!(tokio::time::Instant::now() < deadline, "no system metrics in the scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup installs Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool found problems:\n{}{}\nin:\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let samples = samples(&text);
    let value = |series: &str| *samples.get(series).unwrap_or_else(|| panic!("`{series}` missing from:\n{text}"));
    assert_eq!(value(r#"selfmon_check_up{check="web",plugin="http"}"#), 1.0);
    assert_eq!(value(r#"selfmon_check_up{check="trap",plugin="trap"}"#), 0.0);
    assert_eq!(value(r#"selfmon_check_status{check="web",plugin="http",status="healthy"}"#), 1.0);
    assert_eq!(value(r#"selfmon_check_status{check="web",plugin="http",status="unhealthy"}"#), 0.0);
    assert_eq!(value(r#"selfmon_check_status{check="trap",plugin="trap",status="unknown"}"#), 1.0);
    assert!(value(r#"selfmon_check_runs_total{check="web",status="healthy"}"#) >= 1.0);
    // The latest run of each check, and what its plugin reported in it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value(r#"selfmon_check_last_run_timestamp_seconds{check="web",plugin="http"}"#);
    assert!((now - 30.0..=now).contains(&started), "{started} is not a moment ago ({now})");
    assert!(value(r#"selfmon_check_last_duration_seconds{check="web",plugin="http"}"#) > 0.0);
    assert_eq!(value(r#"selfmon_check_metric{check="web",plugin="http",metric="http_status_code"}"#), 200.0);
    assert!(value(r#"selfmon_check_metric{check="web",plugin="http",metric="response_time_seconds"}"#) > 0.0);
    assert!(!text.contains(r#"selfmon_check_metric{check="trap""#), "a run that failed reported nothing");
    assert!(value(r#"selfmon_check_duration_seconds_count{check="web"}"#) >= 1.0);
    assert!(value(r#"selfmon_check_duration_seconds_bucket{check="web",le="+Inf"}"#) >= 1.0);
    assert!(value(r#"selfmon_plugin_failures_total{plugin="trap",reason="trap"}"#) >= 1.0);
    assert!(value(r#"selfmon_plugin_failures_total{plugin="noop",reason="plugin_error"}"#) >= 1.0);
    assert_eq!(
        value(r#"selfmon_plugin_failures_total{plugin="http",reason="deadline"}"#),
        0.0,
        "a healthy plugin's failure series exist, at zero"
    );
    assert!(value("selfmon_scheduler_lag_seconds_count") >= 3.0);
    assert!(value("selfmon_storage_commit_seconds_count") >= 1.0);
    assert!(value("selfmon_storage_writes_queued") >= 0.0);
    assert!(value("selfmon_storage_heap_bytes") > 0.0, "the store's open connections hold pages");
    assert!(value("selfmon_c_heap_allocated_bytes") > 0.0, "glibc's heap is read");
    assert!(value(r#"selfmon_http_requests_total{code="404",method="GET",route="unmatched"}"#) >= 1.0);
    assert!(value(r#"selfmon_http_requests_total{code="200",method="GET",route="/v1/health"}"#) >= 1.0);
    assert!(
        !text.contains("/no/such/page"),
        "unknown paths are one `unmatched` route, so scans cannot grow the label set"
    );
    assert_eq!(value(r#"selfmon_build_info{version="0.1.0",contract="0.1.0"}"#), 1.0);
    assert!(value("system_memory_total_bytes") > 0.0);
    assert!((0.0..=1.0).contains(&value("system_memory_used_ratio")));
    assert!(text.contains("# TYPE system_network_received_bytes_total counter"));
    selfmon.stop().await;
}

/// A Prometheus server on loopback with one scrape job, stopped when dropped.
struct PrometheusServer {
    url: String,
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl PrometheusServer {
    fn start(job: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{job}"),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (scripts/setup installs Debian's prometheus package)");
        Self { url: format!("http://127.0.0.1:{port}"), child, _data: data }
    }

    /// The value of an instant query's first result, if it has one yet.
    async fn query(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Whether an instant query answers with at least one series.
    async fn answers(&self, query: &str) -> bool {
        let Ok(response) =
            reqwest::Client::new().get(format!("{}/api/v1/query", self.url)).query(&[("query", query)]).send().await
        else {
            return false;
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["data"]["result"].as_array().is_some_and(|result| !result.is_empty())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_selfmon_with_a_key_and_finds_it_up() {
    let target = Target::start().await;
    let config = format!(
        r#"
[api]
metrics_public = false
keys = [{{ name = "prometheus", key = "scrape-key-0123456789", role = "read" }}]

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "{ok}"
"#,
        ok = target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let (status, body) = selfmon.get("/metrics").await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (401, &serde_json::json!("missing_key")));

    let address = selfmon.url.trim_start_matches("http://");
    let prometheus = PrometheusServer::start(&format!(
        "  - job_name: selfmon\n    authorization:\n      credentials: scrape-key-0123456789\n    \
         static_configs:\n      - targets: [\"{address}\"]\n"
    ));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let up = prometheus.query(r#"up{job="selfmon"}"#).await;
        let web = prometheus.query(r#"selfmon_check_up{job="selfmon",check="web"}"#).await;
        if up == Some(1.0) && web == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never saw selfmon up: up = {up:?}, selfmon_check_up = {web:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Prometheus parsed the histograms into series it can compute with.
    let quantile = prometheus
        .query(r#"histogram_quantile(0.5, sum by (le) (selfmon_check_duration_seconds_bucket{check="web"}))"#)
        .await;
    assert!(quantile.is_some_and(|q| q > 0.0 && q <= 30.0), "median check duration: {quantile:?}");
    drop(prometheus);
    selfmon.stop().await;
}

/// In the binary, SQLite's page caches live in a block of their own (`storage::pages`), not in glibc's heap, where
/// their churn fragmented it: once the writer has cached pages, SQLite holds more than glibc's heap does. (In
/// process, without the block, everything SQLite holds is in glibc's heap.)
#[tokio::test(flavor = "multi_thread")]
async fn the_binarys_sqlite_pages_stay_out_of_glibcs_heap() {
    let port = free_port();
    let workdir = Workdir::new(&format!("[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[api]\nrate_limit = 0\n"), &[]);
    let (mut child, url) = serve_binary(&workdir, port, "warn", Stdio::null()).await;
    let client = reqwest::Client::new();
    for batch in 0..10 {
        let lines: String =
            (0..2_000).map(|n| format!("{{\"level\":\"info\",\"msg\":\"batch {batch} line {n}\"}}\n")).collect();
        let answer = client.post(format!("{url}/v1/logs?service=bot")).body(lines).send().await.unwrap();
        assert_eq!(answer.status(), 202);
    }
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
    let samples = samples(&text);
    let (sqlite, glibc) = (samples["selfmon_storage_heap_bytes"], samples["selfmon_c_heap_allocated_bytes"]);
    assert!(glibc > 0.0, "glibc's heap is read");
    assert!(sqlite > glibc, "SQLite holds {sqlite} bytes, glibc's heap {glibc}: its pages are not in the block");
}

/// The Grafana dashboard the repository ships: every query is PromQL that promtool accepts, names only metrics
/// selfmon serves, and answers with data from a real Prometheus scraping a selfmon with a check up, one down, an
/// alert firing and its notifications delivered.
#[tokio::test(flavor = "multi_thread")]
async fn every_query_of_the_grafana_dashboard_answers_from_a_real_prometheus() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana/selfmon-checks.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            queries.push((panel["title"].as_str().unwrap().to_string(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    assert!(queries.len() >= 10, "the dashboard's panels and queries: {queries:?}");
    // Grafana's variables, as Grafana fills them in for "All" and a short range.
    let filled = |expr: &str| expr.replace("$__rate_interval", "1m").replace("$check", ".*");

    // PromQL promtool accepts: each query as a recording rule.
    let rules = tempfile::NamedTempFile::new().unwrap();
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        text.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::json!(filled(expr))
        ));
    }
    std::fs::write(rules.path(), &text).unwrap();
    let checked = Command::new("promtool").args(["check", "rules"]).arg(rules.path()).output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let target = Target::start().await;
    let (receiver, hook) = crate::support::receiver::AlertReceiver::start(0).await;
    let down = crate::support::closed_port().await;
    let config = format!(
        r#"
[alerting]
interval = "1s"
group_wait = "0s"
default_rules = false

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "{ok}"

[[check]]
name = "gone"
plugin = "http"
interval = "1s"
target = "http://{down}/"

[[rule]]
name = "gone_down"
plugin = "health"
channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "{hook}"
"#,
        ok = target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    receiver.wait_for("gone", &["firing"]).await;

    // Every name a query uses is a family selfmon serves (a histogram's series by its family's name).
    let (_, scraped) = scrape(&selfmon).await;
    let families: Vec<&str> = scraped.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let names = regex::Regex::new(r"\bselfmon_[a-z_]+").unwrap();
    let template = dashboard["templating"]["list"][1]["definition"].as_str().unwrap().to_string();
    for (title, expr) in queries.iter().chain([(String::from("the check variable"), template)].iter()) {
        for name in names.find_iter(expr).map(|m| m.as_str()) {
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(families.contains(&family) || families.contains(&name), "{title}: `{name}` is not served");
        }
    }

    let address = selfmon.url.trim_start_matches("http://");
    let prometheus = PrometheusServer::start(&format!(
        "  - job_name: selfmon\n    static_configs:\n      - targets: [\"{address}\"]\n"
    ));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            if !prometheus.answers(&filled(expr)).await {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "queries without data:\n{}", empty.join("\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(prometheus);
    selfmon.stop().await;
}
