//! The container image as an operator runs it: the repository's Dockerfile built around this build's binary, run by
//! podman with a config file mounted read-only, the key from the environment, the API published on loopback and the
//! data in a named volume. A build context named `build` stands in for the Dockerfile's stage of that name, which
//! then does not run at all: nothing is compiled in the container, and no registry is asked for anything (the base
//! image is the local one `scripts/setup` makes with debootstrap; the runtime stage still installs its Debian
//! packages from Debian's mirror).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{PATIENCE, free_port};

/// The repository: the Dockerfile and the build context.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The Dockerfile's default runtime base, which must be on this machine.
const BASE_IMAGE: &str = "docker.io/library/debian:bookworm-slim";
/// What the container's MONITORING_API_KEY is.
const KEY: &str = "container-test-key-0123456789";
/// The most a build may take: the runtime stage runs apt-get, and a debug binary makes a layer of some 400 MB.
const BUILD_TIME: Duration = Duration::from_secs(600);
/// The most any other podman call may take.
const CALL_TIME: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_image_runs_selfmon_as_its_own_user_and_stops_on_sigterm() {
    let installed = Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "podman is not installed: this test builds and runs the container image with it (scripts/setup installs podman and runc)"
    );
    let base = run(&["image", "exists", BASE_IMAGE], CALL_TIME).unwrap_or_else(|e| panic!("`podman image exists` {e}"));
    assert!(
        base.status.success(),
        "the base image {BASE_IMAGE} is missing: scripts/setup makes it from Debian with debootstrap"
    );

    // The container, its volume and the image share a name of this process's, removed however the test ends.
    let name = format!("selfmon-container-test-{}", std::process::id());
    let image = format!("localhost/{name}:latest");
    let _cleanup = Cleanup { name: name.clone(), image: image.clone() };

    // The `build` stage's output, as the runtime stage copies it: /out/selfmon.
    let context = tempfile::tempdir().unwrap();
    let out = context.path().join("build/out");
    std::fs::create_dir_all(&out).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_selfmon"));
    std::fs::hard_link(binary, out.join("selfmon"))
        .or_else(|_| std::fs::copy(binary, out.join("selfmon")).map(drop))
        .unwrap();
    let started = Instant::now();
    podman(
        &[
            "build",
            "--isolation=chroot",
            "--format=docker", // keeps the HEALTHCHECK, which OCI image configs cannot hold
            "--pull=never",
            "--build-context",
            &format!("build={}", context.path().join("build").display()),
            "--file",
            &format!("{REPO}/Dockerfile"),
            "--tag",
            &image,
            REPO,
        ],
        BUILD_TIME,
    );
    eprintln!("built {image} in {:?}", started.elapsed());

    // The config the image ships, and a check of its own, so that the answers show the mounted file is the one read.
    let shipped = std::fs::read_to_string(format!("{REPO}/packaging/container/selfmon.toml")).unwrap();
    let config = context.path().join("selfmon.toml");
    let mounted =
        "\n[[check]]\nname = \"mounted-config\"\nplugin = \"http\"\ntarget = \"http://127.0.0.1:8001/health\"\n";
    std::fs::write(&config, format!("{shipped}{mounted}")).unwrap();
    // selfmon reads it as uid 10001.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let port = free_port();
    // runc and explicit limits: what podman runs containers with on every machine the suite runs on, including
    // ones whose crun refuses a hybrid cgroup layout or that may not raise limits beyond their own hard ones.
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(1 << 20);
    podman(
        &[
            "run",
            "--detach",
            "--name",
            &name,
            "--runtime=runc",
            &format!("--ulimit=nofile={files}:{files}"),
            "--ulimit=nproc=4096:4096",
            "--publish",
            &format!("127.0.0.1:{port}:8001"),
            "--volume",
            &format!("{name}:/var/lib/selfmon"),
            "--volume",
            &format!("{}:/etc/selfmon/selfmon.toml:ro", config.display()),
            "--env",
            &format!("MONITORING_API_KEY={KEY}"),
            &image,
        ],
        CALL_TIME,
    );

    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    while !client.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status() == 200) {
        let state = podman(&["container", "inspect", "--format", "{{.State.Status}}", &name], CALL_TIME);
        assert_eq!(state.trim(), "running", "the container stopped before serving:\n{}", logs(&name));
        assert!(Instant::now() < deadline, "/health did not answer within {PATIENCE:?}:\n{}", logs(&name));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("serving {:?} after the build began", started.elapsed());

    let answer = client.get(format!("{url}/v1/health")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(body["checks"].as_array().unwrap().iter().any(|c| c["name"] == "mounted-config"), "{body}");
    let refused = client.get(format!("{url}/v1/health")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the API answered without the key");

    let health =
        run(&["healthcheck", "run", &name], CALL_TIME).unwrap_or_else(|e| panic!("`podman healthcheck run` {e}"));
    let said = podman(
        &["container", "inspect", "--format", "{{range .State.Health.Log}}{{.Output}}{{end}}", &name],
        CALL_TIME,
    );
    assert!(health.status.success(), "the image's HEALTHCHECK failed: {}{said}", text(&health.stdout));

    // selfmon itself (PID 1), not only what `podman exec` starts, runs as the image's user.
    let status = podman(&["exec", &name, "cat", "/proc/1/status"], CALL_TIME);
    for field in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.split_whitespace().skip(1).all(|id| id == "10001"), "{line}");
    }
    podman(&["exec", &name, "test", "-f", "/var/lib/selfmon/selfmon.db"], CALL_TIME);

    let stopping = Instant::now();
    podman(&["stop", "--time", "30", &name], CALL_TIME);
    let took = stopping.elapsed();
    let code = podman(&["container", "inspect", "--format", "{{.State.ExitCode}}", &name], CALL_TIME);
    assert_eq!(code.trim(), "0", "selfmon did not exit cleanly on SIGTERM:\n{}", logs(&name));
    assert!(took < Duration::from_secs(10), "selfmon took {took:?} to stop on SIGTERM");
}

/// Removes the test's container, volume and image, whether it passed or not.
struct Cleanup {
    name: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let calls: [&[&str]; 3] = [
            &["rm", "--force", "--ignore", "--time=0", self.name.as_str()],
            &["volume", "rm", "--force", self.name.as_str()],
            &["rmi", "--force", "--ignore", self.image.as_str()],
        ];
        for args in calls {
            match run(args, CALL_TIME) {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!("cleanup: `podman {}` failed: {}", args.join(" "), text(&output.stderr)),
                Err(e) => eprintln!("cleanup: `podman {}` {e}", args.join(" ")),
            }
        }
    }
}

/// `podman ARGS`, killed if it takes longer than `limit`.
fn run(args: &[&str], limit: Duration) -> Result<Output, String> {
    let child = Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Its output is read while it runs (a build says a lot), on a thread of its own so the wait can end.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match result.recv_timeout(limit) {
        Ok(output) => output.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            Err(format!("took longer than {limit:?}"))
        }
    }
}

/// `podman ARGS`, which must succeed within `limit`; what it printed.
fn podman(args: &[&str], limit: Duration) -> String {
    let output = run(args, limit).unwrap_or_else(|e| panic!("`podman {}` {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "`podman {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The container's output (selfmon logs to stderr), for failure messages.
fn logs(name: &str) -> String {
    run(&["logs", name], CALL_TIME).map_or_else(|e| e, |o| format!("{}{}", text(&o.stdout), text(&o.stderr)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
