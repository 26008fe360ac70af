//! The `selfmon` binary as operators and cron jobs use it: exit codes, error messages, signals, the default config.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use selfmon_plugin_artifacts::guests;

use crate::support::{PATIENCE, Target, Workdir, closed_port, free_port, get_json};

fn selfmon(workdir: &Workdir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfmon"))
        .args(args)
        .arg("--config")
        .arg(workdir.config_file())
        .env("SELFMON_LOG", "warn")
        .output()
        .unwrap()
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
    let line = std::fs::read_to_string(workdir.config_file())
        .unwrap()
        .lines()
        .position(|l| l.starts_with("intervall"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("{file}, line {line}: unknown field `intervall`")), "{stderr}");

    let workdir = Workdir::new(
        "[[check]]\nname = \"web\"\nplugin = \"htp\"\ntarget = \"http://localhost/\"\n\n[[check]]\nname = \"api\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n[check.config]\nexpect_status = \"200\"\ncolour = \"red\"\n",
        &[],
    );
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let written = std::fs::read_to_string(workdir.config_file()).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    let web = lines.iter().position(|l| *l == "name = \"web\"").unwrap();
    let api = lines.iter().position(|l| *l == "name = \"api\"").unwrap();
    assert!(
        stderr.contains(&format!("line {web}: invalid check `web`: unknown plugin `htp` (loaded: http")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "line {api}: invalid check `api`: unknown config key `colour` (accepted: method, expect_status"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("invalid check `api`: config key `expect_status` must be a list"), "{stderr}");

    let workdir = Workdir::new("[[check]]\nname = \"web\"\nplugin = \"http\"\ntarget = \"http://localhost/\"\n", &[]);
    let output = selfmon(&workdir, &["config", "check"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("OK, 1 checks (1 enabled)"), "{}", text(&output.stdout));
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
fn plugins_lists_what_is_loaded_and_why_files_were_refused() {
    let workdir =
        Workdir::new("", &[("noop", guests::NOOP), ("garbage", b"this is not wasm"), ("core", b"\0asm\x01\0\0\0")]);
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
    assert!(!stdout.contains("notes.txt"), "only .wasm files are plugins: {stdout}");
    assert_eq!(output.status.code(), Some(1), "refused files make the listing fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_stops_cleanly_on_sigterm_and_keeps_what_it_measured() {
    let target = Target::start().await;
    let port = free_port();
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[[check]]\nname = \"ok\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n",
        target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfmon"))
        .args(["serve", "--config"])
        .arg(workdir.config_file())
        .env("SELFMON_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/health");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = reqwest::get(&url).await {
            let body: serde_json::Value = response.json().await.unwrap();
            if body["checks"][0]["status"] == "healthy" {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "selfmon serve never reported the check healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let runs = workdir.stored_runs("ok");
    assert!(!runs.is_empty() && runs.iter().all(|(status, _, _)| status == "healthy"), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_config_file_selfmon_monitors_itself() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfmon"))
        .arg("serve")
        .current_dir(dir.path())
        .env("SELFMON_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("SELFMON_LOG", "warn")
        .env_remove("SELFMON_CONFIG")
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
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "SIGINT is a clean exit");
    assert!(dir.path().join("data/selfmon.db").is_file(), "the default database lives under ./data");
}
