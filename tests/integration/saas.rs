//! The OpenAI, Anthropic, Telegram and Qdrant checkers against local fakes of those APIs (see `support::fakes`):
//! every documented answer, garbage, answers too slow for the deadline, and HTTPS with a private CA.

use std::collections::BTreeMap;

use selfmon::checks::health::CheckRun;

use crate::support::fakes::{self, Fake, TestCa};
use crate::support::{Workdir, run_once};

/// One check per scenario: `(name, secret)` pairs become checks of `plugin` against `base`, the secret under
/// `secret_key`.
async fn run_scenarios(
    plugin: &str,
    base: &str,
    secret_key: &str,
    scenarios: &[(&str, &str)],
    extra: &str,
) -> BTreeMap<String, CheckRun> {
    let config: String = scenarios
        .iter()
        .map(|(name, secret)| {
            format!(
                "[[check]]\nname = \"{name}\"\nplugin = \"{plugin}\"\ntarget = \"{base}\"\ntimeout = \"2s\"\n{extra}\n[check.secrets]\n{secret_key} = \"{secret}\"\n\n"
            )
        })
        .collect();
    run_once(&Workdir::new(&config, &[])).await
}

fn verdict<'a>(runs: &'a BTreeMap<String, CheckRun>, name: &str) -> (&'static str, &'a str) {
    (runs[name].health.as_str(), runs[name].summary.as_str())
}

