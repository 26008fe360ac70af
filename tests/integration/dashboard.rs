//! The dashboard in a real headless Chromium, and its session and socket over plain HTTP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::browser::{Browser, screenshots};
use crate::support::{PATIENCE, Selfmon, Workdir, free_port, get_json, serve_binary, signal, switchable_service};

const SECTIONS: [&str; 6] = ["overview", "performance", "logs", "alerts", "users", "plugins"];

/// A check of a service the test switches, a rule that fires when it is down, and a log source to post to.
fn config(dashboard: u16, service: &str, extra: &str) -> String {
    format!(
        r#"
[dashboard]
listen = "127.0.0.1:{dashboard}"

[alerting]
interval = "1s"
default_rules = false

[[rule]]
name = "service_down"
plugin = "health"
severity = "high"
description = "A service is down"

[[check]]
name = "web"
plugin = "http"
target = "{service}"
interval = "1s"

[[log_source]]
name = "app"
kind = "http"
parser = "json"
{extra}
"#
    )
}

async fn post_log(api: &str, key: Option<&str>, message: &str) {
    let mut request = reqwest::Client::new()
        .post(format!("{api}/v1/logs?source=app"))
        .json(&json!({"level": "error", "service": "bot", "message": message}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let answer = request.send().await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
}

/// The page's text of the element `selector` finds.
fn text_of(selector: &str) -> String {
    format!("(document.querySelector({selector:?}) || {{}}).textContent || ''")
}

#[tokio::test]
async fn the_dashboard_follows_health_alerts_and_logs_live_without_reloading() {
    let (up, service) = switchable_service().await;
    let port = free_port();
    let workdir = Workdir::new(&config(port, &service, ""), &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let page = format!("http://127.0.0.1:{port}");

    let (status, health) = get_json(&format!("{page}/health")).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));

    let browser = Browser::start().await;
    browser.open(&format!("{page}/")).await;
    browser.wait_for("document.querySelector('#connection').dataset.state === 'live'").await;
    browser.wait_for("document.querySelector('.tile[data-check=\"web\"]')?.dataset.status === 'healthy'").await;
    // A mark that a reload would wipe.
    browser.eval("window.notReloaded = true").await;

    // The service goes down: the tile follows within 3 seconds of selfmon knowing, without a reload.
    up.store(false, Ordering::SeqCst);
    selfmon.wait_for("web", "unhealthy", |c| c["status"] == "unhealthy").await;
    let took =
        browser.wait_for("document.querySelector('.tile[data-check=\"web\"]').dataset.status === 'unhealthy'").await;
    assert!(took < Duration::from_secs(3), "the tile changed {took:?} after the API did");
    assert_eq!(browser.eval("window.notReloaded === true").await, json!(true));
    browser.screenshot("overview-unhealthy").await;

    // The rule fires; acknowledging it from the page changes it in the API.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let alert = loop {
        let (_, alerts) = selfmon.get("/v1/alerts").await;
        if let Some(alert) =
            alerts["active"].as_array().and_then(|a| a.iter().find(|a| a["state"] == "firing").cloned())
        {
            break alert;
        }
        assert!(tokio::time::Instant::now() < deadline, "the alert never fired: {alerts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = alert["id"].as_i64().unwrap();
    browser.eval("location.hash = '#alerts'").await;
    let row = format!("[data-alert-id=\"{id}\"]");
    browser.wait_for(&format!("document.querySelector('{row} button.ack')")).await;
    browser.screenshot("alerts").await;
    browser.fill(&format!("{row} input.ack-comment"), "looking into it").await;
    browser.click(&format!("{row} button.ack")).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, alert) = selfmon.get(&format!("/v1/alerts/{id}")).await;
        if alert["acknowledged_at"].is_string() {
            assert_eq!(alert["ack_comment"], "looking into it");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page's acknowledgement never reached the API: {alert}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_for(&format!("!document.querySelector('{row} button.ack')")).await;

    // A log line posted to the API appears in the live tail; its text is shown as text, never as markup.
    browser.eval("location.hash = '#logs'").await;
    browser.wait_for("document.querySelector('#tail')").await;
    let line = "payment <b id=injected>failed</b> for order 77";
    post_log(&selfmon.url, None, line).await;
    browser
        .wait_for(&format!(
            "[...document.querySelectorAll('#tail .tail-line')].some(e => e.textContent.includes({line:?}))"
        ))
        .await;
    assert_eq!(browser.eval("document.querySelector('#injected') === null").await, json!(true));
    assert_eq!(browser.eval("window.notReloaded === true").await, json!(true));

    // Every section renders; the screenshots are the test's artifacts.
    for section in SECTIONS {
        browser.eval(&format!("location.hash = '#{section}'")).await;
        browser
            .wait_for(&format!("getComputedStyle(document.querySelector('section#{section}')).display !== 'none'"))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.screenshot(&format!("{section}-1280")).await;
    }
    // A phone's width: nothing sticks out sideways.
    browser.viewport(390, 844, true).await;
    for section in SECTIONS {
        browser.eval(&format!("location.hash = '#{section}'")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth").await;
        assert!(overflow.as_i64().unwrap() <= 0, "#{section} is {overflow} px wider than a phone");
        browser.screenshot(&format!("{section}-390")).await;
    }
    assert_eq!(browser.problems(), Vec::<String>::new(), "the page reported problems");
    eprintln!("screenshots in {}", screenshots().display());
    selfmon.stop().await;
}

/// A WebSocket to the dashboard with these request headers.
async fn socket(
    page: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("{}/ws", page.replace("http://", "ws://")).into_client_request().unwrap();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

#[tokio::test]
async fn the_dashboard_asks_for_a_key_and_keeps_the_session_in_a_guarded_cookie() {
    let (_up, service) = switchable_service().await;
    let port = free_port();
    let keys = r#"
[api]
keys = [{ name = "ops", key = "admin-key-0123456789", role = "admin" }, { name = "viewer", key = "read-key-0123456789" }, { name = "exporter", key = "ingest-key-0123456789", role = "ingest" }]
"#;
    let workdir = Workdir::new(&config(port, &service, keys), &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let page = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let (_, session) = get_json(&format!("{page}/session")).await;
    assert_eq!(session, json!({"auth_required": true, "signed_in": false, "name": null, "role": null}));
    let status = client.get(format!("{page}/api/v1/status")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The page itself and its liveness need no key.
    assert_eq!(client.get(format!("{page}/health")).send().await.unwrap().status(), StatusCode::OK);
    let html = client.get(format!("{page}/")).send().await.unwrap();
    let policy = html.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("script-src 'self'"), "{policy}");

    // Wrong keys and ingest keys do not sign in.
    let sign_in = |key: &str| client.post(format!("{page}/session")).json(&json!({"key": key})).send();
    assert_eq!(sign_in("not-a-key").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in("ingest-key-0123456789").await.unwrap().status(), StatusCode::FORBIDDEN);

    // A read key signs in: the cookie is HttpOnly, SameSite=Strict, Secure (the page is at a loopback address).
    let answer = sign_in("read-key-0123456789").await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let set_cookie = answer.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing from {set_cookie}");
    }
    assert!(!set_cookie.contains("read-key"), "the key itself is in the cookie: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = |path: &str| client.get(format!("{page}{path}")).header("cookie", &cookie).send();
    let (status, me) = (
        with_cookie("/session").await.unwrap().status(),
        with_cookie("/session").await.unwrap().json::<Value>().await.unwrap(),
    );
    assert_eq!((status, me["name"].as_str(), me["role"].as_str()), (StatusCode::OK, Some("viewer"), Some("read")));
    assert_eq!(with_cookie("/api/v1/status").await.unwrap().status(), StatusCode::OK);
    // The session has the key's role: a read key cannot change anything through it.
    let change = client
        .post(format!("{page}/api/v1/silences"))
        .header("cookie", &cookie)
        .header("origin", &page)
        .json(&json!({"matchers": [{"name": "alertname", "value": "x"}], "duration": "1h", "comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), StatusCode::FORBIDDEN);
    // Another site's page cannot make changes with the cookie, nor open the socket.
    let forged = client
        .post(format!("{page}/api/v1/alerts/1/acknowledge"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .json(&json!({"comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let mut request = format!("{}/ws", page.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err(), "a socket opened from another origin");

    // The socket: without a session it closes with 4401; with one it says hello and carries the check's runs.
    let mut anonymous = socket(&page, &[]).await;
    match anonymous.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4401),
        other => panic!("expected a 4401 close, got {other:?}"),
    }
    let mut live = socket(&page, &[("cookie", &cookie), ("origin", &page)]).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !seen.iter().any(|e: &Value| e["event"] == "check.ran" && e["data"]["check"] == "web") {
        let message = tokio::time::timeout_at(deadline, live.next()).await.expect("a run arrives").unwrap().unwrap();
        if let Message::Text(text) = message {
            seen.push(serde_json::from_str(&text).unwrap());
        }
    }
    assert_eq!(seen[0]["event"], "hello");

    // Signing out ends the session, even for a copy of the cookie kept elsewhere.
    let out = client.delete(format!("{page}/session")).header("cookie", &cookie).send().await.unwrap();
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(with_cookie("/api/v1/status").await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // In the browser: the page asks for a key, signs in, and never shows it.
    let browser = Browser::start().await;
    browser.open(&format!("{page}/")).await;
    browser
        .wait_for("document.querySelector('form#login') && document.querySelector('form#login').offsetParent !== null")
        .await;
    browser.screenshot("sign-in").await;
    browser.fill("#key", "bad-key").await;
    browser.click("form#login button[type=submit], form#login [type=submit]").await;
    browser.wait_for(&format!("{}.length > 0", text_of("#login-error"))).await;
    browser.fill("#key", "admin-key-0123456789").await;
    browser.click("form#login [type=submit]").await;
    browser.wait_for("document.querySelector('#connection').dataset.state === 'live'").await;
    browser.wait_for("document.querySelector('.tile[data-check=\"web\"]')").await;
    let shown = browser.eval("document.documentElement.outerHTML + JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie").await;
    assert!(!shown.as_str().unwrap().contains("admin-key-0123456789"), "the key is in the page or its storage");
    // The failed sign-in's 401 is the only problem the page reported.
    let problems: Vec<String> = browser.problems().into_iter().filter(|p| !p.contains("401")).collect();
    assert_eq!(problems, Vec::<String>::new());
    selfmon.stop().await;
}

#[tokio::test]
async fn the_page_reconnects_and_catches_up_after_selfmon_restarts() {
    let (up, service) = switchable_service().await;
    let (api_port, port) = (free_port(), free_port());
    let extra = format!(
        "\n[server]\napi_listen = \"127.0.0.1:{api_port}\"\n\n[api]\nkeys = [{{ name = \"ops\", key = \"admin-key-0123456789\", role = \"admin\" }}]\n"
    );
    let workdir = Workdir::new(&config(port, &service, &extra), &[]);
    let key = Some("admin-key-0123456789");
    let (mut child, api) = serve_binary(&workdir, api_port, "warn", std::process::Stdio::null()).await;
    let page = format!("http://127.0.0.1:{port}");

    let browser = Browser::start().await;
    browser.open(&format!("{page}/")).await;
    browser.wait_for("document.querySelector('form#login')?.offsetParent").await;
    browser.fill("#key", "admin-key-0123456789").await;
    browser.click("form#login [type=submit]").await;
    browser.wait_for("document.querySelector('.tile[data-check=\"web\"]')?.dataset.status === 'healthy'").await;
    browser.eval("window.notReloaded = true; location.hash = '#logs'").await;
    post_log(&api, key, "before the restart").await;
    browser.wait_for("[...document.querySelectorAll('#tail .tail-line')].some(e => e.textContent.includes('before the restart'))").await;

    // selfmon stops: the page says it is reconnecting and stays usable.
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
    browser.wait_for("document.querySelector('#connection').dataset.state === 'reconnecting'").await;
    browser.screenshot("reconnecting").await;
    browser.eval("location.hash = '#overview'").await;

    // While it is down the service fails; selfmon comes back, the page reconnects with its session (the cookie
    // survives a restart), shows the change, and the tail continues.
    up.store(false, Ordering::SeqCst);
    let (mut child, api) = serve_binary(&workdir, api_port, "warn", std::process::Stdio::null()).await;
    browser.wait_for("document.querySelector('#connection').dataset.state === 'live'").await;
    browser.wait_for("document.querySelector('.tile[data-check=\"web\"]').dataset.status === 'unhealthy'").await;
    browser.eval("location.hash = '#logs'").await;
    post_log(&api, key, "after the restart").await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#tail .tail-line')].some(e => e.textContent.includes('after the restart'))",
        )
        .await;
    let before = browser
        .eval("[...document.querySelectorAll('#tail .tail-line')].filter(e => e.textContent.includes('before the restart')).length")
        .await;
    assert_eq!(before, json!(1), "the tail lost or repeated a line across the restart");
    assert_eq!(browser.eval("window.notReloaded === true").await, json!(true));
    assert_eq!(
        browser.eval("!document.querySelector('form#login')?.offsetParent").await,
        json!(true),
        "signed out by the restart"
    );
    // Only the refused connections while selfmon was down may be reported.
    let problems: Vec<String> = browser
        .problems()
        .into_iter()
        .filter(|p| !p.contains("ERR_CONNECTION_REFUSED") && !p.contains("WebSocket"))
        .collect();
    assert_eq!(problems, Vec::<String>::new());
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
}
