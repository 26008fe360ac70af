//! Storage in a real SQLite file: check runs and their metrics, the system collector's figures, and state that
//! outlives a restart.

use crate::support::{Selfmon, Target, Workdir};

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
