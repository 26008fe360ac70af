//! selfmon's own log, as the real binary writes it: JSON lines with trace, span and correlation ids, split into
//! application, errors, performance and security files, rotated by size, and stored like any other log source.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{PATIENCE, Workdir, closed_port, free_port, get_json_with_key, serve_binary, signal};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display())))
        .collect()
}

fn hex(value: &Value, length: usize) -> bool {
    value.as_str().is_some_and(|s| s.len() == length && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_own_log_is_json_lines_by_kind_rotated_and_stored() {
    let port = free_port();
    let nowhere = closed_port().await;
    let config = format!(
        r#"
[server]
api_listen = "127.0.0.1:{port}"

[[api.keys]]
name = "ops"
key = "admin-key-123456"
role = "admin"

[logging]
max_file_size = "4 KiB"
keep = 2

[alerting]
interval = "1s"
group_wait = "1s"
default_channels = ["hook"]

[[channel]]
name = "hook"
kind = "webhook"
url = "http://{nowhere}/alerts"
max_attempts = 1

[[check]]
name = "api"
plugin = "http"
target = "http://{nowhere}/health"
interval = "1s"
"#
    );
    let workdir = Workdir::new(&config, &[]);
    let (mut child, url) = serve_binary(&workdir, port, "info", Stdio::null()).await;
    let client = reqwest::Client::new();

    // A refused call, with the caller's trace and correlation ids.
    let refused = client
        .get(format!("{url}/v1/status"))
        .bearer_auth("wrong-key")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("x-correlation-id", "corr-refused-1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["x-correlation-id"], "corr-refused-1", "answers carry the correlation id");
    let fresh = client.get(format!("{url}/health")).send().await.unwrap();
    assert!(hex(&Value::from(fresh.headers()["x-correlation-id"].to_str().unwrap()), 32), "a new one otherwise");

    let logs = workdir.path().join("logs");
    let file = |name: &str| logs.join(name);
    // Wait for a given-up notification (the channel goes nowhere), check runs, and a rotation.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let errors = lines(&file("errors/errors.log"));
        let rotated = file("application/selfmon.log.1").exists();
        if rotated && errors.iter().any(|l| l["message"].as_str().unwrap_or_default().contains("given up")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rotation or no error record yet: {errors:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every line of every file is a record of the documented shape.
    for name in [
        "application/selfmon.log",
        "application/selfmon.log.1",
        "errors/errors.log",
        "performance/performance.log",
        "security/security.log",
    ] {
        for line in lines(&file(name)) {
            for key in ["timestamp", "level", "logger", "message"] {
                assert!(line[key].is_string(), "{name}: no {key}: {line}");
            }
            assert_eq!(line["service"], "selfmon");
        }
    }
    assert!(!file("application/selfmon.log.3").exists(), "at most `keep` rotated files");
    assert!(lines(&file("errors/errors.log")).iter().all(|l| l["level"] == "ERROR"));

    let security = lines(&file("security/security.log"));
    let refusal = security.iter().find(|l| l["correlation_id"] == "corr-refused-1").expect("the refusal is there");
    assert_eq!(refusal["level"], "SECURITY");
    assert_eq!(refusal["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace");
    assert!(hex(&refusal["span_id"], 16));
    assert_eq!((refusal["span"].as_str(), refusal["route"].as_str()), (Some("request"), Some("/v1/status")));
    assert!(!security.iter().any(|l| l.to_string().contains("wrong-key")), "never the key");

    let performance = lines(&file("performance/performance.log"));
    let run = performance.iter().find(|l| l["operation"] == "check_run").expect("check runs are timed");
    assert_eq!((run["check"].as_str(), run["plugin"].as_str()), (Some("api"), Some("http")));
    assert_eq!(run["span"], "check_run");
    assert!(hex(&run["trace_id"], 32) && hex(&run["correlation_id"], 32), "{run}");
    assert!(run["duration_ms"].is_number());

    // Stored like any other log source, ids and all.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, found) =
            get_json_with_key(&format!("{url}/v1/logs?source=selfmon&level=security"), "admin-key-123456").await;
        let records = found["records"].as_array().cloned().unwrap_or_default();
        if let Some(record) = records.iter().find(|r| r["correlation_id"] == "corr-refused-1") {
            assert_eq!(record["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(record["service"], "selfmon");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refusal was not stored: {found}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert!(tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap().success());
}
