//! The `postgres` checker against a real PostgreSQL server started by the test: every login method, the ways a
//! login fails, a stopped and restarted server, long-running queries and connection pressure.

use std::time::Duration;

use crate::support::postgres::{
    MAX_CONNECTIONS, MD5_PASSWORD, MD5_USER, Postgres, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER,
};
use crate::support::{Workdir, closed_port, run_once};

fn check(name: &str, port: u16, user: &str, password: Option<&str>, extra: &str) -> String {
    let secret = password.map(|p| format!("[check.secrets]\npassword = \"{p}\"\n")).unwrap_or_default();
    format!(
        "[[check]]\nname = \"{name}\"\nplugin = \"postgres\"\ntarget = \"127.0.0.1:{port}\"\n[check.config]\nuser = \"{user}\"\n{extra}\n{secret}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_in_with_trust_md5_and_scram_and_tells_failures_apart() {
    let server = Postgres::start();
    let port = server.port;
    let refused = closed_port().await.port();
    let config = [
        check("trust", port, TRUST_USER, None, ""),
        check("md5", port, MD5_USER, Some(MD5_PASSWORD), ""),
        check("scram", port, SCRAM_USER, Some(SCRAM_PASSWORD), ""),
        check("wrong-password", port, SCRAM_USER, Some("not-the-password"), ""),
        check("no-password", port, SCRAM_USER, None, ""),
        check("unknown-database", port, TRUST_USER, None, "database = \"no_such_db\""),
        check("refused", refused, TRUST_USER, None, ""),
    ]
    .concat();
    let runs = run_once(&Workdir::new(&config, &[])).await;

    for name in ["trust", "md5", "scram"] {
        let run = &runs[name];
        assert_eq!(run.health.as_str(), "healthy", "{name}: {run:?}");
        assert!(run.summary.starts_with("PostgreSQL 1") && run.summary.contains("(primary)"), "{}", run.summary);
        assert!(run.metrics.iter().any(|m| m.name == "connections_max" && m.value == f64::from(MAX_CONNECTIONS)));
    }
    let summary = |name: &str| (runs[name].health.as_str(), runs[name].summary.as_str());
    let (health, text) = summary("wrong-password");
    assert_eq!(health, "unhealthy");
    assert!(text.starts_with("login refused: wrong password for user `scram_user`"), "{text}");
    assert!(!text.contains("not-the-password"), "the password never appears: {text}");
    let (health, text) = summary("no-password");
    assert_eq!(health, "unhealthy");
    assert!(text.contains("the server asks for a password (SCRAM-SHA-256) and none is set"), "{text}");
    let (health, text) = summary("unknown-database");
    assert_eq!(health, "unhealthy");
    assert!(text.starts_with("database `no_such_db` does not exist"), "{text}");
    let (health, text) = summary("refused");
    assert_eq!(health, "unhealthy");
    assert_eq!(text, format!("PostgreSQL at 127.0.0.1:{refused}: connection refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_server_is_unhealthy_until_it_is_back() {
    let mut server = Postgres::start();
    let workdir = Workdir::new(&check("db", server.port, TRUST_USER, None, ""), &[]);
    assert_eq!(run_once(&workdir).await["db"].health.as_str(), "healthy");
    server.stop();
    let down = &run_once(&workdir).await["db"];
    assert_eq!(down.health.as_str(), "unhealthy");
    assert!(down.summary.ends_with("connection refused"), "{}", down.summary);
    server.restart();
    assert_eq!(run_once(&workdir).await["db"].health.as_str(), "healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_queries_and_connection_pressure_are_degraded() {
    let server = Postgres::start();
    let workdir = Workdir::new(&check("db", server.port, TRUST_USER, None, "long_query_after = \"1s\""), &[]);
    let mut sleeper = server.background("SELECT pg_sleep(60)");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = &run_once(&workdir).await["db"];
    // The server notices a vanished client only when it next writes to it: end the query server-side.
    server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()");
    sleeper.wait().unwrap();
    assert_eq!(run.health.as_str(), "degraded", "{run:?}");
    assert!(run.summary.contains("1 queries running longer than 1 s"), "{}", run.summary);
    assert!(run.metrics.iter().any(|m| m.name == "longest_query_seconds" && m.value >= 1.0), "{:?}", run.metrics);

    // 15 idle sessions plus the check's own is 16 of 20: the default 80%.
    while server.client_sessions() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sessions: Vec<_> = (0..15).map(|_| server.idle_session()).collect();
    while server.client_sessions() < 15 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workdir = Workdir::new(&check("db", server.port, TRUST_USER, None, ""), &[]);
    let run = &run_once(&workdir).await["db"];
    for session in &mut sessions {
        session.kill().unwrap();
        session.wait().unwrap();
    }
    assert_eq!(run.health.as_str(), "degraded", "{run:?}");
    assert!(run.summary.contains("16/20 connections: 80% of connections in use (degraded at 80%)"), "{}", run.summary);
}
