//! The `http` checker against real loopback targets, through the whole host: healthy, failing, down, slow, and a
//! body that does not say what it should.

use crate::support::{Selfmon, Target, Workdir, closed_port};

#[tokio::test(flavor = "multi_thread")]
async fn http_checks_tell_healthy_failing_down_and_slow_targets_apart() {
    let target = Target::start().await;
    let down = closed_port().await;
    let config = format!(
        r#"
[[check]]
name = "ok"
plugin = "http"
interval = "1s"
target = "{ok}"

[[check]]
name = "failing"
plugin = "http"
interval = "1s"
target = "{failing}"

[[check]]
name = "down"
plugin = "http"
interval = "1s"
target = "http://{down}/health"

[[check]]
name = "slow"
plugin = "http"
interval = "2s"
timeout = "2s"
target = "{slow}"
[check.config]
degraded_after = "300ms"

[[check]]
name = "agent"
plugin = "http"
interval = "1s"
target = "{agent}"

[[check]]
name = "contains"
plugin = "http"
interval = "1s"
target = "{ok}"
[check.config]
body_contains = "nope"

[[check]]
name = "too-slow"
plugin = "http"
interval = "2s"
timeout = "2s"
target = "{slow}"
[check.config]
degraded_after = "100ms"
unhealthy_after = "300ms"

[[check]]
name = "basic"
plugin = "http"
interval = "1s"
target = "{basic}"
[check.secrets]
basic_auth = "user:pass"

[[check]]
name = "wrong-body"
plugin = "http"
interval = "1s"
target = "{json}"
[check.config]
expect_json = {{ status = "ok", checks.db = "up" }}
"#,
        ok = target.url("/ok"),
        failing = target.url("/status/500"),
        slow = target.url("/slow/700"),
        json = target.url("/json"),
        agent = target.url("/agent"),
        basic = target.url("/basic"),
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;

    let ok = selfmon.first_result("ok").await;
    assert_eq!(ok["status"], "healthy", "{ok:#}");
    assert_eq!(ok["plugin"], "http");
    assert!(ok["summary"].as_str().unwrap().starts_with("HTTP 200 in "), "{ok:#}");
    assert!(ok["response_time_ms"].as_f64().unwrap() > 0.0);

    let failing = selfmon.first_result("failing").await;
    assert_eq!(failing["status"], "unhealthy", "{failing:#}");
    assert!(
        failing["summary"].as_str().unwrap().contains("HTTP 500")
            && failing["summary"].as_str().unwrap().contains("expected 200"),
        "{failing:#}"
    );

    let down_state = selfmon.first_result("down").await;
    assert_eq!(down_state["status"], "unhealthy", "{down_state:#}");
    assert!(down_state["summary"].as_str().unwrap().contains("refused"), "{down_state:#}");

    let slow = selfmon.first_result("slow").await;
    assert_eq!(slow["status"], "degraded", "{slow:#}");
    assert!(slow["summary"].as_str().unwrap().contains("slower than 300 ms"), "{slow:#}");

    let contains = selfmon.first_result("contains").await;
    assert_eq!(contains["status"], "unhealthy");
    assert!(contains["summary"].as_str().unwrap().ends_with("but the body does not contain `nope`"), "{contains:#}");
    let too_slow = selfmon.first_result("too-slow").await;
    assert_eq!(too_slow["status"], "unhealthy", "{too_slow:#}");
    assert!(too_slow["summary"].as_str().unwrap().contains("slower than 300 ms"), "{too_slow:#}");
    assert_eq!(selfmon.first_result("basic").await["status"], "healthy", "basic auth reached the server");

    let agent = selfmon.first_result("agent").await;
    assert_eq!(agent["status"], "healthy", "requests say they come from selfmon: {agent:#}");

    let wrong = selfmon.first_result("wrong-body").await;
    assert_eq!(wrong["status"], "unhealthy", "{wrong:#}");
    assert!(wrong["summary"].as_str().unwrap().contains(r#"JSON `checks.db` is "down", expected "up""#), "{wrong:#}");

    let (_, report) = selfmon.get("/v1/health").await;
    assert_eq!(report["status"], "unhealthy", "the overall status is the worst check's");
    let (_, only) = selfmon.get("/v1/health?service=ok").await;
    assert_eq!(only["checks"].as_array().unwrap().len(), 1);
    assert_eq!(only["status"], "healthy");
    let (status, missing) = selfmon.get("/v1/health?service=nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "unknown_check");
    let (status, bad) = selfmon.get("/v1/health?colour=red").await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["code"], "bad_query");
    let response = reqwest::Client::new().post(format!("{}/health", selfmon.url)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_their_own_check_and_appear_nowhere_else() {
    let target = Target::start().await;
    let config = format!(
        r#"
[[check]]
name = "with-token"
plugin = "http"
interval = "1s"
target = "{auth}"
[check.secrets]
bearer_token = "file:{{workdir}}/token"

[[check]]
name = "without-token"
plugin = "http"
interval = "1s"
target = "{auth}"
"#,
        auth = target.url("/auth"),
    );
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("token"), "s3cret-token\n").unwrap();
    let selfmon = Selfmon::start(&workdir).await;

    assert_eq!(selfmon.first_result("with-token").await["status"], "healthy");
    let without = selfmon.first_result("without-token").await;
    assert_eq!(without["status"], "unhealthy", "another check must not get the secret: {without:#}");

    let body = reqwest::get(format!("{}/v1/health", selfmon.url)).await.unwrap().text().await.unwrap();
    assert!(!body.contains("s3cret"), "the API must not show secrets: {body}");
    selfmon.stop().await;
    for entry in std::fs::read_dir(workdir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("selfmon.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(6).any(|w| w == b"s3cret"), "{} must not hold secrets", path.display());
        }
    }
}
