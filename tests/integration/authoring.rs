//! `selfmon plugin new`, `validate` and `run`, as a plugin author uses them: on real components, with the real
//! binary, and a scaffolded crate built with cargo for wasm32-wasip2.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use selfmon_plugin_artifacts::guests;

use crate::support::{Selfmon, Workdir, selfmon_command, switchable_service};

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `bytes` written as `name` in the workdir; its path.
fn component(workdir: &Workdir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = workdir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn validate_says_what_a_component_is_asks_for_and_what_is_wrong() {
    let workdir = Workdir::new("", &[]);
    let http = component(&workdir, "http.wasm", selfmon_plugin_artifacts::HTTP);
    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&http).output().unwrap();
    let (stdout, stderr) = text(&output);
    // The built-in http plugin's component, dropped in, would be refused for its name: everything else is fine.
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    for expected in [
        "plugin: http ",
        "(checker)",
        "selfmon:plugin/health-check@0.1.0",
        "wasi:http/outgoing-handler",
        "only to the targets its check is granted",
        "selfmon:plugin/types@0.1.0",
        "expect_status",
        "problem: the name `http` is a built-in plugin's",
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing from:\n{stdout}");
    }
    let noop = component(&workdir, "noop.wasm", guests::NOOP);
    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&noop).output().unwrap();
    assert!(output.status.success(), "{}", text(&output).0);
    assert!(text(&output).0.contains("ok: selfmon loads it as a checker"), "{}", text(&output).0);
    // A rule asks to read the store; a parser is a parser.
    let health = component(&workdir, "health.wasm", selfmon_plugin_artifacts::HEALTH);
    let (stdout, _) = text(&selfmon_command(&workdir).args(["plugin", "validate"]).arg(&health).output().unwrap());
    assert!(stdout.contains("selfmon:plugin/query@0.1.0") && stdout.contains("read-only"), "{stdout}");
    let logfmt = component(&workdir, "logfmt.wasm", selfmon_plugin_artifacts::LOGFMT);
    let (stdout, _) = text(&selfmon_command(&workdir).args(["plugin", "validate"]).arg(&logfmt).output().unwrap());
    assert!(stdout.contains("(parser)") && !stdout.contains("wasi:http/outgoing-handler"), "{stdout}");

    // Problems are named: not a component, another contract version.
    let garbage = component(&workdir, "garbage.wasm", b"\0asm not really");
    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&garbage).output().unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains("problem: not a WebAssembly component"), "{stdout}");
    let future = component(&workdir, "future.wasm", guests::FUTURE);
    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&future).output().unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains("problem: built against contract version") && stdout.contains("accepts 0.1.x"), "{stdout}");
    let missing = selfmon_command(&workdir).args(["plugin", "validate", "nowhere.wasm"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).1.contains("error: nowhere.wasm: cannot read"), "{}", text(&missing).1);
}

