//! Dependency tracking: when PostgreSQL stops, an app that needs it fails too; the app is reported as degraded with
//! the database as the cause, by the API and by `selfmon check`, and its recovery action is not run for a failure
//! that is not its own.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::support::postgres::{Postgres, TRUST_USER};
use crate::support::{Selfmon, Workdir, selfmon_command};

/// An app whose health endpoint answers 503 while its database does not accept connections, as apps do.
async fn app_needing(database_port: u16) -> u16 {
    let app = Router::new().route(
        "/health",
        get(move || async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", database_port)).await {
                Ok(_) => (StatusCode::OK, "ok"),
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_dependency_is_named_as_the_cause_of_its_dependents_failure() {
    let mut database = Postgres::start();
    let app = app_needing(database.port).await;
    let config = format!(
        r#"
[[check]]
name = "db"
plugin = "postgres"
interval = "1s"
target = "127.0.0.1:{db}"
[check.config]
user = "{TRUST_USER}"

[[check]]
name = "app"
plugin = "http"
interval = "1s"
target = "http://127.0.0.1:{app}/health"
depends_on = ["db"]
[check.recovery]
after = 1
command = ["touch", "{{workdir}}/app-was-restarted"]
"#,
        db = database.port,
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.wait_for("app", "healthy", |s| s["status"] == "healthy").await;

    database.stop();
    let app_state = selfmon.wait_for("app", "the database as its cause", |s| s["cause"] == "db").await;
    assert_eq!(app_state["status"], "degraded", "{app_state:#}");
    assert_eq!(app_state["own_status"], "unhealthy");
    let summary = app_state["summary"].as_str().unwrap();
    assert!(summary.starts_with("depends on db, which is unhealthy: HTTP 503"), "{summary}");
    assert_eq!(selfmon.check("db").await["status"], "unhealthy");

    let output = selfmon_command(&workdir).args(["check", "app"]).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("db ") && l.contains("unhealthy")),
        "the dependency runs too:\n{table}"
    );
    assert!(table.contains("depends on db, which is unhealthy"), "{table}");
    assert_eq!(output.status.code(), Some(1), "the check asked for decides: degraded, its dependency is the cause");

    // Give recovery a few runs' chance to (wrongly) act on a failure that is not the app's own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!workdir.path().join("app-was-restarted").exists(), "recovery ran for a failure caused by a dependency");

    database.restart();
    let app_state = selfmon.wait_for("app", "healthy again", |s| s["status"] == "healthy").await;
    assert!(app_state["cause"].is_null());
    selfmon.stop().await;
}
