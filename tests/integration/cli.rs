//! The `selfmon` binary as operators and cron jobs use it: exit codes, error messages, logs, signals, the default
//! config.

use std::process::{Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use selfmon_plugin_artifacts::guests;

use crate::support::{PATIENCE, Target, Workdir, closed_port, free_port, get_json, selfmon_command, signal};

fn selfmon(workdir: &Workdir, args: &[&str]) -> Output {
    selfmon_command(workdir).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_once_and_exits_like_a_nagios_plugin() {
    let target = Target::start().await;
    let down = closed_port().await;
    let config = format!(
        r#"
[[check]]
name = "ok"
plugin = "http"
target = "{ok}"

[[check]]
name = "slow"
plugin = "http"
target = "{slow}"
[check.config]
degraded_after = "100ms"

[[check]]
name = "down"
plugin = "http"
target = "http://{down}/"

[[check]]
name = "stuck"
plugin = "loop"
timeout = "1s"
"#,
        ok = target.url("/ok"),
        slow = target.url("/slow/300"),
    );
    let workdir = Workdir::new(&config, &[("loop", guests::LOOP)]);
    let cases: [(&[&str], i32); 5] = [
        (&["check", "ok"], 0),
        (&["check", "ok", "slow"], 1),
        (&["check", "ok", "slow", "down"], 2),
        (&["check", "ok", "stuck"], 3),
        (&["check", "no-such-check"], 3),
    ];
    for (args, expected) in cases {
        let output = selfmon(&workdir, args);
        assert_eq!(
            output.status.code(),
            Some(expected),
            "selfmon {args:?}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }

    let output = selfmon(&workdir, &["check"]);
    let table = text(&output.stdout);
    assert!(table.starts_with("CHECK"), "{table}");
    for line in ["ok", "slow", "down", "stuck"] {
        assert!(table.lines().any(|l| l.starts_with(line)), "the table lists `{line}`: {table}");
    }
    assert!(table.contains("deadline of 1s exceeded"), "{table}");
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dot_env_file_next_to_the_config_provides_secrets() {
    let target = Target::start().await;
    let config = format!(
        "[[check]]\nname = \"auth\"\nplugin = \"http\"\ntarget = \"{}\"\n[check.secrets]\nbearer_token = \"env:SELFMON_TEST_DOTENV_TOKEN\"\n",
        target.url("/auth")
    );
    let workdir = Workdir::new(&config, &[]);
    let output = selfmon(&workdir, &["check"]);
    assert_eq!(output.status.code(), Some(3), "without the variable the config is refused: {}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(
            "secret `bearer_token` refers to environment variable `SELFMON_TEST_DOTENV_TOKEN`, which is not set"
        ),
        "{}",
        text(&output.stderr)
    );

    std::fs::write(workdir.path().join(".env"), "# the platform's .env\nSELFMON_TEST_DOTENV_TOKEN=s3cret-token\n")
        .unwrap();
    let output = selfmon(&workdir, &["check"]);
    assert_eq!(output.status.code(), Some(0), "{}{}", text(&output.stdout), text(&output.stderr));
}

#[test]
fn config_errors_name_the_file_the_line_and_what_is_wrong() {
    let workdir = Workdir::new("[[check]]\nname = \"web\"\nplugin = \"http\"\nintervall = \"5s\"\n", &[]);
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let file = workdir.config_file().display().to_string();
    let written = std::fs::read_to_string(workdir.config_file()).unwrap();
    let line = |text: &str| written.lines().position(|l| l == text).unwrap() + 1;
    assert!(
        stderr.contains(&format!("{file}, line {}: unknown field `intervall`", line("intervall = \"5s\""))),
        "{stderr}"
    );

    let workdir = Workdir::new(
        r#"
[scheduler]
max_concurrent = 0

[[check]]
name = "web"
plugin = "htp"
target = "http://localhost/"

[[check]]
name = "api"
plugin = "http"
target = "http://localhost/"
interval = "30days"
memory_limit = "2 GiB"
depends_on = ["nowhere"]
[check.config]
expect_status = "200"
colour = "red"

[[check]]
name = "api"
plugin = "http"
target = "http://localhost/"

[[check]]
name = "a"
plugin = "http"
target = "http://localhost/"
depends_on = ["b"]

[[check]]
name = "b"
plugin = "http"
target = "http://localhost/"
depends_on = ["a"]
"#,
        &[],
    );
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let written = std::fs::read_to_string(workdir.config_file()).unwrap();
    let line = |text: &str| written.lines().position(|l| l == text).unwrap() + 1;
    let expected = [
        "`[scheduler] max_concurrent` must be between 1 and 1024".to_string(),
        format!(
            "line {}: invalid check `web`: unknown plugin `htp` (checkers: anthropic, dns, http, openai",
            line("plugin = \"htp\"")
        ),
        format!(
            "line {}: invalid check `api`: unknown config key `colour` (accepted: method, expect_status",
            line("colour = \"red\"")
        ),
        format!(
            "line {}: invalid check `api`: config key `expect_status` must be a list",
            line("expect_status = \"200\"")
        ),
        format!(
            "line {}: invalid check `api`: `interval` of 30days is not between 1s and 7days",
            line("interval = \"30days\"")
        ),
        format!("line {}: invalid check `api`: `memory_limit` of 2.0 GiB is over", line("memory_limit = \"2 GiB\"")),
        format!("line {}: invalid check `api`: `depends_on` names `nowhere`", line("depends_on = [\"nowhere\"]")),
        "invalid check `api`: the name is used by another check".to_string(),
        "`depends_on` forms a cycle: a -> b -> a".to_string(),
    ];
    for error in expected {
        assert!(stderr.contains(&error), "missing `{error}` in:\n{stderr}");
    }

    let workdir = Workdir::new("[[check]]\nname = \"web\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n", &[]);
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("OK, 1 check (1 enabled), 0 log sources, 9 alert rules (9 enabled), 0 channels"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn a_plugin_rejects_a_config_it_cannot_use_before_anything_runs() {
    let workdir = Workdir::new(
        "[[check]]\nname = \"web\"\nplugin = \"http\"\ntarget = \"ftp://example.com:21/\"\n[check.config]\nexpect_status = [200, \"9xx\"]\n",
        &[],
    );
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr)
            .contains("invalid check `web`: `target` must be an http:// or https:// URL, not `ftp://example.com:21/`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn alerting_config_errors_are_all_named_with_their_lines() {
    let workdir = Workdir::new(
        r#"
[alerting]
default_channels = ["pager"]

[[rule]]
name = "broken"
condition = "avg(latency) > 5"

[[rule]]
name = "broken"
condition = "x > 1"

[[rule]]
name = "misfiled"
plugin = "json"

[[rule]]
name = "nowhere"
condition = "x > 1"
channels = ["ops", "mail"]
escalation = "oncall"
severity = "urgent"

[[rule]]
name = "health-with-condition"
plugin = "health"
condition = "x > 1"
config = { status = "sideways" }

[[channel]]
name = "ops"
kind = "webhook"

[[channel]]
name = "webhook"
kind = "slack"
url = "https://hooks.slack.com/services/T/B/x"

[[channel]]
name = "bot"
kind = "telegram"
token = "123:abc"

[[escalation]]
name = "later"
[[escalation.step]]
after = "1h"
channels = ["nobody"]
[[escalation.step]]
after = "5m"
"#,
        &[],
    );
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let file = workdir.config_file().display().to_string();
    let written = std::fs::read_to_string(workdir.config_file()).unwrap();
    let line = |text: &str, nth: usize| written.lines().enumerate().filter(|(_, l)| *l == text).nth(nth).unwrap().0 + 1;
    for expected in [
        format!("{file}, line {}: channel `ops`: `url` is required", line("[[channel]]", 0)),
        format!("{file}, line {}: channel `webhook`: the name is a channel kind's", line("[[channel]]", 1)),
        format!("{file}, line {}: channel `bot`: `chat_id` is required", line("[[channel]]", 2)),
        format!("{file}: `[alerting] default_channels`: no channel `pager`"),
        format!("{file}, line {}: escalation `later`: no channel `nobody`", line("[[escalation]]", 0)),
        format!("{file}, line {}: escalation `later`: each step's `after` must be later", line("[[escalation]]", 0)),
        format!(
            "{file}, line {}: invalid rule `broken`: `condition` at column 5: `avg` needs a range",
            line("[[rule]]", 0)
        ),
        format!("{file}, line {}: invalid rule `broken`: the name is used by another rule", line("[[rule]]", 1)),
        format!(
            "{file}, line {}: invalid rule `misfiled`: `plugin`: `json` is not a rule plugin (rules: expression, health)",
            line("[[rule]]", 2)
        ),
        format!("{file}, line {}: invalid rule `nowhere`: `severity` must be one of", line("[[rule]]", 3)),
        format!("{file}, line {}: invalid rule `nowhere`: `channels`: no channel `mail`", line("[[rule]]", 3)),
        format!(
            "{file}, line {}: invalid rule `nowhere`: `escalation`: no `[[escalation]]` named `oncall`",
            line("[[rule]]", 3)
        ),
        format!(
            "{file}, line {}: invalid rule `health-with-condition`: `condition` is for the `expression` plugin",
            line("[[rule]]", 4)
        ),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let workdir = Workdir::new("", &[]);
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../selfmon.example.toml");
    let output = selfmon_command(&workdir)
        .args(["config", "check", "--config"])
        .arg(&example)
        .env("SELFMON_STORAGE_PATH", workdir.path().join("example.db"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("9 alert rules (9 enabled)"), "{}", text(&output.stdout));
}

/// Commands that check or read write no key: one run as root must not leave a file the service's user cannot read.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_makes_no_key_and_the_server_makes_it_once() {
    let workdir = Workdir::new("", &[]);
    let key = workdir.path().join("privacy.key");
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains("Made the key"), "{}", text(&output.stderr));
    assert!(!key.exists(), "config check wrote {}", key.display());
    // The server makes it, and keeps it.
    selfmon::app::host::Host::build(workdir.config()).await.unwrap();
    let made = std::fs::read_to_string(&key).unwrap();
    assert_eq!(made.trim().len(), 64);
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), made);
}

#[test]
fn plugins_lists_what_is_loaded_and_why_files_were_refused() {
    let workdir = Workdir::new(
        "[plugins]\nmax_file_size = \"1 MiB\"\n",
        &[
            ("noop", guests::NOOP),
            ("garbage", b"this is not wasm"),
            ("core", b"\0asm\x01\0\0\0"),
            ("future", guests::FUTURE),
            ("rule", guests::RULE),
            ("huge", &vec![0u8; 2 << 20]),
        ],
    );
    std::fs::write(workdir.path().join("plugins/notes.txt"), "not a plugin").unwrap();
    let output = selfmon(&workdir, &["plugins"]);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("http 0.1.0  checker, built-in"), "{stdout}");
    assert!(stdout.contains("expect_status    list      default [200]"), "{stdout}");
    assert!(stdout.contains("bearer_token  text  optional"), "{stdout}");
    assert!(stdout.contains("default target: ${DB_HOST:-localhost}:${DB_PORT:-5432}"), "{stdout}");
    assert!(stdout.contains("password  text  optional, env DB_PASSWORD"), "{stdout}");
    assert!(stdout.contains("noop 0.1.0  checker,") && stdout.contains("noop.wasm"), "{stdout}");
    assert!(stdout.contains("garbage.wasm: not a WebAssembly component"), "{stdout}");
    assert!(stdout.contains("core.wasm: not a WebAssembly component"), "{stdout}");
    assert!(
        stdout.contains("future.wasm: built against contract version 0.2.0 (`selfmon:plugin/types`); this selfmon implements 0.1.0 and accepts 0.1.x"),
        "{stdout}"
    );
    assert!(stdout.contains("custom-rule 0.1.0  rule,") && stdout.contains("rule.wasm"), "{stdout}");
    assert!(stdout.contains("huge.wasm: 2097152 bytes is over the limit of 1048576"), "{stdout}");
    assert!(!stdout.contains("notes.txt"), "only .wasm files are plugins: {stdout}");
    assert_eq!(output.status.code(), Some(1), "refused files make the listing fail");
}

#[test]
fn a_flooding_plugin_is_cut_short_in_the_log() {
    let workdir = Workdir::new("[[check]]\nname = \"flood\"\nplugin = \"flood\"\n", &[("flood", guests::FLOOD)]);
    let output = selfmon_command(&workdir).args(["check", "flood"]).env("SELFMON_LOG", "info").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let records = stderr.lines().filter(|l| l.contains("xxxxxxxxxx") && l.contains("fields=")).count();
    assert_eq!(records, 100, "100 records a call reach the log");
    assert!(stderr.contains("dropped=99900"), "the rest are counted: {}", &stderr[stderr.len().saturating_sub(2000)..]);
    assert!(stderr.contains("dropped_bytes=9983616"), "stderr keeps 16 KiB and counts the rest");
    assert!(stderr.len() < 1 << 20, "the log stays small: {} bytes", stderr.len());
}

#[test]
fn secrets_a_plugin_echoes_are_redacted_everywhere() {
    let config = "[[check]]\nname = \"echo\"\nplugin = \"echo\"\n[check.secrets]\ntoken = \"file:token\"\n\n\
                  [[check]]\nname = \"echo-fail\"\nplugin = \"echo\"\n[check.config]\nfail = true\n[check.secrets]\ntoken = \"file:token\"\n";
    let workdir = Workdir::new(config, &[("echo", guests::ECHO)]);
    std::fs::write(workdir.path().join("token"), "tok-LEAKED-8d2f").unwrap();
    let output = selfmon_command(&workdir).args(["check"]).env("SELFMON_LOG", "info").output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!stdout.contains("LEAKED") && !stderr.contains("LEAKED"), "secret leaked:\n{stdout}\n{stderr}");
    assert!(stdout.contains("token [redacted]") && stdout.contains("failed with token [redacted]"), "{stdout}");
    assert!(
        stderr.contains("the token is [redacted]") && stderr.contains("stderr says the token is [redacted]"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_stops_cleanly_on_sigterm_and_commits_what_it_measured() {
    let target = Target::start().await;
    let port = free_port();
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[[check]]\nname = \"ok\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n",
        target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let mut child = selfmon_command(&workdir).arg("serve").stdout(Stdio::null()).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/health");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut runs_seen = 0;
    let last_seen = loop {
        if let Ok(response) = reqwest::get(&url).await {
            let body: serde_json::Value = response.json().await.unwrap();
            let state = &body["checks"][0];
            if state["status"] == "healthy" {
                runs_seen += 1;
                if runs_seen >= 3 {
                    break state["last_run"].as_str().unwrap().to_string();
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "selfmon serve never reported the check healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    signal(&child, Signal::SIGTERM);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let stored = workdir.stored_start_times("ok");
    let latest = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(*stored.last().unwrap()).unwrap());
    let latest = humantime::format_rfc3339_millis(latest).to_string();
    assert!(latest >= last_seen, "the run the API showed last ({last_seen}) was committed (latest stored {latest})");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_config_file_selfmon_monitors_itself() {
    let workdir = Workdir::new("", &[]);
    std::fs::remove_file(workdir.config_file()).unwrap();
    let port = free_port();
    let mut child = selfmon_command(&workdir)
        .arg("serve")
        .env_remove("SELFMON_CONFIG")
        .env("SELFMON_API_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let state = loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/v1/health")).await {
            let body: serde_json::Value = response.json().await.unwrap();
            if !body["checks"][0]["last_run"].is_null() {
                break body["checks"][0].clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the default config never ran its check");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state["name"], "selfmon-api");
    assert_eq!(state["status"], "healthy", "{state:#}");
    let (status, _) = get_json(&format!("http://127.0.0.1:{port}/health")).await;
    assert_eq!(status, 200);
    signal(&child, Signal::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(0), "SIGINT is a clean exit");
    assert!(workdir.path().join("data/selfmon.db").is_file(), "the default database lives under ./data");
}

/// `${VAR}` anywhere in the config file takes its value from the environment (or the `.env` beside it), with
/// `${VAR:-default}` for a default; a reference to a variable that is not set stops selfmon with the file, the line
/// and the variable named.
#[tokio::test(flavor = "multi_thread")]
async fn the_config_takes_variables_from_the_environment() {
    let target = Target::start().await;
    let port = free_port();
    let config = "[server]\napi_listen = \"127.0.0.1:${API_PORT}\"\n\n[[check]]\nname = \"${CHECK_NAME:-web}\"\n\
                  plugin = \"http\"\ninterval = \"${CHECK_EVERY}\"\ntarget = \"${WEB_URL}\"\n";
    let workdir = Workdir::new(config, &[]);
    std::fs::write(workdir.path().join(".env"), format!("WEB_URL={}\n", target.url("/ok"))).unwrap();
    let mut command = selfmon_command(&workdir);
    command.env("API_PORT", port.to_string()).env("CHECK_EVERY", "1s").env_remove("CHECK_NAME").stderr(Stdio::null());
    let (mut child, url) = crate::support::serve_command(command, port).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, board) = get_json(&format!("{url}/v1/health")).await;
        let web = board["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "web").cloned());
        if web.as_ref().is_some_and(|w| w["status"] == "healthy") {
            assert_eq!(web.unwrap()["interval_seconds"], 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the check from the environment never ran: {board}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, Signal::SIGTERM);
    assert!(child.wait().unwrap().success());

    let checked = selfmon_command(&workdir).args(["config", "check"]).env("CHECK_EVERY", "1s").output().unwrap();
    assert_eq!(checked.status.code(), Some(1));
    let said = text(&checked.stderr);
    let line =
        std::fs::read_to_string(workdir.config_file()).unwrap().lines().position(|l| l.contains("API_PORT")).unwrap();
    let expected = format!("selfmon.toml, line {}: environment variable API_PORT is not set", line + 1);
    assert!(said.contains(&expected), "{said}");
}