// Multi-threaded: the test's own services answer while it waits for the command.
#[tokio::test(flavor = "multi_thread")]
async fn run_calls_a_checker_and_a_parser_once_in_the_sandbox() {
    let (up, service) = switchable_service().await;
    let workdir = Workdir::new("", &[]);
    let http = component(&workdir, "http.wasm", selfmon_plugin_artifacts::HTTP);
    let run = |args: &[&str]| selfmon_command(&workdir).args(["plugin", "run"]).arg(&http).args(args).output().unwrap();

    let output = run(&["--target", &service, "--set", "expect_status=[200]"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("http: healthy - HTTP 200"), "{stdout}");
    assert!(stdout.contains("metric response_time_seconds"), "{stdout}");
    up.store(false, Ordering::SeqCst);
    let output = run(&["--target", &service]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output).0);
    assert!(text(&output).0.contains("unhealthy - HTTP 503"));
    // Settings are checked as the config file's are: a value of the wrong kind is refused, naming its key.
    let output = run(&["--target", &service, "--set", "expect_status=abc"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("expect_status"), "{}", text(&output).1);

    // A parser reads stdin and prints records.
    let logfmt = component(&workdir, "logfmt.wasm", selfmon_plugin_artifacts::LOGFMT);
    let mut child = selfmon_command(&workdir)
        .args(["plugin", "run"])
        .arg(&logfmt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A line that is not UTF-8 is read as the tailer reads it, not dropped with the rest.
    let input = b"level=error msg=\"payment failed\" order=77\nlevel=info msg=caf\xe9\njust some text\n";
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 3, "{stdout}");
    assert_eq!((records[0]["level"].as_str(), records[0]["message"].as_str()), (Some("error"), Some("payment failed")));
    assert_eq!(records[0]["fields"]["order"], "77");
    assert_eq!(records[1]["message"], "caf\u{fffd}");
    assert_eq!(records[2]["parsed"], false);
    assert!(stderr.contains("3 records, 1 kept raw"), "{stderr}");

    // Options only a checker takes are refused for a parser, and a secret is never echoed.
    let output =
        selfmon_command(&workdir).args(["plugin", "run"]).arg(&logfmt).args(["--target", &service]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("`--target` is for checkers; `logfmt` is a parser"), "{}", text(&output).1);
    let output = run(&["--target", &service, "--secret", "hunter2-password"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!text(&output).1.contains("hunter2") && text(&output).1.contains("KEY=VALUE"), "{}", text(&output).1);
}

#[tokio::test]
async fn run_evaluates_a_rule_against_the_configured_store() {
    let (up, service) = switchable_service().await;
    let config = format!("[[check]]\nname = \"web\"\nplugin = \"http\"\ntarget = \"{service}\"\ninterval = \"1s\"\n");
    let workdir = Workdir::new(&config, &[]);
    // Before selfmon has stored anything there is nothing to evaluate against, and no store is made.
    let health = component(&workdir, "health.wasm", selfmon_plugin_artifacts::HEALTH);
    let output = selfmon_command(&workdir).args(["plugin", "run"]).arg(&health).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("`[storage] path`"), "{}", text(&output).1);
    assert!(!workdir.path().join("selfmon.db").exists());
    up.store(false, Ordering::SeqCst);
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.wait_for("web", "unhealthy", |c| c["status"] == "unhealthy").await;
    selfmon.stop().await;

    let output = selfmon_command(&workdir).args(["plugin", "run"]).arg(&health).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("critical health: web is unhealthy") && stdout.contains("check=web"), "{stdout}");
}

/// Run `program` with `args` in `dir` for a scaffolded crate, building into `target`; its output, checked.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Output {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "cargo {args:?} failed:\n{stdout}\n{stderr}");
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn new_makes_crates_that_test_build_validate_and_run() {
    let (_up, service) = switchable_service().await;
    let closed = crate::support::closed_port().await;
    let workdir = Workdir::new("", &[]);
    // Shared between runs: the SDK's dependencies are compiled once.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffolded");
    // Against this checkout's SDK, by path (`--sdk`); `new_depends_on_the_sdk_by_version_as_packaged` builds
    // against the packaged SDK, by version.
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    for (name, kind) in [("uptime-probe", "checker"), ("bot-lines", "parser"), ("slow-checks", "rule")] {
        let output = selfmon_command(&workdir)
            .args(["plugin", "new", name, "--kind", kind, "--dir"])
            .arg(workdir.path())
            .arg("--sdk")
            .arg(&sdk)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        let root = workdir.path().join(name);
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let path = toml::Value::String(sdk.canonicalize().unwrap().to_str().unwrap().to_string());
        assert!(manifest.contains(&format!("selfmon-sdk = {{ path = {path} }}")), "{manifest}");
        // The versions selfmon itself is built and tested with.
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), root.join("Cargo.lock")).unwrap();
        // Its own test passes natively; it builds into a component selfmon accepts.
        let tested = cargo(&root, &target, &["test", "--quiet"]);
        assert!(text(&tested).0.contains("test result: ok. 1 passed"), "{}", text(&tested).0);
        cargo(&root, &target, &["build", "--release", "--quiet", "--target", "wasm32-wasip2"]);
        let wasm = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&wasm).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains(&format!("plugin: {name} 0.1.0 ({kind})")), "{stdout}");
        if kind == "checker" {
            let output = selfmon_command(&workdir)
                .args(["plugin", "run"])
                .arg(&wasm)
                .args(["--target", &service, "--set", "slow_ms=5000"])
                .output()
                .unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
            assert!(stdout.starts_with(&format!("{name}: healthy - HTTP 200")), "{stdout}");
            // A service that does not answer is unhealthy, not a check that could not run.
            let output = selfmon_command(&workdir)
                .args(["plugin", "run"])
                .arg(&wasm)
                .args(["--target", &format!("http://{closed}/")])
                .output()
                .unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
            assert!(stdout.starts_with(&format!("{name}: unhealthy - ")), "{stdout}");
        }
    }
    // A name that cannot be a plugin's, a built-in's name, and a crate that exists already, are refused.
    for (bad, reason) in
        [("Bad Name", "cannot be a plugin's name"), ("self", "cannot be a plugin's name"), ("http", "built-in")]
    {
        let output = selfmon_command(&workdir)
            .args(["plugin", "new", bad, "--kind", "checker", "--dir"])
            .arg(workdir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{bad}");
        assert!(text(&output).1.contains(reason), "{bad}: {}", text(&output).1);
    }
    let output = selfmon_command(&workdir)
        .args(["plugin", "new", "uptime-probe", "--kind", "checker", "--dir"])
        .arg(workdir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("exists already"));
    let output = selfmon_command(&workdir)
        .args(["plugin", "new", "elsewhere", "--kind", "checker", "--dir"])
        .arg(workdir.path())
        .arg("--sdk")
        .arg(workdir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("is not selfmon's sdk/ folder"), "{}", text(&output).1);
}

