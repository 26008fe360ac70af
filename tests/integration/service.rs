//! selfmon installed as operators install it: the release tarball unpacked and run with its service config, the
//! systemd unit verified by `systemd-analyze` against the tarball's binary and man pages, the shell completions
//! sourced by bash, the readiness protocol of `Type=notify` on a socket of the test's own, `healthcheck` over HTTP
//! and pinned TLS, and `--log-format json` on stderr.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::fakes::TestCa;
use crate::support::{PATIENCE, Workdir, free_port, selfmon_command, serve_command, signal};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `scripts/release` around this build's binary, into `out`: the unpacked release's root.
fn release(out: &Path) -> PathBuf {
    let made = Command::new(Path::new(REPO).join("scripts/release"))
        .args(["--binary", env!("CARGO_BIN_EXE_selfmon"), "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let tarball = PathBuf::from(text(&made.stdout).trim());
    let verified =
        Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(out).output().unwrap();
    assert!(verified.status.success(), "{}{}", text(&verified.stdout), text(&verified.stderr));
    let unpacked = out.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untar = Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked).output().unwrap();
    assert!(untar.status.success(), "{}", text(&untar.stderr));
    let name = tarball.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz").to_string();
    assert!(name.starts_with(&format!("selfmon-{}-", env!("CARGO_PKG_VERSION"))), "{name}");
    unpacked.join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_release_tarball_unpacks_to_a_selfmon_that_serves_with_its_service_config() {
    let out = tempfile::tempdir().unwrap();
    let root = release(out.path());
    for file in [
        "bin/selfmon",
        "etc/selfmon.toml",
        "etc/selfmon.example.toml",
        "systemd/selfmon.service",
        "completions/selfmon.bash",
        "completions/_selfmon",
        "completions/selfmon.fish",
        "man/man1/selfmon.1",
        "man/man1/selfmon-serve.1",
        "man/man1/selfmon-logs-search.1",
        "LICENSE",
        "README.md",
        "INSTALL",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing from the tarball");
    }
    let binary = root.join("bin/selfmon");

    // The service config as shipped, with its absolute paths moved into the test's folder and free ports.
    let data = out.path().join("var-lib-selfmon");
    let (api, dashboard) = (free_port(), free_port());
    let config = std::fs::read_to_string(root.join("etc/selfmon.toml"))
        .unwrap()
        .replace("/var/lib/selfmon", &data.display().to_string())
        .replace("/etc/selfmon", &out.path().join("etc-selfmon").display().to_string())
        .replace("127.0.0.1:8001", &format!("127.0.0.1:{api}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{dashboard}"));
    let config_file = out.path().join("selfmon.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut command = Command::new(&binary);
    command.env("SELFMON_CONFIG", &config_file).env("SELFMON_LOG", "warn").stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SELFMON_") && name != "SELFMON_CONFIG" {
            command.env_remove(name);
        }
    }
    let (mut child, url) = serve_command(command, api).await;
    let health = Command::new(&binary).arg("healthcheck").env("SELFMON_CONFIG", &config_file).output().unwrap();
    assert!(health.status.success(), "{}", text(&health.stderr));
    let board: Value = reqwest::get(format!("{url}/v1/health")).await.unwrap().json().await.unwrap();
    assert_eq!(board["checks"][0]["name"], "selfmon-api", "{board}");
    assert!(data.join("selfmon.db").is_file(), "the database is in the state directory");
    signal(&child, Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
    let health = Command::new(&binary).arg("healthcheck").env("SELFMON_CONFIG", &config_file).output().unwrap();
    assert_eq!(health.status.code(), Some(1), "nothing serves any more");
    assert!(text(&health.stderr).starts_with("unhealthy: "), "{}", text(&health.stderr));

    // Every man page is well-formed roff, and `man` finds selfmon(1) where the tarball puts it.
    for page in std::fs::read_dir(root.join("man/man1")).unwrap() {
        let page = page.unwrap().path();
        let checked = Command::new("groff").args(["-man", "-ww", "-z"]).arg(&page).output().unwrap();
        assert!(checked.status.success() && checked.stderr.is_empty(), "{}: {}", page.display(), text(&checked.stderr));
    }
    let found = Command::new("man").args(["-w", "selfmon"]).env("MANPATH", root.join("man")).output().unwrap();
    assert!(text(&found.stdout).trim().ends_with("man1/selfmon.1"), "{}", text(&found.stderr));

    // The unit, as systemd reads it, with the tarball's binary where it would be installed: no warning at all.
    let unit = std::fs::read_to_string(root.join("systemd/selfmon.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{unit}");
    for line in unit.lines().filter(|l| !l.starts_with('#')) {
        // What wasmtime cannot run under: it writes machine code and then executes it, and reserves address space.
        let forbidden = [
            "MemoryDenyWriteExecute=yes",
            "MemoryDenyWriteExecute=true",
            "MemoryDenyWriteExecute=on",
            "MemoryDenyWriteExecute=1",
            "LimitAS=",
            "ProcSubset=pid",
            "PrivateNetwork=yes",
            "PrivateNetwork=true",
            "PrivateNetwork=on",
            "PrivateNetwork=1",
        ];
        for forbidden in forbidden {
            assert!(!line.starts_with(forbidden), "the unit sets {line}");
        }
    }
    let units = out.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("selfmon.service"),
        unit.replace("/usr/local/bin/selfmon", &binary.display().to_string()),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .args(["verify", "selfmon.service"])
        .current_dir(&units)
        .env("MANPATH", root.join("man"))
        .output()
        .unwrap();
    let said = format!("{}{}", text(&verified.stdout), text(&verified.stderr));
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // Bash completes subcommands and their options from the sourced script.
    let completions = root.join("completions/selfmon.bash");
    let complete = |words: &[&str]| -> Vec<String> {
        let words: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let words = words.join(" ");
        let script = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _selfmon selfmon \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            completions.display()
        );
        let run = Command::new("bash").args(["--noprofile", "--norc", "-c", &script]).output().unwrap();
        assert!(run.status.success(), "{}", text(&run.stderr));
        text(&run.stdout).lines().map(str::to_string).collect()
    };
    assert_eq!(complete(&["selfmon", "se"]), ["serve"]);
    assert!(complete(&["selfmon", "logs", ""]).contains(&"search".to_string()));
    assert!(complete(&["selfmon", "logs", "search", "--fo"]).contains(&"--follow".to_string()));
    assert_eq!(complete(&["selfmon", "completions", "z"]), ["zsh"]);
}

/// What `serve` tells systemd on `NOTIFY_SOCKET`, as `Type=notify` with `WatchdogSec=` expects: READY=1 once the API
/// answers, WATCHDOG=1 at half the interval, STOPPING=1 on SIGTERM; and never READY=1 when it cannot start.
#[tokio::test(flavor = "multi_thread")]
async fn serve_tells_systemd_when_it_is_ready_alive_and_stopping() {
    let port = free_port();
    let workdir = Workdir::new(&format!("[server]\napi_listen = \"127.0.0.1:{port}\"\n"), &[]);
    let socket_path = workdir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut command = selfmon_command(&workdir);
    command.arg("serve").env("NOTIFY_SOCKET", &socket_path).env("WATCHDOG_USEC", "400000").stdout(Stdio::null());
    let mut child = Guard(command.spawn().unwrap());
    let mut buffer = [0u8; 4096];
    let mut next = || -> String {
        let read = socket.recv(&mut buffer).expect("a notification within the test's patience");
        text(&buffer[..read])
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.lines().any(|l| l == format!("STATUS=serving 0 checks on http://127.0.0.1:{port}")), "{ready}");
    // Ready means serving: the API answers at once.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // Beats come 200 ms apart (half of WATCHDOG_USEC): timed from the second, which comes after this test has read
    // the first (and anything that waited for it).
    for _ in 0..2 {
        assert_eq!(next(), "WATCHDOG=1\n");
    }
    let second = std::time::Instant::now();
    for _ in 0..2 {
        assert_eq!(next(), "WATCHDOG=1\n");
    }
    assert!(second.elapsed() >= Duration::from_millis(300), "{:?}", second.elapsed());
    signal(&child.0, Signal::SIGTERM);
    let stopping = loop {
        let message = next();
        if message != "WATCHDOG=1\n" {
            break message;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(child.0.wait().unwrap().success());

    // A config that does not load: no READY=1, and a failed exit for systemd to see.
    let broken = Workdir::new("[server]\napi_listen = \"not an address\"\n", &[]);
    let failed = selfmon_command(&broken).arg("serve").env("NOTIFY_SOCKET", &socket_path).output().unwrap();
    assert!(!failed.status.success());
    socket.set_nonblocking(true).unwrap();
    assert!(socket.recv(&mut buffer).is_err(), "a notification from a selfmon that never started");
}

/// `healthcheck` over HTTPS trusts exactly the certificate `[tls] cert_file` names: the server presenting another
/// one is unhealthy, whatever signed it.
#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_over_tls_trusts_only_the_configured_certificate() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let port = free_port();
    let config = |cert: &str| {
        format!(
            "[server]\napi_listen = \"0.0.0.0:{port}\"\n\n[api]\nopen_to_network = true\n\n\
             [tls]\ncert_file = \"{cert}\"\nkey_file = \"key.pem\"\n"
        )
    };
    let workdir = Workdir::new(&config("cert.pem"), &[]);
    std::fs::write(workdir.path().join("cert.pem"), &ca.leaf_pem).unwrap();
    std::fs::write(workdir.path().join("key.pem"), &ca.leaf_key_pem).unwrap();
    std::fs::write(workdir.path().join("other.pem"), &other.leaf_pem).unwrap();
    std::fs::write(workdir.path().join("other.toml"), config("other.pem")).unwrap();
    let mut command = selfmon_command(&workdir);
    command.stderr(Stdio::null());
    let mut child = Guard(command.arg("serve").spawn().unwrap());
    let probe = || selfmon_command(&workdir).arg("healthcheck").output().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut answered = probe();
    while !answered.status.success() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answered = probe();
    }
    assert!(answered.status.success(), "{}", text(&answered.stderr));

    let refused = selfmon_command(&workdir).arg("healthcheck").env("SELFMON_CONFIG", "other.toml").output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(said.contains("TLS") && said.contains("`[tls] cert_file`"), "{said}");
    signal(&child.0, Signal::SIGTERM);
    assert!(child.0.wait().unwrap().success());
}

/// Kills the child on drop (a failed assertion leaves no server behind).
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With `--log-format json`, stderr carries the log files' own lines: one JSON object per line with the same
/// fields, for a collector that reads a container's or the journal's output.
#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_writes_the_log_files_lines_on_stderr() {
    let port = free_port();
    let workdir = Workdir::new(&format!("[server]\napi_listen = \"127.0.0.1:{port}\"\n"), &[]);
    let said = workdir.path().join("stderr.txt");
    let mut command = selfmon_command(&workdir);
    command.arg("--log-format").arg("json").env("SELFMON_LOG", "info").stderr(std::fs::File::create(&said).unwrap());
    let (mut child, _) = serve_command(command, port).await;
    signal(&child, Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
    let stderr = std::fs::read_to_string(&said).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let running = lines.iter().find(|l| l["message"] == "selfmon is running").expect("the start is logged");
    assert_eq!((running["level"].as_str(), running["service"].as_str()), (Some("INFO"), Some("selfmon")), "{running}");
    assert_eq!(running["checks"], 0, "the config has no checks: {running}");
    assert!(humantime::parse_rfc3339(running["timestamp"].as_str().unwrap()).is_ok(), "{running}");
    let file = std::fs::read_to_string(workdir.path().join("logs/application/selfmon.log")).unwrap();
    let in_file: Value = file
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["message"] == "selfmon is running")
        .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(running), keys(&in_file), "the same fields as the log file's line");
}
