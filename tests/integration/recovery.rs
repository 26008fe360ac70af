//! Automatic recovery against a real process: the test kills a local HTTP server, the check fails, the recovery
//! command starts the server again, and the check passes; every attempt is recorded. An action that does not help
//! stops after its maximum number of attempts.

use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;

use crate::support::{Selfmon, Target, Workdir, free_port};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/integration/scripts/restart_http_server.py");

fn python() -> &'static str {
    "python3"
}

/// Start the server the way the recovery command does, and return its pid.
fn start_server(port: u16, dir: &Path, pidfile: &Path) -> i32 {
    let output = Command::new(python())
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(dir)
        .arg(pidfile)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for this test (Debian package python3): {e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap()
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_process_is_restarted_and_the_check_recovers() {
    // A process manager's restart endpoint, for the request action.
    let manager = Target::start().await;
    let port = free_port();
    let config = format!(
        r#"
[[check]]
name = "site"
plugin = "http"
interval = "1s"
target = "http://127.0.0.1:{port}/"
[check.recovery]
after = 2
command = ["{python}", "{SCRIPT}", "{port}", "{{workdir}}/www", "{{workdir}}/server.pid"]
timeout = "10s"
max_attempts = 3
backoff = "1s"

[[check]]
name = "by-request"
plugin = "http"
interval = "1s"
target = "http://127.0.0.1:{closed}/"
[check.recovery]
after = 1
http = {{ url = "{restart}", method = "POST" }}
max_attempts = 1

[[check]]
name = "hopeless"
plugin = "http"
interval = "1s"
target = "http://127.0.0.1:{closed}/"
[check.recovery]
after = 1
command = ["false"]
max_attempts = 2
backoff = "1s"
"#,
        python = python(),
        closed = free_port(),
        restart = manager.url("/restart"),
    );
    let workdir = Workdir::new(&config, &[]);
    let www = workdir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello").unwrap();
    let pidfile = workdir.path().join("server.pid");
    let first = start_server(port, &www, &pidfile);
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.wait_for("site", "healthy", |s| s["status"] == "healthy").await;

    kill(first);
    selfmon.wait_for("site", "a failure", |s| s["status"] == "unhealthy").await;
    let last_recovered = |s: &serde_json::Value| {
        s["recovery"]["recent_attempts"].as_array().and_then(|a| a.last()).is_some_and(|a| a["recovered"] == true)
    };
    let recovered = selfmon.wait_for("site", "recovery", |s| s["status"] == "healthy" && last_recovered(s)).await;
    let attempt = recovered["recovery"]["recent_attempts"].as_array().unwrap().last().unwrap();
    assert_eq!(attempt["outcome"], "ran", "{recovered:#}");
    assert_eq!(attempt["exit_code"], 0);
    assert!(attempt["output"].as_str().unwrap().starts_with("started pid "), "{attempt:#}");
    // Passing again: `recovered` until `after` passing runs end the episode.
    assert!(["recovered", "idle"].contains(&recovered["recovery"]["state"].as_str().unwrap()), "{recovered:#}");
    // The stored history follows within the writer's group-commit window.
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let history = loop {
        let (_, history) = selfmon.get("/v1/recovery?check=site").await;
        if history["attempts"][0]["recovered_at"].is_string() {
            break history;
        }
        assert!(tokio::time::Instant::now() < deadline, "the recovery was never stored: {history:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(history["attempts"].as_array().unwrap().iter().all(|a| a["check"] == "site"));

    let hopeless = selfmon.wait_for("hopeless", "exhausted recovery", |s| s["recovery"]["state"] == "exhausted").await;
    assert_eq!(hopeless["recovery"]["attempts"], 2);
    let last = hopeless["recovery"]["recent_attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["outcome"].as_str(), last["exit_code"].as_i64()), (Some("failed"), Some(1)));
    let by_request = selfmon
        .wait_for("by-request", "a recovery request", |s| {
            s["recovery"]["recent_attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let attempt = &by_request["recovery"]["recent_attempts"][0];
    assert_eq!((attempt["outcome"].as_str(), attempt["exit_code"].as_i64()), (Some("ran"), Some(202)), "{attempt:#}");
    assert_eq!(attempt["output"], "restarting");
    assert!(attempt["action"].as_str().unwrap().starts_with("POST http://127.0.0.1:"));
    assert_eq!(manager.hits(), 1, "max_attempts = 1");
    selfmon.stop().await;
    kill(std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap());

    let db = workdir.db();
    let rows: Vec<(String, i64, String, Option<i64>)> = db
        .prepare("SELECT check_name, attempt, outcome, recovered_at FROM recovery_attempts ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let site: Vec<_> = rows.iter().filter(|r| r.0 == "site").collect();
    assert!(!site.is_empty() && site.last().unwrap().3.is_some(), "the recovering attempt is marked: {rows:?}");
    assert!(site[..site.len() - 1].iter().all(|r| r.3.is_none()), "only the attempt that helped is marked: {rows:?}");
    let hopeless: Vec<_> = rows.iter().filter(|r| r.0 == "hopeless").collect();
    assert_eq!(hopeless.len(), 2, "no more than max_attempts: {rows:?}");
    assert!(hopeless.iter().all(|r| r.2 == "failed" && r.3.is_none()));
    let starts: Vec<i64> = db
        .prepare("SELECT started_at FROM recovery_attempts WHERE check_name = 'hopeless' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(starts[1] - starts[0] >= 1000, "the second attempt waited out the back-off: {starts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_settings_are_checked_when_the_config_is_loaded() {
    let workdir = Workdir::new(
        "[[check]]\nname = \"a\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n[check.recovery]\ncommand = []\n\n\
         [[check]]\nname = \"b\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n[check.recovery]\ncommand = [\"x\"]\nhttp = { url = \"http://localhost:9/restart\" }\n\n\
         [[check]]\nname = \"c\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n[check.recovery]\nhttp = { url = \"ftp://x/\" }\n",
        &[],
    );
    let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
    for expected in [
        "invalid check `a`: `recovery.command` names no program",
        "invalid check `b`: `recovery` needs exactly one of `command` and `http`",
        "invalid check `c`: `recovery.http.url` must be an http:// or https:// URL",
    ] {
        assert!(error.contains(expected), "missing `{expected}` in {error}");
    }
}
