//! What the tests share: a loopback target server, a selfmon started in-process on a temporary directory, and
//! polling helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen within a few seconds before it gives up. Not a
/// performance target: a generous bound so a loaded machine does not fail a test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The Python with the real clients `scripts/setup` installs from PyPI: the OpenTelemetry SDK and `gql`.
pub const CLIENT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/client-venv/bin/python");

/// A service on loopback whose `GET /` answers 200 while the flag is up and 503 once it is down; its URL.
pub async fn switchable_service() -> (Arc<AtomicBool>, String) {
    let up = Arc::new(AtomicBool::new(true));
    let switch = up.clone();
    let service = Router::new().route(
        "/",
        get(move || {
            let up = switch.load(Ordering::SeqCst);
            async move { if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE } }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    (up, url)
}

/// An HTTP server on loopback that answers the ways a monitored service can.
pub struct Target {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _server: JoinHandle<()>,
}

impl Target {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/status/{code}",
                get(|UrlPath(code): UrlPath<u16>| async move { StatusCode::from_u16(code).unwrap() }),
            )
            .route(
                "/slow/{ms}",
                get(|UrlPath(ms): UrlPath<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "finally"
                }),
            )
            .route(
                "/agent",
                get(|headers: HeaderMap| async move {
                    let agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    if agent.starts_with("selfmon/") { StatusCode::OK } else { StatusCode::BAD_REQUEST }
                }),
            )
            .route(
                "/basic",
                get(|headers: HeaderMap| async move {
                    // `user:pass`, base64 (RFC 7617).
                    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                        Some("Basic dXNlcjpwYXNz") => StatusCode::OK,
                        _ => StatusCode::UNAUTHORIZED,
                    }
                }),
            )
            .route("/restart", axum::routing::post(|| async { (StatusCode::ACCEPTED, "restarting") }))
            .route("/json", get(|| async { axum::Json(serde_json::json!({"status": "ok", "checks": {"db": "down"}})) }))
            .route(
                "/auth",
                get(|headers: HeaderMap| async move {
                    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                        Some("Bearer s3cret-token") => StatusCode::OK,
                        _ => StatusCode::UNAUTHORIZED,
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(hits.clone(), count_hits))
            .with_state(());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, hits, _server: server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests this server has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn count_hits(
    State(hits): State<Arc<AtomicUsize>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    hits.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

/// A loopback address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Compiled plugins are cached across tests (and runs) so each test does not compile them again; the cache lives in
/// the build's own directory, where no other user can plant compiled code.
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The `selfmon` binary, run in `workdir` with its config, untouched by the developer's own SELFMON_* variables.
pub fn selfmon_command(workdir: &Workdir) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_selfmon"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SELFMON_") {
            command.env_remove(name);
        }
    }
    // Nor by a proxy of the developer's: requests to loopback receivers go straight to them unless a test says.
    for name in
        ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
    {
        command.env_remove(name);
    }
    command.current_dir(workdir.path()).env("SELFMON_CONFIG", workdir.config_file()).env("SELFMON_LOG", "warn");
    command
}

/// `selfmon serve` as a process of its own (its config listening on `port`), at log level `log`, once it answers
/// `/health`; the process and the API's URL.
pub async fn serve_binary(
    workdir: &Workdir,
    port: u16,
    log: &str,
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    let mut command = selfmon_command(workdir);
    command.env("SELFMON_LOG", log).stderr(stderr);
    serve_command(command, port).await
}

