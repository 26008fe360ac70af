//! Storage in a real SQLite file: check runs and their metrics, the system collector's figures, state that
//! outlives a restart, and encryption at rest.

use crate::support::{Selfmon, Target, Workdir, selfmon_command};

#[tokio::test(flavor = "multi_thread")]
async fn runs_metrics_and_system_figures_are_stored_and_survive_a_restart() {
    let target = Target::start().await;
    let config = format!(
        "[system]\nenabled = true\ninterval = \"1s\"\n\n[[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{}\"\n",
        target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let first = selfmon.first_result("web").await;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while system_samples(&workdir) == 0 || workdir.stored_runs("web").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no system samples or second run were stored");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    selfmon.stop().await;

    let db = workdir.db();
    let mode: String = db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let runs = workdir.stored_runs("web");
    assert!(
        runs.iter()
            .all(|(status, summary, error)| status == "healthy" && summary.starts_with("HTTP 200") && error.is_none()),
        "{runs:?}"
    );
    let metric = |name: &str| -> Vec<(String, f64)> {
        let mut statement = db
            .prepare("SELECT s.labels, v.value FROM samples v JOIN series s ON s.id = v.series_id WHERE s.name = ?1")
            .unwrap();
        statement.query_map([name], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let response_times = metric("response_time_seconds");
    assert_eq!(response_times.len(), runs.len(), "one sample per run");
    assert!(
        response_times.iter().all(|(labels, v)| labels == r#"[["check","web"],["plugin","http"]]"# && *v > 0.0),
        "{response_times:?}"
    );
    assert!(metric("check_status").iter().all(|(_, v)| *v == 0.0), "healthy is 0");
    assert_eq!(metric("check_duration_seconds").len(), runs.len());
    let memory = metric("system_memory_used_ratio");
    assert!(!memory.is_empty() && memory.iter().all(|(_, v)| (0.0..=1.0).contains(v)), "{memory:?}");
    assert!(!metric("system_cpu_usage_ratio").is_empty());
    assert!(!metric("system_disk_used_bytes").is_empty());

    // After a restart the board starts from what was stored, even for a check that no longer runs.
    let disabled = std::fs::read_to_string(workdir.config_file())
        .unwrap()
        .replace("interval = \"1s\"\ntarget", "enabled = false\ntarget");
    std::fs::write(workdir.config_file(), disabled).unwrap();
    let stored = workdir.stored_runs("web").len();
    let selfmon = Selfmon::start(&workdir).await;
    let state = selfmon.check("web").await;
    assert_eq!(state["enabled"], false);
    assert_eq!(state["status"], "healthy", "{state:#}");
    assert!(state["last_run"].as_str().unwrap() >= first["last_run"].as_str().unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    selfmon.stop().await;
    assert_eq!(workdir.stored_runs("web").len(), stored, "a disabled check never runs");
}

fn system_samples(workdir: &Workdir) -> i64 {
    workdir
        .db()
        .query_row(
            "SELECT COUNT(*) FROM samples v JOIN series s ON s.id = v.series_id WHERE s.name LIKE 'system_%'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

/// Whether any of the store's files (the database, its write-ahead log, its shared memory) holds `text`.
fn files_hold(workdir: &Workdir, text: &str) -> bool {
    ["selfmon.db", "selfmon.db-wal", "selfmon.db-shm"].iter().any(|name| {
        std::fs::read(workdir.path().join(name))
            .is_ok_and(|bytes| bytes.windows(text.len()).any(|w| w == text.as_bytes()))
    })
}

/// What `sqlite3` (the command-line shell) answers to `sql` on the store: its output, or its error.
fn sqlite3(workdir: &Workdir, sql: &str) -> Result<String, String> {
    let output =
        std::process::Command::new("sqlite3").arg(workdir.path().join("selfmon.db")).arg(sql).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    if output.status.success() { Ok(text(&output.stdout)) } else { Err(text(&output.stderr)) }
}

/// The bytes of the database and its write-ahead log.
fn store_bytes(workdir: &Workdir) -> Vec<u8> {
    let mut bytes = std::fs::read(workdir.path().join("selfmon.db")).unwrap();
    bytes.extend(std::fs::read(workdir.path().join("selfmon.db-wal")).unwrap_or_default());
    bytes
}

/// `selfmon storage <command>` on the workdir's config: whether it succeeded, and what it said.
fn storage_command(workdir: &Workdir, command: &str) -> (bool, String) {
    let output = selfmon_command(workdir).args(["storage", command]).output().unwrap();
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

/// Serve until it answers or fails to start; the start error, if any.
async fn start_error(workdir: &Workdir) -> Option<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(selfmon::app::serve(workdir.config(), listener, async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while !server.is_finished() && reqwest::get(&url).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "selfmon neither started nor failed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    server.await.unwrap().err().map(|e| e.to_string())
}

const MARKER: &str = "marmalade7731";

/// Send one log record with the marker in it and wait until a search finds it.
async fn store_marked_record(selfmon: &Selfmon) {
    let sent = reqwest::Client::new()
        .post(format!("{}/v1/logs", selfmon.url))
        .json(&serde_json::json!([{"level": "info", "service": "bot", "msg": format!("the plan is {MARKER}")}]))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    found_marked_record(selfmon).await;
}

async fn found_marked_record(selfmon: &Selfmon) {
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (_, found) = selfmon.get(&format!("/v1/logs?q={MARKER}")).await;
        if found["records"].as_array().is_some_and(|r| r.len() == 1) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the record was not found: {found}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_store_shows_nothing_opens_only_with_its_key_and_converts_both_ways() {
    let workdir = Workdir::new("[storage]\nkey = \"file:store.key\"\n", &[]);
    let key_file = workdir.path().join("store.key");
    std::fs::write(&key_file, "correct horse battery staple\n").unwrap();
    let plain_config =
        std::fs::read_to_string(workdir.config_file()).unwrap().replace("key = \"file:store.key\"\n", "");
    let keyed_config = std::fs::read_to_string(workdir.config_file()).unwrap();

    // Encrypted from the start: the record is searchable, and no file holds it, while serving and after.
    let selfmon = Selfmon::start(&workdir).await;
    store_marked_record(&selfmon).await;
    assert!(!files_hold(&workdir, MARKER), "a file of the running store holds the record in plain text");
    let (refused, said) = storage_command(&workdir, "decrypt");
    assert!(!refused && said.contains("in use by a running selfmon"), "{said}");
    selfmon.stop().await;
    assert!(!files_hold(&workdir, MARKER));
    let unreadable = sqlite3(&workdir, "SELECT COUNT(*) FROM logs").unwrap_err();
    assert!(unreadable.contains("file is not a database"), "{unreadable}");

    // A wrong key, or none, is refused naming the setting, and changes nothing.
    let before = store_bytes(&workdir);
    std::fs::write(&key_file, "not the key").unwrap();
    let wrong = start_error(&workdir).await.expect("started with the wrong key");
    assert!(wrong.contains("`[storage] key` does not open the database"), "{wrong}");
    assert!(!wrong.contains("not the key"), "the key is not shown: {wrong}");
    std::fs::write(workdir.config_file(), &plain_config).unwrap();
    let none = start_error(&workdir).await.expect("started without the key");
    assert!(none.contains("is encrypted: set `[storage] key`"), "{none}");
    assert!(store_bytes(&workdir) == before, "a refused start changed the store");

    // Decrypted: every record is there, for sqlite3 and for selfmon without a key.
    std::fs::write(&key_file, "correct horse battery staple\n").unwrap();
    std::fs::write(workdir.config_file(), &keyed_config).unwrap();
    let (decrypted, said) = storage_command(&workdir, "decrypt");
    assert!(decrypted, "{said}");
    let count = format!("SELECT COUNT(*) FROM logs WHERE message LIKE '%{MARKER}%'");
    assert_eq!(sqlite3(&workdir, &count).unwrap(), "1");
    let keyed = start_error(&workdir).await.expect("a key for a plain store was accepted");
    assert!(keyed.contains("is not encrypted, but `[storage] key` is set"), "{keyed}");
    std::fs::write(workdir.config_file(), &plain_config).unwrap();
    let selfmon = Selfmon::start(&workdir).await;
    found_marked_record(&selfmon).await;
    selfmon.stop().await;

    // Encrypted again: nothing shows, and selfmon with the key finds the record.
    std::fs::write(workdir.config_file(), &keyed_config).unwrap();
    let (encrypted, said) = storage_command(&workdir, "encrypt");
    assert!(encrypted, "{said}");
    assert!(!files_hold(&workdir, MARKER));
    assert!(sqlite3(&workdir, "SELECT COUNT(*) FROM logs").is_err());
    let (again, said) = storage_command(&workdir, "encrypt");
    assert!(!again && said.contains("encrypted already; it is left as it was"), "{said}");
    let selfmon = Selfmon::start(&workdir).await;
    found_marked_record(&selfmon).await;
    selfmon.stop().await;
}