/// `selfmon-sdk` as `cargo package` makes it for crates.io, unpacked in `dir`: the folder of the package.
fn packaged_sdk(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // A target directory of its own: not waiting for the workspace's builds. `--no-verify`: the scaffold's build
    // below is the check that matters.
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["package", "-p", "selfmon-sdk", "--allow-dirty", "--no-verify", "--target-dir"])
        .arg(dir.join("package-target"))
        .current_dir(&repo)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "cargo package failed:\n{stdout}\n{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    let file = dir.join(format!("package-target/package/selfmon-sdk-{version}.crate"));
    // A .crate is a gzipped tarball of one folder, `NAME-VERSION/`.
    let output = Command::new("tar").arg("-xzf").arg(&file).arg("-C").arg(dir).output().unwrap();
    assert!(output.status.success(), "tar: {}", text(&output).1);
    dir.join(format!("selfmon-sdk-{version}"))
}

/// What a plugin author gets without a checkout: `plugin new` depends on `selfmon-sdk` by version, and the packaged
/// crate (patched in for the one on crates.io) has the contract inside and builds a plugin selfmon runs.
#[tokio::test(flavor = "multi_thread")]
async fn new_depends_on_the_sdk_by_version_as_packaged() {
    let (_up, service) = switchable_service().await;
    let workdir = Workdir::new("", &[]);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // One contract: the repository's `wit` is the SDK's (a symlink), not a copy that could drift.
    assert_eq!(repo.join("wit").canonicalize().unwrap(), repo.join("sdk/wit").canonicalize().unwrap());
    let sdk = packaged_sdk(workdir.path());
    let wit = sdk.join("wit");
    assert!(!std::fs::symlink_metadata(&wit).unwrap().file_type().is_symlink(), "{} is a symlink", wit.display());
    // Every file of the contract, as it is here.
    let files: Vec<_> =
        std::fs::read_dir(repo.join("sdk/wit")).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let packaged = std::fs::read(wit.join(&file)).unwrap_or_default();
        assert_eq!(
            packaged,
            std::fs::read(repo.join("sdk/wit").join(&file)).unwrap(),
            "{file:?} differs or is missing"
        );
    }

    let name = "published-probe";
    let output = selfmon_command(&workdir)
        .args(["plugin", "new", name, "--kind", "checker", "--dir"])
        .arg(workdir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(stdout.contains(&format!("against selfmon-sdk {version} from crates.io")), "{stdout}");
    let root = workdir.path().join(name);
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(&format!("\nselfmon-sdk = \"{version}\"\n")), "{manifest}");
    // The packaged crate stands in for the published one.
    let path = toml::Value::String(sdk.to_str().unwrap().to_string());
    std::fs::write(
        root.join("Cargo.toml"),
        format!("{manifest}\n[patch.crates-io]\nselfmon-sdk = {{ path = {path} }}\n"),
    )
    .unwrap();
    std::fs::copy(repo.join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
    // The target directory the other scaffolds share, so the dependencies are compiled once.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffolded");
    let built = cargo(&root, &target, &["build", "--release", "--target", "wasm32-wasip2"]);
    let compiled = format!("Compiling selfmon-sdk v{version} ({})", sdk.display());
    assert!(text(&built).1.contains(&compiled), "not built against the package:\n{}", text(&built).1);
    let wasm = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&wasm).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("plugin: {name} 0.1.0 (checker)")), "{stdout}");
    let output = selfmon_command(&workdir)
        .args(["plugin", "run"])
        .arg(&wasm)
        .args(["--target", &service, "--set", "slow_ms=5000"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("{name}: healthy - HTTP 200")), "{stdout}");
}

