//! Hot reload: components and sidecars dropped into, replaced in and removed from the plugins folder of a running
//! selfmon, and the config file read again on `POST /v1/reload` and `SIGHUP`, all-or-nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use selfmon_plugin_artifacts::guests;
use serde_json::Value;

use crate::support::{PATIENCE, Selfmon, Workdir};

/// Put a file in place the way an operator's deploy should: written beside it under a hidden name, then renamed.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, dir.join(name)).unwrap();
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Wait until `done` holds for `/v1/status`, and return it.
async fn wait_for_status(selfmon: &Selfmon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, status) = selfmon.get("/v1/status").await;
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}; last status: {status:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn said(outcome: &Value, words: &str) -> bool {
    outcome["changes"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains(words))
}

/// Whether a check's latest run started after `since` (ms since the epoch).
fn ran_after(state: &Value, since: i64) -> bool {
    state["last_run"].as_str().is_some_and(|at| {
        humantime::parse_rfc3339(at)
            .is_ok_and(|at| at.duration_since(UNIX_EPOCH).unwrap().as_millis() > u128::try_from(since).unwrap())
    })
}

fn plugin_version(status: &Value, name: &str) -> Option<String> {
    status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["version"].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_in_plugin_and_its_sidecar_run_without_a_restart_and_a_removed_one_stops_its_checks() {
    let workdir = Workdir::new("", &[]);
    let plugins = workdir.path().join("plugins");
    let selfmon = Selfmon::start(&workdir).await;
    assert!(selfmon.check("dropped").await.is_null());

    let dropped = Instant::now();
    install(&plugins, "versioned.wasm", guests::VERSIONED_1);
    // With a check of a built-in plugin that depends on the dropped-in one.
    let sidecar = format!(
        "# Checks of the versioned plugin.\n\n[[check]]\nname = \"dropped\"\nplugin = \"versioned\"\ninterval = \"1s\"\n\n\
         [[check]]\nname = \"dependent\"\nplugin = \"http\"\ntarget = \"{}/health\"\ninterval = \"1s\"\ndepends_on = [\"dropped\"]\n",
        selfmon.url
    );
    install(&plugins, "versioned.toml", sidecar.as_bytes());
    let state = selfmon.first_result("dropped").await;
    eprintln!("the dropped-in plugin's check reported {:?} after the files were in place", dropped.elapsed());
    assert_eq!(state["status"], "healthy", "{state:#}");
    assert_eq!(state["summary"], "version 1.0.0");
    let status = wait_for_status(&selfmon, "reported the reload", |s| !s["last_reload"].is_null()).await;
    let outcome = &status["last_reload"];
    assert_eq!(outcome["applied"], true, "{outcome:#}");
    assert_eq!(outcome["trigger"], "plugins folder");
    assert!(said(outcome, "plugin `versioned` 1.0.0 loaded"), "{outcome:#}");
    assert!(said(outcome, "check `dropped` added"), "{outcome:#}");
    let (_, report) = selfmon.get("/v1/plugins").await;
    let listed = report["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "versioned").unwrap();
    assert!(listed["source"].as_str().unwrap().ends_with("plugins/versioned.wasm"), "{listed:#}");
    assert_eq!(listed["used_by"][0]["name"], "dropped", "{listed:#}");

    std::fs::remove_file(plugins.join("versioned.wasm")).unwrap();
    let state = selfmon.wait_for("dropped", "the removal reported", |s| s["status"] == "unknown").await;
    let error = state["error"].as_str().unwrap();
    assert!(error.contains("the plugin `versioned` was unloaded because"), "{error}");
    // The check that depended on it carries on.
    let since = now_ms();
    let dependent = selfmon.wait_for("dependent", "a run after the removal", |s| ran_after(s, since)).await;
    assert_eq!(dependent["status"], "healthy", "{dependent:#}");
    assert!(error.contains("plugins/versioned.wasm was removed"), "{error}");
    let status = wait_for_status(&selfmon, "unloaded the plugin", |s| plugin_version(s, "versioned").is_none()).await;
    assert!(said(&status["last_reload"], "plugin `versioned` unloaded"), "{status:#}");
    assert!(said(&status["last_reload"], "check `dropped` stopped: its plugin was removed"), "{status:#}");
    // It runs no more (once a run in flight and the record of the removal are stored).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let runs = workdir.stored_runs("dropped").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(workdir.stored_runs("dropped").len(), runs);

    // Back in place, the check runs again.
    install(&plugins, "versioned.wasm", guests::VERSIONED_1);
    let state = selfmon.wait_for("dropped", "a run again", |s| s["status"] == "healthy").await;
    assert_eq!(state["summary"], "version 1.0.0");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_plugin_swaps_under_load_with_no_failed_or_mixed_calls() {
    // Twelve checks each taking 600 ms of every second: at any moment several calls are in flight.
    let mut config = String::new();
    for n in 0..12 {
        config.push_str(&format!(
            "[[check]]\nname = \"busy-{n}\"\nplugin = \"versioned\"\ninterval = \"1s\"\nconfig = {{ delay_ms = 600 }}\n\n"
        ));
    }
    let workdir = Workdir::new(&config, &[("versioned", guests::VERSIONED_1)]);
    let selfmon = Selfmon::start(&workdir).await;
    for n in 0..12 {
        selfmon.first_result(&format!("busy-{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let replaced = Instant::now();
    install(&workdir.path().join("plugins"), "versioned.wasm", guests::VERSIONED_2);
    for n in 0..12 {
        selfmon.wait_for(&format!("busy-{n}"), "version 2", |s| s["summary"] == "version 2.0.0").await;
    }
    eprintln!("every check answered from version 2 {:?} after the file was replaced", replaced.elapsed());
    let status = wait_for_status(&selfmon, "reported the swap", |s| !s["last_reload"].is_null()).await;
    assert!(said(&status["last_reload"], "plugin `versioned` 1.0.0 replaced by 2.0.0"), "{status:#}");
    assert_eq!(plugin_version(&status, "versioned").as_deref(), Some("\"2.0.0\""));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    selfmon.stop().await;

    let db = workdir.db();
    let mut statement = db
        .prepare("SELECT check_name, started_at, duration_ms, status, summary FROM check_runs ORDER BY started_at, id")
        .unwrap();
    let runs: Vec<Run> = statement
        .query_map([], |r| {
            Ok(Run { check: r.get(0)?, started: r.get(1)?, ms: r.get(2)?, status: r.get(3)?, summary: r.get(4)? })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut by_check: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in &runs {
        assert_eq!(run.status, "healthy", "a call failed: {run:?}");
        assert!(run.summary == "version 1.0.0" || run.summary == "version 2.0.0", "a mixed answer: {run:?}");
        by_check.entry(run.check.as_str()).or_default().push(run);
    }
    assert_eq!(by_check.len(), 12);
    for (check, runs) in &by_check {
        let first_new = runs.iter().position(|r| r.summary == "version 2.0.0").unwrap();
        assert!(first_new > 0, "{check} never ran on version 1");
        assert!(
            runs[first_new..].iter().all(|r| r.summary == "version 2.0.0"),
            "{check} went back to version 1: {runs:?}"
        );
    }
    // Calls in flight at the swap finished on the old version: one ended after a call on the new one had begun.
    let first_new_start = runs.iter().filter(|r| r.summary == "version 2.0.0").map(|r| r.started).min().unwrap();
    let finished_late = runs
        .iter()
        .filter(|r| r.summary == "version 1.0.0")
        .filter(|r| r.started as f64 + r.ms > first_new_start as f64)
        .count();
    eprintln!("{} runs, none failed; {finished_late} calls on version 1 ended after version 2 was in use", runs.len());
    assert!(finished_late > 0, "no call on version 1 was in flight when version 2 began");
}

/// A stored run.
#[derive(Debug)]
struct Run {
    check: String,
    started: i64,
    ms: f64,
    status: String,
    summary: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_refused_with_its_reason_and_the_version_before_keeps_running() {
    let config = "[[check]]\nname = \"steady\"\nplugin = \"versioned\"\ninterval = \"1s\"\n";
    let workdir = Workdir::new(config, &[("versioned", guests::VERSIONED_1)]);
    let plugins = workdir.path().join("plugins");
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.first_result("steady").await;

    let refused = |file: &'static str| {
        move |status: &Value| {
            status["refused_plugins"].as_array().unwrap().iter().any(|r| r["file"].as_str().unwrap().ends_with(file))
        }
    };
    let reason_of = |status: &Value, file: &str| {
        let refused = status["refused_plugins"].as_array().unwrap();
        let entry = refused.iter().find(|r| r["file"].as_str().unwrap().ends_with(file)).unwrap();
        entry["reason"].as_str().unwrap().to_string()
    };
    // Half a component in place of the whole one.
    install(&plugins, "versioned.wasm", &guests::VERSIONED_2[..guests::VERSIONED_2.len() / 2]);
    let status = wait_for_status(&selfmon, "refused the broken file", refused("plugins/versioned.wasm")).await;
    let reason = reason_of(&status, "plugins/versioned.wasm");
    assert!(reason.contains("version 1.0.0 loaded from it before keeps running"), "{reason}");
    assert_eq!(plugin_version(&status, "versioned").as_deref(), Some("\"1.0.0\""));
    let since = now_ms();
    let state = selfmon.wait_for("steady", "a run after the refusal", |s| ran_after(s, since)).await;
    assert_eq!(state["status"], "healthy", "{state:#}");
    assert_eq!(state["summary"], "version 1.0.0");

    // A component built against a contract this selfmon does not implement.
    install(&plugins, "future.wasm", guests::FUTURE);
    let status = wait_for_status(&selfmon, "refused the future plugin", refused("plugins/future.wasm")).await;
    let reason = reason_of(&status, "plugins/future.wasm");
    assert!(reason.contains("built against contract version"), "{reason}");
    assert!(reason.contains("accepts 0.1.x"), "{reason}");

    // A sidecar with a mistake: the reload is refused, naming the sidecar and its line; nothing changes.
    install(
        &plugins,
        "extra.toml",
        b"[[check]]\nname = \"extra\"\nplugin = \"versioned\"\ninterval = \"1 lightyear\"\n",
    );
    let status = wait_for_status(&selfmon, "refused the sidecar", |s| s["last_reload"]["applied"] == false).await;
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("plugins/extra.toml, line 4"), "{errors}");
    assert!(selfmon.check("extra").await.is_null());
    std::fs::remove_file(plugins.join("extra.toml")).unwrap();

    // A whole new version replaces the one that kept running, and the refusal is gone.
    install(&plugins, "versioned.wasm", guests::VERSIONED_2);
    selfmon.wait_for("steady", "version 2", |s| s["summary"] == "version 2.0.0").await;
    let status = wait_for_status(&selfmon, "forgot the refusal", |s| !refused("plugins/versioned.wasm")(s)).await;
    assert!(refused("plugins/future.wasm")(&status));

    // A second file of the same plugin is refused while the name is taken, and loaded once the first is removed.
    install(&plugins, "versioned-copy.wasm", guests::VERSIONED_1);
    let status = wait_for_status(&selfmon, "refused the copy", refused("plugins/versioned-copy.wasm")).await;
    let reason = reason_of(&status, "plugins/versioned-copy.wasm");
    assert!(reason.contains("the name `versioned` is already taken by"), "{reason}");
    std::fs::remove_file(plugins.join("versioned.wasm")).unwrap();
    selfmon.wait_for("steady", "version 1 from the copy", |s| s["summary"] == "version 1.0.0").await;
    let status = wait_for_status(&selfmon, "loaded the copy", |s| !refused("plugins/versioned-copy.wasm")(s)).await;
    let copy = status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "versioned").unwrap();
    assert!(copy["source"].as_str().unwrap().ends_with("plugins/versioned-copy.wasm"), "{copy:#}");
    selfmon.stop().await;
}

const KEYS: &str = r#"
[api]
keys = [
    { name = "grafana", key = "read-key-0123456789", role = "read" },
    { name = "ops", key = "admin-key-0123456789", role = "admin" },
]
"#;

async fn post_reload(selfmon: &Selfmon, key: &str) -> (StatusCode, Value) {
    let response =
        reqwest::Client::new().post(format!("{}/v1/reload", selfmon.url)).bearer_auth(key).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_applies_all_of_a_valid_file_and_nothing_of_an_invalid_one() {
    let first = format!("{KEYS}\n[[check]]\nname = \"a\"\nplugin = \"noop\"\ninterval = \"1s\"\n");
    let workdir = Workdir::new(&first, &[("noop", guests::NOOP)]);
    let file = workdir.config_file();
    let original = std::fs::read_to_string(&file).unwrap();
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some("read-key-0123456789".into());
    selfmon.first_result("a").await;

    let (status, body) = post_reload(&selfmon, "read-key-0123456789").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // A valid new check beside one naming a plugin that is not there, and a retention change: nothing is applied.
    let invalid = format!(
        "{original}\n[[check]]\nname = \"b\"\nplugin = \"noop\"\ninterval = \"1s\"\n\n[[check]]\nname = \"c\"\nplugin = \"nowhere\"\n\n[retention]\nlogs = \"1d\"\n"
    );
    std::fs::write(&file, &invalid).unwrap();
    let (status, outcome) = post_reload(&selfmon, "admin-key-0123456789").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome:#}");
    assert_eq!(outcome["error"]["code"], "reload_refused");
    let errors = outcome["error"]["details"].to_string();
    assert!(errors.contains("selfmon.toml, line"), "{errors}");
    assert!(errors.contains("invalid check `c`"), "{errors}");
    assert!(errors.contains("nowhere"), "{errors}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(selfmon.check("b").await.is_null(), "a check of a refused reload runs");
    assert_eq!(selfmon.check("a").await["status"], "healthy");
    let (_, status) = selfmon.get("/v1/status").await;
    assert_eq!(status["last_reload"]["applied"], false, "{status:#}");

    // Not TOML at all.
    std::fs::write(&file, format!("{original}\n[[check]\n")).unwrap();
    let (status, outcome) = post_reload(&selfmon, "admin-key-0123456789").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome:#}");
    assert!(outcome["error"]["details"].to_string().contains("selfmon.toml, line"), "{outcome:#}");

    // Valid: `b` is added, `a` removed; the retention change waits for a restart and says so.
    let valid = original.replace("name = \"a\"", "name = \"b\"") + "\n[retention]\nlogs = \"1d\"\n";
    std::fs::write(&file, &valid).unwrap();
    let (status, outcome) = post_reload(&selfmon, "admin-key-0123456789").await;
    assert_eq!(status, StatusCode::OK, "{outcome:#}");
    assert_eq!(outcome["trigger"], "POST /v1/reload");
    assert!(said(&outcome, "check `b` added"), "{outcome:#}");
    assert!(said(&outcome, "check `a` removed"), "{outcome:#}");
    assert_eq!(outcome["restart_needed"], serde_json::json!(["[retention]"]));
    let state = selfmon.first_result("b").await;
    assert_eq!(state["status"], "healthy", "{state:#}");
    assert!(selfmon.check("a").await.is_null());
    // The retention change still waits for a restart at the next reload (through GraphQL), which changes nothing
    // else; a read key may not ask for one there either.
    let mutation = "mutation { reload { trigger applied changes restartNeeded } }";
    let refused = selfmon.graphql(Some("read-key-0123456789"), mutation, Value::Null).await;
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("admin"), "{refused:#}");
    let answer = selfmon.graphql(Some("admin-key-0123456789"), mutation, Value::Null).await;
    let outcome = &answer["data"]["reload"];
    assert_eq!(outcome["trigger"], "GraphQL reload", "{answer:#}");
    assert_eq!(outcome["changes"], serde_json::json!([]));
    assert_eq!(outcome["restartNeeded"], serde_json::json!(["[retention]"]));
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_config_of_a_running_binary() {
    let port = crate::support::free_port();
    let first = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[[check]]\nname = \"a\"\nplugin = \"noop\"\ninterval = \"1s\"\n"
    );
    let workdir = Workdir::new(&first, &[("noop", guests::NOOP)]);
    let (mut child, url) = crate::support::serve_binary(&workdir, port, "warn", std::process::Stdio::null()).await;
    let file = workdir.config_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n[[check]]\nname = \"b\"\nplugin = \"noop\"\ninterval = \"1s\"\n")).unwrap();
    crate::support::signal(&child, nix::sys::signal::Signal::SIGHUP);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, health) = crate::support::get_json(&format!("{url}/v1/health")).await;
        let b = health["checks"].as_array().unwrap().iter().find(|c| c["name"] == "b").cloned();
        if b.is_some_and(|b| b["status"] == "healthy") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not add the check: {health:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, status) = crate::support::get_json(&format!("{url}/v1/status")).await;
    assert_eq!(status["last_reload"]["trigger"], "SIGHUP", "{status:#}");
    crate::support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_log_source_resumes_where_it_stopped_with_no_line_lost_or_stored_twice() {
    let source = |service: &str| {
        format!(
            "[[log_source]]\nname = \"app\"\nkind = \"file\"\npaths = [\"logs/app.log\"]\nservice = \"{service}\"\npoll = \"50ms\"\n"
        )
    };
    let workdir = Workdir::new(&format!("{KEYS}\n{}", source("service-0")), &[]);
    let file = workdir.config_file();
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::create_dir(workdir.path().join("logs")).unwrap();
    let log = workdir.path().join("logs/app.log");
    let selfmon = Selfmon::start(&workdir).await;

    // A service writing a line every 5 ms through three reloads, each of which restarts the source.
    let writer = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
            for n in 0..600 {
                writeln!(out, "{{\"level\": \"info\", \"msg\": \"line-{n}\"}}").unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for n in 1..=3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::fs::write(&file, original.replace("service-0", &format!("service-{n}"))).unwrap();
        let (status, outcome) = post_reload(&selfmon, "admin-key-0123456789").await;
        assert_eq!(status, StatusCode::OK, "{outcome:#}");
        assert!(said(&outcome, "log source `app` (re)started"), "{outcome:#}");
    }
    writer.await.unwrap();

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let stored = loop {
        let stored: Vec<(String, String)> = {
            let db = workdir.db();
            let mut statement =
                db.prepare("SELECT message, service FROM logs WHERE source = 'app' ORDER BY id").unwrap();
            statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
        };
        if stored.len() >= 600 || tokio::time::Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    selfmon.stop().await;
    let messages: Vec<&str> = stored.iter().map(|(message, _)| message.as_str()).collect();
    let expected: Vec<String> = (0..600).map(|n| format!("line-{n}")).collect();
    assert_eq!(messages, expected, "every line once, in order");
    let services: BTreeSet<&str> = stored.iter().map(|(_, service)| service.as_str()).collect();
    assert_eq!(services.len(), 4, "each reload's service was used: {services:?}");
    assert_eq!(stored.last().unwrap().1, "service-3");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_last_reload_and_the_refused_files() {
    use crate::support::browser::Browser;
    let port = crate::support::free_port();
    let config = format!(
        "[dashboard]\nlisten = \"127.0.0.1:{port}\"\n\n[[check]]\nname = \"steady\"\nplugin = \"versioned\"\ninterval = \"1s\"\n"
    );
    let workdir = Workdir::new(&config, &[("versioned", guests::VERSIONED_1)]);
    let selfmon = Selfmon::start(&workdir).await;
    let browser = Browser::start().await;
    browser.open(&format!("http://127.0.0.1:{port}/#plugins")).await;
    browser.wait_for("document.querySelector('#plugins-reload')?.textContent.includes('No reload since')").await;

    install(&workdir.path().join("plugins"), "versioned.wasm", &guests::VERSIONED_2[..1000]);
    wait_for_status(&selfmon, "refused the file", |s| !s["last_reload"].is_null()).await;
    // The section shows what is current each time it is opened.
    browser.eval("location.hash = '#overview'").await;
    browser.eval("location.hash = '#plugins'").await;
    browser.wait_for("document.querySelector('#plugins-reload [data-applied=\"true\"]')").await;
    let reload = browser.eval("document.querySelector('#plugins-reload').textContent").await;
    let reload = reload.as_str().unwrap();
    assert!(reload.contains("plugins folder") && reload.contains("applied"), "{reload}");
    assert!(reload.contains("plugins/versioned.wasm refused: not a WebAssembly component"), "{reload}");
    let refused = browser.eval("document.querySelector('#plugins-refused').textContent").await;
    assert!(refused.as_str().unwrap().contains("version 1.0.0 loaded from it before keeps running"), "{refused}");
    assert!(browser.problems().is_empty(), "{:?}", browser.problems());
    browser.eval("document.querySelector('#plugins-refused').scrollIntoView()").await;
    browser.screenshot("plugins-after-a-refused-file").await;
    selfmon.stop().await;
}
