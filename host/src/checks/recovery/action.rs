//! Running a recovery action: a command without a shell and with a clean environment, or an HTTP request, within
//! its timeout; what it printed or answered is kept, at most `OUTPUT_BYTES` (4 KiB).

use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::status::Outcome;
use crate::config::Secret;
use crate::events::outgoing::{Client, Request, Why};
use crate::runtime::{Reach, TlsConfig};

/// Output of an action kept in the record.
const OUTPUT_BYTES: usize = 4096;
/// Variables a command inherits from selfmon; everything else it gets only through `[check.recovery] env`.
const INHERITED: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];
/// How long output is still read after a command exits (a daemon it started may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What to do, from `[check.recovery]`.
#[derive(Debug, Clone)]
pub enum Action {
    /// A program and its arguments, run without a shell, with these variables besides the inherited ones.
    Command { argv: Vec<String>, env: Vec<(String, Secret)> },
    /// A request, for example to a process manager's restart endpoint.
    Http { method: http::Method, url: String, headers: Vec<(String, Secret)> },
}

impl Action {
    /// How the action is shown: the program and arguments, or the method and the URL without its query.
    pub fn describe(&self) -> String {
        match self {
            Self::Command { argv, .. } => argv.join(" "),
            Self::Http { method, url, .. } => format!("{method} {}", url.split('?').next().unwrap_or_default()),
        }
    }
}

/// Run an action within `timeout`: its outcome, exit code (commands) or status (requests), and output.
pub async fn run(action: &Action, timeout: Duration) -> (Outcome, Option<i32>, String) {
    match action {
        Action::Command { argv, env } => run_command(argv, env, timeout).await,
        Action::Http { method, url, headers } => run_request(method, url, headers, timeout).await,
    }
}

async fn run_command(argv: &[String], env: &[(String, Secret)], timeout: Duration) -> (Outcome, Option<i32>, String) {
    let Some((program, args)) = argv.split_first() else { return (Outcome::Error, None, "no command".into()) };
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear();
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in env {
        command.env(name, value.expose());
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return (Outcome::Error, None, format!("cannot start `{program}`: {error}")),
    };
    // Both pipes are read at once, past the kept part, so a chatty command never blocks on a full pipe.
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(capture(stdout, output.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(capture(stderr, output.clone())));
    }
    let (outcome, code) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (if status.success() { Outcome::Ran } else { Outcome::Failed }, status.code()),
        Ok(Err(error)) => return (Outcome::Error, None, error.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            (Outcome::TimedOut, None)
        }
    };
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            abort.abort();
        }
    }
    let mut text = String::from_utf8_lossy(&output.lock().expect("output lock")).trim().to_string();
    if outcome == Outcome::TimedOut {
        text = format!("did not finish within {}; {text}", humantime::format_duration(timeout))
            .trim_end_matches("; ")
            .to_string();
    }
    (outcome, code, text)
}

/// Read a pipe to its end, keeping the first [`OUTPUT_BYTES`] of everything read into `kept`.
async fn capture(mut pipe: impl tokio::io::AsyncRead + Unpin, kept: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut chunk).await {
        if read == 0 {
            return;
        }
        let mut kept = kept.lock().expect("output lock");
        let room = OUTPUT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..read.min(room)]);
    }
}

async fn run_request(
    method: &http::Method,
    url: &str,
    headers: &[(String, Secret)],
    timeout: Duration,
) -> (Outcome, Option<i32>, String) {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    let client = match CLIENT.get_or_init(|| Client::new(&TlsConfig::system(), Reach::Anywhere)) {
        Ok(client) => client,
        Err(error) => return (Outcome::Error, None, error.clone()),
    };
    let request = Request { method: method.clone(), url, headers, body: None, timeout, keep: OUTPUT_BYTES };
    match client.send(request).await {
        Ok(answer) => {
            let output = String::from_utf8_lossy(&answer.body).trim().to_string();
            let outcome = if (200..300).contains(&answer.status) { Outcome::Ran } else { Outcome::Failed };
            (outcome, Some(i32::from(answer.status)), output)
        }
        Err(no) if no.why == Why::TimedOut => (Outcome::TimedOut, None, no.message),
        Err(no) => (Outcome::Error, None, no.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Redactor;

    #[tokio::test]
    async fn commands_run_with_a_clean_environment_and_redacted_output() {
        // SAFETY: the variable is set before anything else in this test reads the environment.
        unsafe { std::env::set_var("SELFMON_TEST_LEAK", "do-not-show-me") };
        let env = vec![("GIVEN".to_string(), Secret::new("shown-secret".into()))];
        let argv: Vec<String> = ["sh", "-c", "echo \"[$SELFMON_TEST_LEAK][$GIVEN]\"; echo oops >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (outcome, code, output) = run_command(&argv, &env, Duration::from_secs(10)).await;
        assert_eq!((outcome, code), (Outcome::Failed, Some(3)));
        assert!(output.starts_with("[][shown-secret]") && output.contains("oops"), "{output}");
        assert_eq!(
            Redactor::new(["shown-secret".to_string()]).apply(&output),
            output.replace("shown-secret", "[redacted]")
        );

        let (outcome, _, output) =
            run_command(&["sleep".to_string(), "5".to_string()], &[], Duration::from_millis(200)).await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(output.starts_with("did not finish within 200ms"), "{output}");
        let (outcome, _, output) = run_command(&["/no/such/program".to_string()], &[], Duration::from_secs(1)).await;
        assert_eq!(outcome, Outcome::Error);
        assert!(output.starts_with("cannot start `/no/such/program`"), "{output}");
    }
}
