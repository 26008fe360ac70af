//! The dashboard in a real headless Chromium, and its session and socket over plain HTTP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use selfmon_plugin_artifacts::guests;

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
    eprintln!("the tile changed {took:?} after the API reported the change");
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
    // The nodes: on SQLite, this one, live and leading, with its check.
    let node = "document.querySelector('#nodes-table tr[data-node][data-live=\"true\"]')?.textContent";
    browser
        .wait_for(&format!("{node}?.includes('this node') && {node}.includes('leads') && {node}.includes('web')"))
        .await;
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
    let script = client.get(format!("{page}/assets/app.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(script.headers()["content-encoding"], "gzip");
    let etag = script.headers()["etag"].clone();
    let again = client.get(format!("{page}/assets/app.js")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

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
    // Another site's page cannot use an admin's cookie: no changes, no reading, no socket, no GraphQL socket.
    let admin = sign_in("admin-key-0123456789").await.unwrap();
    let admin = admin.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let refused = || async {
        let (_, status) =
            crate::support::get_json_with_key(&format!("{}/v1/status", selfmon.url), "admin-key-0123456789").await;
        status["api"]["refused_calls"].as_u64().unwrap_or_else(|| panic!("{status}"))
    };
    let refused_before = refused().await;
    for (method, path) in
        [(reqwest::Method::POST, "/api/v1/alerts/1/acknowledge"), (reqwest::Method::GET, "/api/v1/status")]
    {
        let forged = client
            .request(method, format!("{page}{path}"))
            .header("cookie", &admin)
            .header("origin", "http://evil.example")
            .json(&json!({"comment": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(forged.json::<Value>().await.unwrap()["error"]["code"], "cross_origin");
    }
    for path in ["/ws", "/api/graphql"] {
        let mut request = format!("{}{path}", page.replace("http://", "ws://")).into_client_request().unwrap();
        request.headers_mut().insert("cookie", admin.parse().unwrap());
        request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 403, "{path}"),
            other => panic!("a socket on {path} opened from another origin: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(refused().await, refused_before + 4, "each refusal is a security event, counted");
    // Nor is the API's GraphQL socket served to the page itself: the page's socket is /ws.
    let mut request = format!("{}/api/graphql", page.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("cookie", admin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 403),
        other => panic!("the GraphQL socket opened on the dashboard: {:?}", other.map(|_| ())),
    }
    // /metrics, public on the API port, is not public through the dashboard.
    assert_eq!(client.get(format!("{page}/api/metrics")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

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

    // Signing out ends the session, even for a copy of the cookie kept elsewhere, and closes its open socket.
    let out = client.delete(format!("{page}/session")).header("cookie", &cookie).send().await.unwrap();
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(with_cookie("/api/v1/status").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match live.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the signed-out socket closes");
    assert_eq!(closed, 4401);

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

    // A session signed out before the restart stays signed out after it.
    let client = reqwest::Client::new();
    let signed =
        client.post(format!("{page}/session")).json(&json!({"key": "admin-key-0123456789"})).send().await.unwrap();
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    client.delete(format!("{page}/session")).header("cookie", &cookie).send().await.unwrap();

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
    let old = client.get(format!("{page}/api/v1/status")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "a signed-out session came back with the restart");
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

#[tokio::test]
async fn latency_series_and_the_plugins_report_answer_from_stored_runs() {
    let (_up, service) = switchable_service().await;
    let config = format!(
        r#"
[[check]]
name = "web"
plugin = "http"
target = "{service}"
interval = "1s"

[[check]]
name = "crashing"
plugin = "trap"
interval = "1s"
"#
    );
    let workdir = Workdir::new(&config, &[("trap", guests::TRAP)]);
    let selfmon = Selfmon::start(&workdir).await;
    while workdir.stored_start_times("web").len() < 3 || workdir.stored_start_times("crashing").len() < 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, series) = selfmon.get("/v1/performance/series?check=web&range=1h").await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["step_seconds"], 30.0);
    let points = series["points"].as_array().unwrap();
    // Every 30-second step of the hour, oldest first, aligned to the step.
    assert!((120..=122).contains(&points.len()), "{} points", points.len());
    assert!(points.windows(2).all(|w| w[1]["t"].as_i64().unwrap() - w[0]["t"].as_i64().unwrap() == 30_000));
    assert!(points.iter().all(|p| p["t"].as_i64().unwrap() % 30_000 == 0));
    let counted: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    let stored = workdir.stored_start_times("web").len() as u64;
    assert!(counted >= 3 && counted <= stored, "{counted} counted, {stored} stored");
    for point in points.iter().filter(|p| p["count"].as_u64() > Some(0)) {
        let (p50, p99) = (point["p50_ms"].as_f64().unwrap(), point["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{point}");
    }
    assert!(points.iter().filter(|p| p["count"] == 0).all(|p| p["p50_ms"].is_null()));
    assert_eq!(series["truncated"], false);
    let (_, week) = selfmon.get("/v1/performance/series?check=web&range=7d").await;
    assert_eq!(week["step_seconds"], 7200.0);
    for (query, status) in [
        ("check=web&range=8d", StatusCode::BAD_REQUEST),
        ("check=web&range=soon", StatusCode::BAD_REQUEST),
        ("check=web&service=bot&operation=x", StatusCode::BAD_REQUEST),
        ("range=1h", StatusCode::BAD_REQUEST),
        ("check=nope", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(selfmon.get(&format!("/v1/performance/series?{query}")).await.0, status, "{query}");
    }

    let (_, report) = selfmon.get("/v1/plugins").await;
    let plugin = |name: &str| report["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let http = plugin("http");
    let port = service.trim_end_matches('/').rsplit(':').next().unwrap();
    assert_eq!(
        http["used_by"],
        json!([{"kind": "check", "name": "web", "network": [format!("127.0.0.1:{port}")], "secrets": []}])
    );
    assert_eq!(http["failures"]["deadline"], 0);
    let trap = plugin("trap");
    assert!(trap["source"].as_str().unwrap().ends_with("trap.wasm"), "{trap}");
    assert!(trap["failures"]["trap"].as_u64().unwrap() >= 1, "{trap}");
    let recent = &trap["recent_failures"][0];
    assert_eq!(recent["check"], "crashing");
    assert!(recent["message"].as_str().unwrap().contains("deliberate panic"), "{recent}");
    selfmon.stop().await;
}