/// Lines into `selfmon plugin run FILE ARGS`: the exit status, the records and stderr.
fn parse_with(
    workdir: &Workdir,
    file: &Path,
    args: &[&str],
    lines: &str,
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let mut child = selfmon_command(workdir)
        .args(["plugin", "run"])
        .arg(file)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect(), stderr)
}

#[test]
fn the_python_example_builds_against_the_contract_and_parses() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let componentize = repo.join("target/componentize-venv/bin/componentize-py");
    assert!(componentize.exists(), "scripts/setup installs componentize-py into target/componentize-venv");
    let workdir = Workdir::new("", &[]);
    let wasm = workdir.path().join("bracketed.wasm");
    let built = Command::new(repo.join("examples/python-parser/build.sh"))
        .arg(&wasm)
        .env("COMPONENTIZE_PY", &componentize)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}{}", text(&built).0, text(&built).1);

    let output = selfmon_command(&workdir).args(["plugin", "validate"]).arg(&wasm).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("plugin: bracketed 0.1.0 (parser)"), "{stdout}");
    assert!(stdout.contains("selfmon:plugin/log-parser@0.1.0"), "{stdout}");

    let lines = "2026-11-27 10:00:01 [ERROR] bot: reply failed\n    Traceback (most recent call last):\n\nnot a line of this format\n2026-11-27 10:00:02.250 [warn] api.http: slow answer\n";
    let (status, records, stderr) = parse_with(&workdir, &wasm, &["--set", "utc_offset=+03:00"], lines);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(records.len(), 3, "{records:?}");
    let first = &records[0];
    assert_eq!((first["level"].as_str(), first["service"].as_str()), (Some("error"), Some("bot")));
    assert!(first["timestamp"].as_str().unwrap().starts_with("2026-11-27T07:00:01"), "{first}");
    assert!(first["message"].as_str().unwrap().starts_with("reply failed"), "{first}");
    assert!(first["message"].as_str().unwrap().contains("Traceback"), "the continuation was not joined: {first}");
    assert_eq!(
        (records[1]["parsed"].as_bool(), records[1]["message"].as_str()),
        (Some(false), Some("not a line of this format"))
    );
    assert!(records[2]["timestamp"].as_str().unwrap().starts_with("2026-11-27T07:00:02.25"), "{}", records[2]);
    assert_eq!(records[2]["level"], "warning");

    // Its own validation names the key.
    let (status, _, stderr) = parse_with(&workdir, &wasm, &["--set", "utc_offset=3h"], "");
    assert_eq!(status, Some(1));
    assert!(stderr.contains("utc_offset"), "{stderr}");
}

#[test]
fn an_uncaught_python_exception_is_named_in_the_failure() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let componentize = repo.join("target/componentize-venv/bin/componentize-py");
    let workdir = Workdir::new("", &[]);
    // The example parser, made to raise on a marker line.
    let example = std::fs::read_to_string(repo.join("examples/python-parser/app.py")).unwrap();
    let raising = example.replace(
        "        return [parse_line(line, offset) for line in request.lines]",
        "        if \"BOOM\" in request.lines:\n            raise RuntimeError(\"deliberate failure on BOOM\")\n        return [parse_line(line, offset) for line in request.lines]",
    );
    assert_ne!(raising, example, "the example's parse() changed: update this test");
    std::fs::write(workdir.path().join("app.py"), raising).unwrap();
    let wasm = workdir.path().join("raising.wasm");
    let built = Command::new(&componentize)
        .arg("--wit-path")
        .arg(repo.join("sdk/wit"))
        .args(["--world", "parser", "componentize", "app", "--output"])
        .arg(&wasm)
        .current_dir(workdir.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{}{}", text(&built).0, text(&built).1);

    let (status, records, stderr) = parse_with(&workdir, &wasm, &[], "2026-11-27 10:00:01 [INFO] bot: fine\nBOOM\n");
    assert_eq!(status, Some(1), "{stderr}");
    // The batch is kept raw, each line with the reason: the exception, not the interpreter's internals.
    assert_eq!(records.len(), 2, "{records:?}");
    let error = records[0]["error"].as_str().unwrap();
    assert!(error.contains("uncaught exception: RuntimeError: deliberate failure on BOOM"), "{error}");
}