fn metric(run: &CheckRun, name: &str) -> Option<f64> {
    run.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_answers_are_judged_as_the_api_documents_them() {
    let fake = Fake::start(fakes::openai()).await;
    let base = format!("{}/v1", fake.url());
    let scenarios = [
        ("ok", "sk-ok"),
        ("bad-key", "sk-bad"),
        ("no-quota", "sk-quota"),
        ("limited", "sk-limited"),
        ("down", "sk-down"),
        ("garbage", "sk-garbage"),
        ("slow", "sk-slow"),
    ];
    let runs = run_scenarios("openai", &base, "api_key", &scenarios, "").await;
    assert_eq!(verdict(&runs, "ok").0, "healthy");
    assert!(verdict(&runs, "ok").1.starts_with("OpenAI API: 2 models in "), "{:?}", verdict(&runs, "ok"));
    assert_eq!(metric(&runs["ok"], "ratelimit_remaining_tokens"), Some(29000.0));
    assert_eq!(metric(&runs["ok"], "ratelimit_reset_tokens_seconds"), Some(360.0));
    assert_eq!(metric(&runs["ok"], "ratelimit_reset_requests_seconds"), Some(0.12));
    assert_eq!(verdict(&runs, "bad-key"), ("unhealthy", "OpenAI rejected the API key (invalid_api_key)"));
    assert_eq!(verdict(&runs, "no-quota").0, "unhealthy");
    assert!(verdict(&runs, "no-quota").1.starts_with("OpenAI quota exhausted (insufficient_quota)"));
    assert_eq!(
        verdict(&runs, "limited"),
        ("degraded", "OpenAI is rate limiting this key (rate_limit_exceeded); requests reset in 120ms")
    );
    assert_eq!(verdict(&runs, "down"), ("unhealthy", "OpenAI server error: HTTP 503 (service_unavailable)"));
    assert_eq!(verdict(&runs, "garbage").0, "unhealthy");
    assert!(verdict(&runs, "garbage").1.contains("not with a models list"));
    // The plugin reports the slow API itself, before the host's deadline would stop it.
    assert_eq!(verdict(&runs, "slow").0, "unhealthy", "{:?}", runs["slow"]);
    assert!(
        verdict(&runs, "slow").1.starts_with("OpenAI API unreachable: no complete response within"),
        "{:?}",
        runs["slow"]
    );
    assert!(runs["slow"].error.is_none());

    let runs =
        run_scenarios("openai", &base, "api_key", &[("wanted", "sk-ok")], "[check.config]\nmodel = \"gpt-5-turbo\"")
            .await;
    assert_eq!(
        verdict(&runs, "wanted"),
        ("unhealthy", "model `gpt-5-turbo` is not available to this key (2 models listed)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_answers_are_judged_as_the_api_documents_them() {
    let fake = Fake::start(fakes::anthropic()).await;
    let scenarios = [
        ("ok", "sk-ant-ok"),
        ("bad-key", "sk-ant-nope"),
        ("limited", "sk-ant-limited"),
        ("overloaded", "sk-ant-overloaded"),
        ("garbage", "sk-ant-garbage"),
        ("slow", "sk-ant-slow"),
    ];
    let runs = run_scenarios("anthropic", &fake.url(), "api_key", &scenarios, "").await;
    assert_eq!(verdict(&runs, "ok").0, "healthy");
    assert!(verdict(&runs, "ok").1.starts_with("Anthropic API: 2 models in "));
    assert_eq!(metric(&runs["ok"], "ratelimit_remaining_requests"), Some(49.0));
    let reset = metric(&runs["ok"], "ratelimit_reset_requests_seconds").unwrap();
    assert!((0.0..=60.0).contains(&reset), "{reset}");
    assert_eq!(verdict(&runs, "bad-key"), ("unhealthy", "Anthropic rejected the API key (authentication_error)"));
    assert_eq!(
        verdict(&runs, "limited"),
        ("degraded", "Anthropic is rate limiting this key (rate_limit_error); retry after 17 s")
    );
    assert_eq!(metric(&runs["limited"], "retry_after_seconds"), Some(17.0));
    assert_eq!(verdict(&runs, "overloaded"), ("degraded", "Anthropic is overloaded (overloaded_error): Overloaded"));
    assert_eq!(verdict(&runs, "garbage").0, "unhealthy");
    assert!(verdict(&runs, "garbage").1.contains("but not with a models list"), "{:?}", runs["garbage"]);
    assert_eq!(verdict(&runs, "slow").0, "unhealthy");
    assert!(verdict(&runs, "slow").1.starts_with("Anthropic API unreachable: no complete response within"));
    assert!(runs["slow"].error.is_none(), "the plugin reported the slow API itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_checks_the_token_and_the_webhook_without_showing_either() {
    let fake = Fake::start(fakes::telegram()).await;
    let scenarios = [
        ("ok", "1:ok"),
        ("bad-token", "1:revoked"),
        ("backlog", "1:backlog"),
        ("failing", "1:failing"),
        ("limited", "1:limited"),
        ("garbage", "1:garbage"),
        ("slow", "1:slow"),
    ];
    let runs = run_scenarios("telegram", &fake.url(), "bot_token", &scenarios, "").await;
    let ok = &runs["ok"];
    assert_eq!(ok.health.as_str(), "healthy");
    assert!(
        ok.summary.starts_with("@coach_bot answers in ") && ok.summary.ends_with(", 0 updates pending"),
        "{}",
        ok.summary
    );
    let details: BTreeMap<_, _> = ok.details.iter().cloned().collect();
    assert_eq!(details["webhook_host"], "bot.example.com", "the webhook's secret path is not shown");
    assert_eq!(verdict(&runs, "bad-token"), ("unhealthy", "Telegram rejected the bot token (Unauthorized)"));
    assert_eq!(verdict(&runs, "backlog").0, "degraded");
    assert!(verdict(&runs, "backlog").1.ends_with("; 250 updates waiting for delivery"));
    assert_eq!(verdict(&runs, "failing").0, "degraded");
    assert!(
        verdict(&runs, "failing")
            .1
            .contains("the webhook failed 60 s ago: Wrong response from the webhook: 502 Bad Gateway")
    );
    assert_eq!(
        verdict(&runs, "limited"),
        ("degraded", "Telegram is rate limiting getMe: Too Many Requests: retry after 35")
    );
    assert_eq!(metric(&runs["limited"], "retry_after_seconds"), Some(35.0));
    assert_eq!(verdict(&runs, "garbage").0, "unhealthy");
    assert!(verdict(&runs, "garbage").1.contains("a body that is not the Bot API's JSON"));
    assert!(verdict(&runs, "slow").1.starts_with("Telegram Bot API unreachable (getMe): no complete response within"));
    for run in runs.values() {
        let text = format!("{run:?}");
        assert!(!text.contains("1:") && !text.contains("s3cret-path"), "a token or the webhook path leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn qdrant_readiness_and_collections() {
    let fake = Fake::start(fakes::qdrant()).await;
    let scenarios = [
        ("all", "qd-ready"),
        ("starting", "qd-starting"),
        ("bad-key", "qd-wrong"),
        ("garbage", "qd-garbage"),
        ("slow", "qd-slow"),
    ];
    let runs = run_scenarios("qdrant", &fake.url(), "api_key", &scenarios, "").await;
    let all = &runs["all"];
    assert_eq!(all.health.as_str(), "unhealthy", "a red collection: {}", all.summary);
    assert!(all.summary.contains("4 collections, 1245 points"), "{}", all.summary);
    assert!(
        all.summary.ends_with(": collection `sessions` is yellow; collection `broken` is red"),
        "grey is normal: {}",
        all.summary
    );
    let points: Vec<_> = all.metrics.iter().filter(|m| m.name == "collection_points").collect();
    assert_eq!(points.len(), 4);
    assert_eq!(
        verdict(&runs, "garbage"),
        ("unhealthy", "Qdrant answered the collections list with HTTP 200 and not the expected JSON")
    );
    assert!(
        verdict(&runs, "slow").1.starts_with("Qdrant unreachable: no complete response within"),
        "{:?}",
        runs["slow"]
    );
    assert_eq!(verdict(&runs, "starting"), ("unhealthy", "Qdrant is not ready: HTTP 503 some shards are not ready"));
    assert_eq!(verdict(&runs, "bad-key"), ("unhealthy", "Qdrant refused the request (HTTP 401): check the API key"));

    let runs = run_scenarios(
        "qdrant",
        &fake.url(),
        "api_key",
        &[("memories", "qd-ready")],
        "[check.config]\ncollections = [\"memories\"]",
    )
    .await;
    assert_eq!(verdict(&runs, "memories").0, "healthy");
    let runs = run_scenarios(
        "qdrant",
        &fake.url(),
        "api_key",
        &[("some", "qd-ready")],
        "[check.config]\ncollections = [\"memories\", \"sessions\", \"nope\"]",
    )
    .await;
    assert_eq!(verdict(&runs, "some").0, "unhealthy");
    assert!(
        verdict(&runs, "some").1.ends_with("collection `sessions` is yellow; collection `nope` does not exist"),
        "{:?}",
        runs["some"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_trusts_the_system_roots_plus_the_checks_own_ca() {
    let ca = TestCa::new();
    let fake = Fake::start_tls(fakes::openai(), &ca).await;
    let base = format!("{}/v1", fake.url());
    let config = format!(
        "[[check]]\nname = \"private-ca\"\nplugin = \"openai\"\ntarget = \"{base}\"\nca_file = \"ca.pem\"\n[check.secrets]\napi_key = \"sk-ok\"\n\n\
         [[check]]\nname = \"system-only\"\nplugin = \"openai\"\ntarget = \"{base}\"\n[check.secrets]\napi_key = \"sk-ok\"\n"
    );
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("ca.pem"), &ca.pem).unwrap();
    let runs = run_once(&workdir).await;
    assert_eq!(verdict(&runs, "private-ca").0, "healthy", "{:?}", runs["private-ca"]);
    assert_eq!(
        verdict(&runs, "system-only"),
        (
            "unhealthy",
            format!("OpenAI API unreachable: the TLS certificate of localhost:{} was rejected", fake.addr.port())
                .as_str()
        )
    );

    std::fs::write(workdir.path().join("ca.pem"), "not a certificate").unwrap();
    let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
    assert!(
        error.contains("invalid check `private-ca`: `ca_file`") && error.contains("holds no PEM certificate"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checks_ca_file_adds_to_the_system_roots_instead_of_replacing_them() {
    // Two authorities: the "system's" (handed to the binary through SSL_CERT_FILE, which the system store
    // honours) and a private one given only as one check's `ca_file`.
    let (system, private) = (TestCa::new(), TestCa::new());
    let public = Fake::start_tls(fakes::openai(), &system).await;
    let internal = Fake::start_tls(fakes::openai(), &private).await;
    let check = |name: &str, fake: &Fake, ca_file: bool| {
        let ca = if ca_file { "ca_file = \"private.pem\"\n" } else { "" };
        format!(
            "[[check]]\nname = \"{name}\"\nplugin = \"openai\"\ntarget = \"{}/v1\"\n{ca}[check.secrets]\napi_key = \"sk-ok\"\n\n",
            fake.url()
        )
    };
    let config = [
        check("public", &public, false),
        check("public-with-private-ca", &public, true),
        check("internal", &internal, true),
        check("internal-without-ca", &internal, false),
    ]
    .concat();
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("private.pem"), &private.pem).unwrap();
    std::fs::write(workdir.path().join("system.pem"), &system.pem).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let output = crate::support::selfmon_command(&workdir)
            .arg("check")
            .env("SSL_CERT_FILE", workdir.path().join("system.pem"))
            .output()
            .unwrap();
        drop(workdir);
        output
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    let status = |name: &str| {
        let line = table.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default();
        line.split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(status("public"), "healthy", "the system's roots are trusted:\n{table}");
    assert_eq!(status("public-with-private-ca"), "healthy", "a ca_file adds to them:\n{table}");
    assert_eq!(status("internal"), "healthy", "the private CA is trusted where given:\n{table}");
    assert_eq!(status("internal-without-ca"), "unhealthy", "and only there:\n{table}");
    assert!(table.contains("the TLS certificate of localhost:") && table.contains("was rejected"), "{table}");
}