/// `command` (a [`selfmon_command`]) serving, its config listening on `port`, once it answers `/health`; the
/// process and the API's URL.
pub async fn serve_command(mut command: std::process::Command, port: u16) -> (std::process::Child, String) {
    let child = command.arg("serve").stdout(std::process::Stdio::null()).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while reqwest::get(format!("{url}/health")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "selfmon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, url)
}

/// Poll `probe` every 100 ms until it answers, for at most `within`.
pub async fn within<T>(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bytes` gzip-compressed, as a client sends a body with `Content-Encoding: gzip`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Send a signal to a child process, as an operator's `kill` or a service manager would.
pub fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// A temporary directory with a config file and a plugins folder.
pub struct Workdir {
    pub dir: TempDir,
}

/// The engine a test's store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Both engines, for tests that run on each.
pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

impl Workdir {
    /// [`Workdir::new`] with the store on `engine`: on PostgreSQL, a database of its own on the binary's shared
    /// server, and the privacy key a PostgreSQL store needs.
    pub fn on(engine: Engine, config: &str, guests: &[(&str, &[u8])]) -> Self {
        match engine {
            Engine::Sqlite => Self::new(config, guests),
            Engine::Postgres => {
                assert!(!config.contains("[storage]") && !config.contains("[privacy]"), "set by Workdir::on");
                let url = postgres::shared().database();
                let storage =
                    format!("[storage]\nurl = {url:?}\n\n[privacy]\nkey = \"test-privacy-key-0123456789\"\n\n");
                Self::new(&format!("{storage}{config}"), guests)
            }
        }
    }

    /// `config` is the `[[check]]` part (and any other sections); storage, the plugin cache, the system collector and
    /// the dashboard (off) are set up here unless `config` has its own `[plugins]`, `[system]` or `[dashboard]`. `{workdir}` in it stands for the
    /// directory's path.
    pub fn new(config: &str, guests: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config.replace("{workdir}", &dir.path().display().to_string());
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for (name, bytes) in guests {
            std::fs::write(dir.path().join("plugins").join(format!("{name}.wasm")), bytes).unwrap();
        }
        let mut text = String::new();
        let config = if config.contains("[storage]\n") {
            config.replacen("[storage]\n", "[storage]\npath = \"selfmon.db\"\n", 1)
        } else {
            text.push_str("[storage]\npath = \"selfmon.db\"\n\n");
            config
        };
        if !config.contains("[plugins]") {
            text.push_str(&format!("[plugins]\ncache_dir = {:?}\n\n", shared_cache_dir().display().to_string()));
        }
        if !config.contains("[system]") {
            text.push_str("[system]\nenabled = false\n\n");
        }
        if !config.contains("[dashboard]") {
            text.push_str("[dashboard]\nenabled = false\n\n");
        }
        text.push_str(&config);
        std::fs::write(dir.path().join("selfmon.toml"), text).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store its config names, opened as selfmon opens it (a test that drives capabilities without a server).
    pub async fn store(&self) -> selfmon::storage::Storage {
        let config = self.config();
        match config.storage.url(self.path()).unwrap() {
            Some(url) => {
                selfmon::storage::Storage::connect(&url, |_| Err(std::io::ErrorKind::NotFound.into())).await.unwrap()
            }
            None => selfmon::storage::Storage::open(&config.source.resolve(&config.storage.path)).unwrap(),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.path().join("selfmon.toml")
    }

    pub fn config(&self) -> selfmon::config::Config {
        let file = self.config_file();
        selfmon::config::Config::parse(&std::fs::read_to_string(&file).unwrap(), Some(&file)).unwrap()
    }

    /// Run SQL on the store its config names, beside a server using it (through `psql` on PostgreSQL).
    pub fn execute_sql(&self, sql: &str) {
        match self.config().storage.url(self.path()).unwrap() {
            Some(url) => postgres::psql_at(url.expose(), sql),
            None => self.db().execute_batch(sql).unwrap(),
        }
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("selfmon.db")).unwrap()
    }

    /// Start times (ms since the epoch) of a check's stored runs, oldest first.
    pub fn stored_start_times(&self, check: &str) -> Vec<i64> {
        let db = self.db();
        let mut statement = db.prepare("SELECT started_at FROM check_runs WHERE check_name = ?1 ORDER BY id").unwrap();
        statement.query_map([check], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// Runs of a check stored in the database.
    pub fn stored_runs(&self, check: &str) -> Vec<(String, String, Option<String>)> {
        let db = self.db();
        let mut statement =
            db.prepare("SELECT status, summary, error FROM check_runs WHERE check_name = ?1 ORDER BY id").unwrap();
        statement.query_map([check], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }
}

/// selfmon running in-process on a [`Workdir`].
pub struct Selfmon {
    pub url: String,
    /// The API key the helpers send, for configs with keys.
    pub key: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), selfmon::app::host::StartError>>>,
}

impl Selfmon {
    pub async fn start(workdir: &Workdir) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        let config = workdir.config();
        let server = tokio::spawn(selfmon::app::serve(config, listener, async move {
            let _ = stop.await;
        }));
        let mut selfmon = Self { url, key: None, shutdown: Some(shutdown), server: Some(server) };
        selfmon.wait_until_serving().await;
        selfmon
    }

    async fn wait_until_serving(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while reqwest::get(format!("{}/health", self.url)).await.is_err() {
            if self.server.as_ref().is_some_and(JoinHandle::is_finished) {
                let stopped = self.server.take().expect("finished").await;
                panic!("selfmon stopped before serving: {stopped:?}");
            }
            assert!(tokio::time::Instant::now() < deadline, "selfmon did not start serving");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        match &self.key {
            Some(key) => get_json_with_key(&format!("{}{path}", self.url), key).await,
            None => get_json(&format!("{}{path}", self.url)).await,
        }
    }

    /// POST a GraphQL query, with a key if given; the JSON answer (GraphQL answers errors with a 200 too).
    pub async fn graphql(&self, key: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = reqwest::Client::new()
            .post(format!("{}/graphql", self.url))
            .json(&serde_json::json!({ "query": query, "variables": variables }));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    /// The `/v1/health` entry of one check.
    pub async fn check(&self, name: &str) -> Value {
        let (status, body) = self.get("/v1/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// Wait until a check's state satisfies `done`, and return it.
    pub async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let state = self.check(name).await;
            if done(&state) {
                return state;
            }
            assert!(tokio::time::Instant::now() < deadline, "check `{name}` never got {what}; last state: {state:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for the first run of a check and return its state.
    pub async fn first_result(&self, name: &str) -> Value {
        self.wait_for(name, "a result", |s| !s["last_run"].is_null()).await
    }

    /// Stop and wait until everything accepted is stored.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn get_json_with_key(url: &str, key: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub mod browser;
pub mod fakes;
mod ports;
pub mod postgres;
pub mod programs;
pub mod proxy;
pub mod receiver;
pub mod smtp;

pub use ports::free_port;

/// Build the host from a workdir's config and run every enabled check once, in-process.
pub async fn run_once(workdir: &Workdir) -> std::collections::BTreeMap<String, selfmon::checks::health::CheckRun> {
    let host = selfmon::app::host::Host::build(workdir.config()).await.unwrap();
    let mut runs = std::collections::BTreeMap::new();
    for check in host.checks.iter().filter(|c| c.enabled) {
        runs.insert(check.name.clone(), check.run(&host.runtime).await);
    }
    runs
}
