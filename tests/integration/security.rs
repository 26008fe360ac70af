//! Issue 19, safe to expose: what any web page (or a name pointed at this machine) can make a browser send is
//! refused and changes nothing, and a sidecar dropped into the plugins folder cannot do more than its plugin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{PATIENCE, Selfmon, Workdir};

/// The code of an error answer.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn rule_count(selfmon: &Selfmon) -> u64 {
    let (_, rules) = selfmon.get("/v1/alerts/rules").await;
    rules["total"].as_u64().unwrap()
}

async fn refused_calls(selfmon: &Selfmon) -> u64 {
    selfmon.get("/v1/status").await.1["api"]["refused_calls"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_requests_and_foreign_hosts_are_refused_and_change_nothing() {
    let workdir = Workdir::new(
        "[api]\ncors_origins = [\"https://grafana.example.com\"]\nallowed_hosts = [\"monitor.internal\"]\n",
        &[],
    );
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", selfmon.url);
    let before = rule_count(&selfmon).await;
    let refused_before = refused_calls(&selfmon).await;
    let mutation = json!({
        "query": "mutation { createAlertRule(rule: {name: \"planted\", condition: \"x > 1\", severity: \"low\"}) { name } }"
    })
    .to_string();

    // What a page on another site can send without asking first: a `text/plain` POST, and any POST at all.
    let forged = client
        .post(url("/graphql"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(mutation.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(code(&forged.json().await.unwrap()), "cross_origin");
    let reload = client.post(url("/v1/reload")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(reload.status(), 403);
    assert_eq!(code(&reload.json().await.unwrap()), "cross_origin");
    let rule = json!({"name": "planted", "condition": "x > 1", "severity": "low"});
    let created =
        client.post(url("/v1/alerts/rules")).header("origin", "https://evil.example").json(&rule).send().await.unwrap();
    assert_eq!(created.status(), 403);

    // Without an Origin (not a browser), GraphQL still takes JSON only.
    let plain = client.post(url("/graphql")).header("content-type", "text/plain").body(mutation).send().await.unwrap();
    assert_eq!(plain.status(), 415);
    assert_eq!(code(&plain.json().await.unwrap()), "not_json");
    assert_eq!(rule_count(&selfmon).await, before, "nothing was created");

    // A name pointed at this machine (DNS rebinding) reads nothing; the API's addresses, localhost and the
    // configured names do, and /health answers whatever the name.
    let foreign = client.get(url("/v1/status")).header("host", "attacker.example").send().await.unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(code(&foreign.json().await.unwrap()), "unknown_host");
    let port = selfmon.url.rsplit(':').next().unwrap();
    for host in [format!("localhost:{port}"), format!("monitor.internal:{port}"), format!("127.0.0.1:{port}")] {
        let named = client.get(url("/v1/status")).header("host", &host).send().await.unwrap();
        assert_eq!(named.status(), 200, "{host}");
    }
    let health = client.get(url("/health")).header("host", "attacker.example").send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The API's own page and the configured origins may change things.
    let own = client.post(url("/v1/alerts/rules")).header("origin", &selfmon.url).json(&rule).send().await.unwrap();
    assert_eq!(own.status(), 201);
    let grafana = json!({"name": "from-grafana", "condition": "x > 1", "severity": "low"});
    let listed = client
        .post(url("/v1/alerts/rules"))
        .header("origin", "https://grafana.example.com")
        .json(&grafana)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);

    // A WebSocket is not covered by CORS: a foreign page's socket is refused, a client's without Origin is not.
    let socket = |origin: Option<&str>| {
        let mut request = url("/graphql").replace("http://", "ws://").into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    match socket(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a foreign page's socket was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut ws, _) = socket(None).await.unwrap();
    ws.close(None).await.unwrap();

    // Every refusal is a security event, counted.
    let refused = refused_calls(&selfmon).await - refused_before;
    assert_eq!(refused, 6, "three cross-site changes, a GraphQL post not in JSON, a foreign host and a foreign socket");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_with_keys_refuses_foreign_pages_and_answers_any_name() {
    let workdir =
        Workdir::new("[api]\nkeys = [{ name = \"ops\", key = \"admin-key-0123456789\", role = \"admin\" }]\n", &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some("admin-key-0123456789".into());
    let client = reqwest::Client::new();
    // With keys, a rebound name cannot send one: the name is not what protects the API.
    let named = client
        .get(format!("{}/v1/status", selfmon.url))
        .header("host", "monitor.example.com")
        .bearer_auth("admin-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    let forged = client
        .post(format!("{}/v1/reload", selfmon.url))
        .header("origin", "https://evil.example")
        .bearer_auth("admin-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_cannot_run_commands_read_secrets_or_files_unless_trusted() {
    let workdir = Workdir::new("", &[]);
    let marker = workdir.path().join("ran");
    let sidecar = format!(
        "# A bundle's sidecar.\n\n[[check]]\nname = \"bundled\"\nplugin = \"http\"\ntarget = \"http://127.0.0.1:9/\"\n\
         interval = \"1s\"\n\n[check.secrets]\nbearer_token = \"env:HOME\"\n\n[check.recovery]\nafter = 1\n\
         command = [\"touch\", {:?}]\n\n[[log_source]]\nname = \"passwd\"\nkind = \"file\"\nparser = \"json\"\n\
         paths = [\"/etc/passwd\"]\n",
        marker.display().to_string()
    );
    let file = workdir.path().join("plugins/bundle.toml");
    std::fs::write(&file, &sidecar).unwrap();

    // At start-up: refused, each naming the sidecar, the line and the field.
    let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
    let lines: Vec<&str> = error.lines().filter(|l| l.contains("bundle.toml")).collect();
    assert!(lines.iter().any(|l| l.contains("line 12") && l.contains("`recovery`")), "{error}");
    assert!(lines.iter().any(|l| l.contains("line 10") && l.contains("`secrets.bearer_token`")), "{error}");
    assert!(lines.iter().any(|l| l.contains("line 18") && l.contains("`kind = \"file\"`")), "{error}");
    assert!(lines.iter().all(|l| l.contains("trusted_sidecars")), "{error}");

    // Dropped into a running selfmon: the reload is refused, nothing of it runs.
    std::fs::remove_file(&file).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    std::fs::write(&file, &sidecar).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let outcome = loop {
        let (_, status) = selfmon.get("/v1/status").await;
        if status["last_reload"]["trigger"] == "plugins folder" {
            break status["last_reload"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no reload of the plugins folder: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcome["applied"], false, "{outcome:#}");
    assert!(outcome["errors"].to_string().contains("`recovery`"), "{outcome:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(selfmon.check("bundled").await.is_null(), "the sidecar's check does not run");
    assert!(!marker.exists(), "the recovery command never ran");
    selfmon.stop().await;

    // Named in the config file, it is as trusted as the config file.
    trust_sidecar(&workdir, "bundle.toml");
    let host = selfmon::app::host::Host::build(workdir.config()).await.unwrap();
    assert!(host.checks.iter().any(|c| c.name == "bundled" && c.recovery.is_some()));
}

/// Name `sidecar` in the config file's `[plugins] trusted_sidecars`.
fn trust_sidecar(workdir: &Workdir, sidecar: &str) {
    let config = std::fs::read_to_string(workdir.config_file()).unwrap();
    let trusted = format!("[plugins]\ntrusted_sidecars = [\"{sidecar}\"]\n");
    std::fs::write(workdir.config_file(), config.replace("[plugins]\n", &trusted)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_trusted_sidecar_reads_the_environment_through_interpolation() {
    let workdir = Workdir::new("", &[]);
    let sidecar = "[[check]]\nname = \"bundled\"\nplugin = \"http\"\ntarget = \"http://127.0.0.1:9/?home=${HOME}\"\n";
    std::fs::write(workdir.path().join("plugins/bundle.toml"), sidecar).unwrap();
    let target = |host: &selfmon::app::host::Host| {
        host.checks.iter().find(|c| c.name == "bundled").and_then(|c| c.target.clone()).unwrap()
    };
    // A sidecar dropped in with a plugin: `${` stays as written.
    let host = selfmon::app::host::Host::build(workdir.config()).await.unwrap();
    assert_eq!(target(&host), "http://127.0.0.1:9/?home=${HOME}");
    // Named in the config file: as the config file.
    trust_sidecar(&workdir, "bundle.toml");
    let host = selfmon::app::host::Host::build(workdir.config()).await.unwrap();
    assert_eq!(target(&host), format!("http://127.0.0.1:9/?home={}", std::env::var("HOME").unwrap()));
}

const ADMIN: &str = "admin-key-0123456789";
const READ: &str = "read-key-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn a_key_removed_from_the_config_stops_working_at_the_reload() {
    let keys = |read: bool| {
        let mut text = format!("[api]\nkeys = [\n  {{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }},\n");
        if read {
            text.push_str(&format!("  {{ name = \"grafana\", key = \"{READ}\", role = \"read\" }},\n"));
        }
        text + "]\n"
    };
    let workdir = Workdir::new(&keys(true), &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let client = reqwest::Client::new();
    let status = |key: &'static str| client.get(format!("{}/v1/status", selfmon.url)).bearer_auth(key).send();
    assert_eq!(status(READ).await.unwrap().status(), 200);

    let config = std::fs::read_to_string(workdir.config_file()).unwrap();
    std::fs::write(workdir.config_file(), config.replace(&keys(true), &keys(false))).unwrap();
    let reload = client.post(format!("{}/v1/reload", selfmon.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(reload.status(), 200);
    let outcome: Value = reload.json().await.unwrap();
    assert!(outcome["changes"].to_string().contains("API key `grafana` removed"), "{outcome:#}");
    assert_eq!(outcome["restart_needed"], json!([]), "keys take effect without a restart: {outcome:#}");
    assert_eq!(status(READ).await.unwrap().status(), 401);
    assert_eq!(status(ADMIN).await.unwrap().status(), 200);

    // Removing the last key would open the API: refused, everything as before.
    std::fs::write(workdir.config_file(), config.replace(&keys(true), "")).unwrap();
    let reload = client.post(format!("{}/v1/reload", selfmon.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(reload.status(), 422);
    assert!(reload.text().await.unwrap().contains("removing the last"));
    assert_eq!(status(ADMIN).await.unwrap().status(), 200);
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_keys_and_an_open_api_beyond_loopback_do_not_start() {
    let short = Workdir::new("[api]\nkeys = [{ name = \"ops\", key = \"hunter2hunter2\", role = \"admin\" }]\n", &[]);
    let error = selfmon::app::host::Host::build(short.config()).await.err().unwrap().to_string();
    assert!(error.contains("the key of `ops` is shorter than 16 characters"), "{error}");
    assert!(!error.contains("hunter2"), "the key itself is never shown: {error}");

    // Bound to every address (nothing is sent to any but loopback).
    let open = Workdir::new("", &[]);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = selfmon::app::serve(open.config(), listener, std::future::pending()).await.unwrap_err().to_string();
    assert!(
        error.contains("`[server] api_listen` is 0.0.0.0:") && error.contains("`[api] open_to_network = true`"),
        "{error}"
    );

    let allowed = Workdir::new("[api]\nopen_to_network = true\n", &[]);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(selfmon::app::serve(allowed.config(), listener, async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "it did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_can_plant_records_of_selfmons_own_log() {
    let workdir = Workdir::new(
        &format!(
            "[api]\nkeys = [\n  {{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }},\n  \
             {{ name = \"bot\", key = \"ingest-key-0123456789\", role = \"ingest\" }},\n]\n"
        ),
        &[],
    );
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some(ADMIN.into());
    let client = reqwest::Client::new();
    let send = |query: &str, body: String| {
        client
            .post(format!("{}/v1/logs{query}", selfmon.url))
            .bearer_auth("ingest-key-0123456789")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let lines = json!([
        {"level": "security", "name": "selfmon::security", "msg": "API call refused (planted)"},
        {"level": "security", "name": "Selfmon::Security", "msg": "API call refused (planted, other case)"},
        {"level": "info", "name": "selfmon", "msg": "selfmon is running (planted)"},
        {"level": "info", "name": "bot.handlers", "msg": "a record of the bot's own"},
    ]);
    let answer = send("", lines.to_string()).await.unwrap();
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!((answer["refused"].as_u64(), answer["accepted"].as_u64()), (Some(3), Some(1)), "{answer}");

    let refused_before = refused_calls(&selfmon).await;
    let reserved = send("?source=selfmon", json!([{"msg": "planted"}]).to_string()).await.unwrap();
    assert_eq!(reserved.status(), 403);
    assert_eq!(code(&reserved.json().await.unwrap()), "reserved_source");
    assert_eq!(refused_calls(&selfmon).await, refused_before + 1, "a security event, counted");

    let export = json!({"resourceLogs": [{"scopeLogs": [
        {"scope": {"name": "selfmon::audit"}, "logRecords": [{"body": {"stringValue": "Erased (planted)"}}]},
        {"scope": {"name": "worker"}, "logRecords": [{"body": {"stringValue": "a worker's record"}}]}
    ]}]});
    let answer = send("", export.to_string()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1", "{answer}");

    let (_, found) = selfmon.get("/v1/logs?q=planted").await;
    assert_eq!(found["records"], json!([]), "{found:#}");
    let (_, found) = selfmon.get("/v1/logs?q=record").await;
    assert_eq!(found["records"].as_array().unwrap().len(), 2, "{found:#}");
    selfmon.stop().await;
}

/// A file's permission bits.
fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions(),
    ) & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn what_selfmon_keeps_on_disk_is_its_owners_only() {
    let port = crate::support::free_port();
    let config = format!(
        "[server]\napi_listen = \"127.0.0.1:{port}\"\n\n[plugins]\ncache_dir = \"cache\"\n\n\
         [api]\nkeys = [{{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }}]\n"
    );
    let workdir = Workdir::new(&config, &[]);
    let said = tempfile::NamedTempFile::new().unwrap();
    let stderr = std::process::Stdio::from(said.reopen().unwrap());
    let (mut child, url) = crate::support::serve_binary(&workdir, port, "info", stderr).await;
    let client = reqwest::Client::new();
    let sent = client
        .post(format!("{url}/v1/logs"))
        .bearer_auth(ADMIN)
        .json(&json!([{"level": "info", "msg": "kept private"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let dir = workdir.path();
    let mut files = vec![dir.join("selfmon.db"), dir.join("selfmon.db-wal"), dir.join("privacy.key")];
    for log in ["application/selfmon.log", "errors/errors.log", "performance/performance.log", "security/security.log"]
    {
        files.push(dir.join("logs").join(log));
    }
    let cached: Vec<_> = std::fs::read_dir(dir.join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!cached.is_empty(), "the built-in plugins were compiled into the cache");
    files.extend(cached);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    for folder in [dir.join("cache"), dir.join("logs"), dir.join("logs/security")] {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
    crate::support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success(), "{}", std::fs::read_to_string(said.path()).unwrap());

    // A cache others may write to holds native code anyone could have put there: refused, naming the setting.
    std::fs::set_permissions(dir.join("cache"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
    assert!(
        error.contains("may be written by others (mode 777)") && error.contains("`[plugins] cache_dir`"),
        "{error}"
    );
    // So does one that belongs to another user, who could write there whatever its mode says.
    std::fs::set_permissions(dir.join("cache"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Only root may give a folder away; the workdir is the test's own.
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir).unwrap()) == 0 {
        std::os::unix::fs::chown(dir.join("cache"), Some(54321), None).unwrap();
        let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
        assert!(error.contains("belongs to another user (uid 54321)"), "{error}");
    }
}

/// A webhook receiver on loopback that counts deliveries and answers each with a 500; its URL.
async fn failing_receiver() -> (Arc<AtomicUsize>, String) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hits, url)
}

/// The first delivery attempt of webhook `id` that satisfies `done`.
async fn delivery(selfmon: &Selfmon, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, log) = selfmon.get(&format!("/v1/webhooks/{id}/deliveries")).await;
        if let Some(attempt) = log["items"].as_array().and_then(|items| items.iter().find(|a| done(a))) {
            return attempt.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no such delivery attempt: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_made_through_the_api_reach_only_public_addresses_unless_the_config_allows() {
    let (up, service_url) = crate::support::switchable_service().await;
    let (hits, hook_url) = failing_receiver().await;
    let port = hook_url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
    let check =
        format!("[[check]]\nname = \"bot\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{service_url}\"\n");
    let workdir = Workdir::new(&check, &[]);
    let client = reqwest::Client::new();
    let subscribe = |selfmon: &Selfmon, url: String| {
        client
            .post(format!("{}/v1/webhooks", selfmon.url))
            .json(&json!({"url": url, "events": ["health.changed"], "secret": "webhook-secret-0123456789"}))
            .send()
    };

    // By default loopback, private and link-local receivers are refused, however they are written.
    let selfmon = Selfmon::start(&workdir).await;
    for (url, named) in [
        (hook_url.clone(), "127.0.0.1 (loopback)"),
        (format!("http://localhost:{port}/hook"), "127.0.0.1 (loopback)"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "(loopback)"),
        (format!("http://0.0.0.0:{port}/hook"), "(unspecified)"),
        ("http://169.254.169.254/latest/meta-data/".into(), "169.254.169.254 (link-local)"),
        ("http://10.0.0.1/hook".into(), "10.0.0.1 (private)"),
        ("https://[fd00::1]/hook".into(), "fd00::1 (private)"),
    ] {
        let refused = subscribe(&selfmon, url.clone()).await.unwrap();
        assert_eq!(refused.status(), 400, "{url}");
        let body: Value = refused.json().await.unwrap();
        let detail = body["error"]["details"][0].as_str().unwrap();
        assert!(detail.contains(named) && detail.contains("[webhooks] allow_networks"), "{url}: {detail}");
    }
    assert_eq!(selfmon.get("/v1/webhooks").await.1["webhooks"], json!([]), "nothing was stored");
    selfmon.stop().await;

    // Allowed by the config: created and delivered.
    let plain = std::fs::read_to_string(workdir.config_file()).unwrap();
    std::fs::write(workdir.config_file(), format!("{plain}\n[webhooks]\nallow_networks = [\"127.0.0.1\"]\n")).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    let created = subscribe(&selfmon, hook_url.clone()).await.unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    selfmon.wait_for("bot", "healthy", |s| s["status"] == "healthy").await;
    up.store(false, Ordering::SeqCst);
    selfmon.wait_for("bot", "unhealthy", |s| s["status"] == "unhealthy").await;
    let attempt = delivery(&selfmon, id, |a| !a["error"].is_null()).await;
    assert_eq!(attempt["error"], "answered HTTP 500");
    assert!(hits.load(Ordering::SeqCst) >= 1);
    selfmon.stop().await;

    // The config no longer allows it: the stored subscription is refused when delivering (here, the check's
    // recovery), before connecting.
    std::fs::write(workdir.config_file(), &plain).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    let before = hits.load(Ordering::SeqCst);
    up.store(true, Ordering::SeqCst);
    let refused = delivery(&selfmon, id, |a| a["error"].as_str().is_some_and(|e| e.contains("not a public"))).await;
    assert!(refused["error"].as_str().unwrap().contains("[webhooks] allow_networks"), "{refused}");
    // Asking again would be refused again: given up at once.
    assert_eq!((refused["attempt"].as_u64(), refused["outcome"].as_str()), (Some(1), Some("gave_up")), "{refused}");
    assert_eq!(hits.load(Ordering::SeqCst), before, "nothing reached the receiver");
    selfmon.stop().await;
}
