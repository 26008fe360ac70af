//! Alert notifications over the wire, from selfmon running in-process to real local receivers: a webhook receiver
//! that checks Alertmanager's webhook payload, Slack's and Discord's incoming-webhook shapes, an SMTP server with
//! STARTTLS, and a real Alertmanager; and the whole path from a check that goes down to its alert resolving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::{
    ENGINES, Engine, PATIENCE, Selfmon, Workdir, closed_port, free_port, get_json_with_key, switchable_service, within,
};

const ADMIN: &str = "admin-key-0123456789";
/// Parts of the receivers' URLs that are secrets, as the tokens in real webhook URLs are.
const WEBHOOK_TOKEN: &str = "whk-T0KEN-4f9a2c";
const SLACK_TOKEN: &str = "XXslackTOKENXX1234";
const DISCORD_TOKEN: &str = "dsc-token-8b7e6d";
const TELEGRAM_TOKEN: &str = "123456:AAtelegramTOKEN9";
/// The rule's `runbook_url` annotation, its template filled in.
const RUNBOOK: &str = "https://runbooks.example/web-down";

/// What the receivers were sent, by path.
#[derive(Default)]
struct Received {
    bodies: Mutex<Vec<(String, Value)>>,
    webhook_calls: AtomicUsize,
    discord_calls: AtomicUsize,
    telegram_calls: AtomicUsize,
}

impl Received {
    fn at(&self, path_part: &str) -> Vec<Value> {
        self.bodies.lock().unwrap().iter().filter(|(p, _)| p.contains(path_part)).map(|(_, b)| b.clone()).collect()
    }
}

/// One server for every chat and webhook receiver. The webhook receiver fails twice before it accepts; Discord
/// answers its first message with a 429 and `Retry-After`, as its API does when rate limiting
/// (<https://discord.com/developers/docs/topics/rate-limits>); so does Telegram's Bot API, with the wait in its body
/// (<https://core.telegram.org/bots/api#responseparameters>), and its answers are its documented `{"ok": ...}`.
async fn start_receivers() -> (Arc<Received>, String) {
    let received = Arc::new(Received::default());
    let state = received.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
        let state = state.clone();
        async move {
            assert_eq!(headers["content-type"], "application/json");
            let path = uri.path().to_string();
            let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            state.bodies.lock().unwrap().push((path.clone(), value));
            if path.contains("/hooks/") && state.webhook_calls.fetch_add(1, Ordering::SeqCst) < 2 {
                // Error pages quote the request, tokens and all.
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("receiver down for {path}")).into_response();
            }
            if path.contains("/discord/") && state.discord_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let body = json!({"message": "You are being rate limited.", "retry_after": 1.0, "global": false});
                let mut response: Response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                response.headers_mut().insert("retry-after", "1".parse().unwrap());
                return response;
            }
            if path.contains("/telegram/") {
                if state.telegram_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    let body = json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
                                      "parameters": {"retry_after": 1}});
                    return (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                }
                let body = json!({"ok": true, "result": {"message_id": 7, "date": 1_800_000_000,
                                  "chat": {"id": -1_001_234_567_890_i64, "type": "supergroup"}}});
                return (StatusCode::OK, axum::Json(body)).into_response();
            }
            if path.contains("/slack/") {
                // Slack answers a plain `ok`.
                return (StatusCode::OK, "ok").into_response();
            }
            StatusCode::NO_CONTENT.into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, base)
}

async fn eventually<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    within(PATIENCE, what, probe).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_channel_gets_its_receivers_payload_and_failures_are_retried() {
    let (received, base) = start_receivers().await;
    let smtp = SmtpServer::start().await;
    let down = closed_port().await;
    let config = format!(
        r#"
[api]
rate_limit = 0
keys = [{{ name = "ops", key = "{ADMIN}", role = "admin" }}]

[alerting]
interval = "1s"
group_wait = "1s"
default_rules = false
external_url = "http://selfmon.example:8001"

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "http://{down}/"

[[rule]]
name = "web_down"
plugin = "health"
severity = "critical"
channels = ["webhook", "slack", "discord", "email", "telegram"]
description = "The web front end is down"
[rule.annotations]
summary = "{{{{ $labels.check }}}} does not answer"
runbook_url = "https://runbooks.example/{{{{$labels.check}}}}-down"

[[channel]]
name = "receiver"
kind = "webhook"
url = "{base}/hooks/{WEBHOOK_TOKEN}"

[[channel]]
name = "chat"
kind = "slack"
url = "{base}/slack/services/T000/B000/{SLACK_TOKEN}"

[[channel]]
name = "gaming"
kind = "discord"
url = "{base}/discord/api/webhooks/123/{DISCORD_TOKEN}"

[[channel]]
name = "bot-chat"
kind = "telegram"
url = "{base}/telegram"
token = "{TELEGRAM_TOKEN}"
chat_id = "-1001234567890"

[[channel]]
name = "mail"
kind = "email"
smtp = "localhost:{smtp_port}"
from = "selfmon <alerts@example.com>"
to = ["ops@example.com", "oncall@example.com"]
username = "selfmon"
password = "smtp-pass-123"
ca_file = "smtp-ca.pem"
"#,
        smtp_port = smtp.addr.port()
    );
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("smtp-ca.pem"), &smtp.ca_pem).unwrap();
    let selfmon = Selfmon::start(&workdir).await;

    // Alertmanager's webhook payload, version 4, delivered on the third attempt.
    let hooks = eventually("three webhook attempts", async || {
        let hooks = received.at("/hooks/");
        (hooks.len() >= 3).then_some(hooks)
    })
    .await;
    let payload = &hooks[2];
    assert_eq!(payload, &hooks[0], "a retry sends the same message");
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["status"], "firing");
    assert_eq!(payload["receiver"], "receiver");
    assert_eq!(payload["groupLabels"], json!({"alertname": "web_down"}));
    assert_eq!(payload["externalURL"], "http://selfmon.example:8001");
    assert_eq!(payload["truncatedAlerts"], 0);
    let alert = &payload["alerts"][0];
    assert_eq!(
        alert["labels"],
        json!({"alertname": "web_down", "check": "web", "plugin": "http", "severity": "critical"})
    );
    // The rule's annotations, with the alert's labels filled in, as Alertmanager sends them.
    assert_eq!(alert["annotations"]["description"], "The web front end is down");
    assert_eq!(alert["annotations"]["summary"], "web does not answer");
    assert_eq!(alert["annotations"]["runbook_url"], RUNBOOK);
    assert_eq!(payload["commonAnnotations"]["runbook_url"], RUNBOOK);
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(humantime::parse_rfc3339(alert["startsAt"].as_str().unwrap()).is_ok());
    assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);
    let link = alert["generatorURL"].as_str().unwrap();
    let id = link.strip_prefix("http://selfmon.example:8001/v1/alerts/").expect("a link to the alert's page");
    let (status, page) = get_json_with_key(&format!("{}/v1/alerts/{id}", selfmon.url), ADMIN).await;
    assert_eq!((status.as_u16(), page["fingerprint"].as_str()), (200, alert["fingerprint"].as_str()), "{page}");
    assert_eq!(payload["commonLabels"], alert["labels"]);

    // Slack: `text` for notifications, and blocks.
    let slack = eventually("a Slack message", async || received.at("/slack/").into_iter().next()).await;
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING:1] web_down\n[FIRING] web_down (critical): web is unhealthy")
    );
    assert_eq!(
        slack["blocks"][0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "[FIRING:1] web_down"}})
    );
    assert_eq!(slack["blocks"][1]["text"]["type"], "mrkdwn");
    let section = slack["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(section.contains(&format!("<{RUNBOOK}|runbook>\nThe web front end is down")), "{section}");

    // Discord: retried after its Retry-After, content and embeds within its limits, no mentions.
    let discord = eventually("two Discord attempts", async || {
        let all = received.at("/discord/");
        (all.len() >= 2).then_some(all)
    })
    .await;
    assert_eq!(discord[1]["content"], "[FIRING:1] web_down");
    assert_eq!(discord[1]["embeds"][0]["title"], "[FIRING] web_down");
    assert_eq!(discord[1]["embeds"][0]["color"], 0xE0_1E_5A);
    assert_eq!(discord[1]["allowed_mentions"], json!({"parse": []}));
    let embed = discord[1]["embeds"][0]["description"].as_str().unwrap();
    assert!(embed.ends_with(&format!("\nThe web front end is down\n[runbook]({RUNBOOK})")), "{embed}");

    // Email over STARTTLS, logged in, to both recipients.
    let mail = eventually("an email", async || smtp.mails().into_iter().next()).await;
    assert_eq!(mail.login.as_deref(), Some("selfmon:smtp-pass-123"));
    assert_eq!(mail.from, "alerts@example.com");
    assert_eq!(mail.to, ["ops@example.com", "oncall@example.com"]);
    assert!(mail.data.contains("Subject: [FIRING:1] web_down (selfmon)"), "{}", mail.data);
    assert!(mail.data.contains("[FIRING] web_down (critical)\r\nweb is unhealthy"), "{}", mail.data);
    assert!(mail.data.contains("Details: http://selfmon.example:8001/v1/alerts/"), "{}", mail.data);
    assert!(
        mail.data.contains(&format!("Description: The web front end is down\r\nRunbook: {RUNBOOK}\r\n")),
        "{}",
        mail.data
    );

    // Telegram: an HTML message to the chat, sent again after the wait its 429 asked for, at the token's address.
    let telegram = eventually("two Telegram attempts", async || {
        let all = received.bodies.lock().unwrap().clone();
        let sent: Vec<_> = all.into_iter().filter(|(path, _)| path.contains("/telegram/")).collect();
        (sent.len() >= 2).then_some(sent)
    })
    .await;
    assert_eq!(telegram[1].0, format!("/telegram/bot{TELEGRAM_TOKEN}/sendMessage"));
    let message = &telegram[1].1;
    assert_eq!((message["chat_id"].as_str(), message["parse_mode"].as_str()), (Some("-1001234567890"), Some("HTML")));
    let text = message["text"].as_str().unwrap();
    assert!(text.starts_with("<b>[FIRING:1] web_down</b>\n[FIRING] web_down (critical): web is unhealthy"), "{text}");
    assert!(text.contains(&format!("\">details</a> <a href=\"{RUNBOOK}\">runbook</a>")), "{text}");
    assert!(text.ends_with("\n<i>The web front end is down</i>"), "{text}");

    // Every attempt is on record, and no token of any URL is shown anywhere.
    let attempts = eventually("the attempts on record", async || {
        let (_, page) = get_json_with_key(&format!("{}/v1/alerts/notifications?limit=100", selfmon.url), ADMIN).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= 9).then_some(page)
    })
    .await;
    let of = |channel: &str| -> Vec<(u64, String, Option<u64>)> {
        let mut found: Vec<_> = attempts["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["channel"] == channel)
            .map(|a| {
                (a["attempt"].as_u64().unwrap(), a["outcome"].as_str().unwrap().to_string(), a["status_code"].as_u64())
            })
            .collect();
        found.sort();
        found
    };
    let expected =
        |list: &[(u64, &str, u64)]| list.iter().map(|(a, o, c)| (*a, o.to_string(), Some(*c))).collect::<Vec<_>>();
    assert_eq!(of("receiver"), expected(&[(1, "failed", 500), (2, "failed", 500), (3, "delivered", 204)]));
    assert_eq!(of("gaming"), expected(&[(1, "failed", 429), (2, "delivered", 204)]));
    assert_eq!(of("chat"), expected(&[(1, "delivered", 200)]));
    assert_eq!(of("mail"), expected(&[(1, "delivered", 250)]));
    assert_eq!(of("bot-chat"), expected(&[(1, "failed", 429), (2, "delivered", 200)]));
    let failed =
        attempts["items"].as_array().unwrap().iter().find(|a| a["channel"] == "receiver" && a["attempt"] == 1).unwrap();
    assert_eq!(failed["error"], "answered HTTP 500: receiver down for [redacted]");

    let metrics = reqwest::get(format!("{}/metrics", selfmon.url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"selfmon_alert_notifications_total{channel="receiver",outcome="failed"} 2"#,
        r#"selfmon_alert_notifications_total{channel="receiver",outcome="delivered"} 1"#,
        r#"selfmon_alerts{rule="web_down",state="firing"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    assert!(metrics.contains(r#"selfmon_rule_evaluations_total{outcome="ok",rule="web_down"}"#));

    let mut shown = attempts.to_string();
    for path in ["/v1/alerts", "/v1/alerts/rule-states", "/v1/status", "/v1/alerts/notifications"] {
        shown.push_str(&get_json_with_key(&format!("{}{path}", selfmon.url), ADMIN).await.1.to_string());
    }
    for secret in [WEBHOOK_TOKEN, SLACK_TOKEN, DISCORD_TOKEN, TELEGRAM_TOKEN, "AAtelegramTOKEN9", "smtp-pass-123"] {
        assert!(!shown.contains(secret), "`{secret}` leaked");
    }
    selfmon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_that_goes_down_fires_the_default_service_down_rule_and_its_recovery_resolves_it() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        a_check_that_goes_down_fires_the_default_service_down_rule_and_its_recovery_resolves_it_on(engine).await;
    }
}

async fn a_check_that_goes_down_fires_the_default_service_down_rule_and_its_recovery_resolves_it_on(engine: Engine) {
    let (up, service_url) = switchable_service().await;
    let (received, base) = start_receivers().await;
    // Retries are the other test's subject: this receiver accepts from the start.
    received.webhook_calls.store(2, Ordering::SeqCst);
    let config = format!(
        r#"
[alerting]
interval = "1s"
group_wait = "0s"
group_interval = "1s"
default_channels = ["receiver"]

[[check]]
name = "bot-api"
plugin = "http"
interval = "1s"
target = "{service_url}"

[[channel]]
name = "receiver"
kind = "webhook"
url = "{base}/hooks/{WEBHOOK_TOKEN}"
"#
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    selfmon.wait_for("bot-api", "healthy", |s| s["status"] == "healthy").await;
    let (_, states) = selfmon.get("/v1/alerts/rule-states").await;
    let names: Vec<&str> = states.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 9, "the nine default rules: {names:?}");
    assert!(received.at("/hooks/").is_empty(), "all is well, nothing is sent");

    up.store(false, Ordering::SeqCst);
    let fired = eventually("the firing notification", async || received.at("/hooks/").into_iter().next()).await;
    assert_eq!(fired["status"], "firing");
    assert_eq!(fired["alerts"][0]["labels"]["alertname"], "service_down");
    assert_eq!(fired["alerts"][0]["labels"]["check"], "bot-api");
    assert_eq!(fired["alerts"][0]["labels"]["severity"], "critical");
    let (_, alerts) = selfmon.get("/v1/alerts").await;
    assert_eq!(alerts["active"][0]["rule"], "service_down", "{alerts}");
    assert_eq!(alerts["active"][0]["state"], "firing");

    up.store(true, Ordering::SeqCst);
    let resolved = eventually("the resolved notification", async || {
        received.at("/hooks/").into_iter().find(|b| b["status"] == "resolved")
    })
    .await;
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["fingerprint"], fired["alerts"][0]["fingerprint"], "the same alert");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let (_, alerts) = selfmon.get("/v1/alerts").await;
    assert_eq!(alerts["active"], json!([]));
    assert_eq!(alerts["history"]["items"][0]["rule"], "service_down");
    assert_eq!(received.at("/hooks/").len(), 2, "one message each way, however many evaluations");
    selfmon.stop().await;
}

/// Debian's Alertmanager on a free port, with one do-nothing receiver; stopped when dropped.
struct Alertmanager {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n").unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (scripts/setup installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        eventually("Alertmanager becoming ready", async || {
            reqwest::get(&ready).await.ok().filter(|r| r.status().is_success())
        })
        .await;
        Self { url, child, _dir: dir }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_are_forwarded_to_a_real_alertmanager() {
    let alertmanager = Alertmanager::start().await;
    let down = closed_port().await;
    let config = format!(
        r#"
[alerting]
interval = "1s"
default_rules = false

[[check]]
name = "queue"
plugin = "http"
interval = "1s"
target = "http://{down}/"

[[rule]]
name = "queue_down"
plugin = "health"
channels = ["am"]
labels = {{ team = "platform" }}

[[channel]]
name = "am"
kind = "alertmanager"
url = "{}"
"#,
        alertmanager.url
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let alerts_url = format!("{}/api/v2/alerts", alertmanager.url);
    let alert = eventually("the alert in Alertmanager", async || {
        let alerts: Value = reqwest::get(&alerts_url).await.ok()?.json().await.ok()?;
        alerts.as_array()?.iter().find(|a| a["labels"]["alertname"] == "queue_down").cloned()
    })
    .await;
    assert_eq!(alert["labels"]["check"], "queue");
    assert_eq!(alert["labels"]["team"], "platform");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["status"]["state"], "active");
    assert!(alert["annotations"]["summary"].as_str().unwrap().starts_with("queue is unhealthy"), "{alert}");
    selfmon.stop().await;
}

/// Channels go through the proxy the environment names, as curl's variables say (`HTTP_PROXY` in absolute form,
/// `HTTPS_PROXY` through a `CONNECT` tunnel, `NO_PROXY` straight to the receiver); and a receiver's 404 (a Slack
/// webhook that was deleted) is sent once, not retried.
#[tokio::test(flavor = "multi_thread")]
async fn channels_go_through_the_environments_proxy_and_a_404_is_not_sent_again() {
    use crate::support::fakes::{Fake, TestCa};
    use crate::support::proxy::Proxy;
    use crate::support::receiver::AlertReceiver;
    use crate::support::{selfmon_command, serve_command};

    let (behind_proxy, upstream_url) = AlertReceiver::start(0).await;
    let (direct, direct_url) = AlertReceiver::start(0).await;
    let upstream: std::net::SocketAddr =
        upstream_url.trim_start_matches("http://").trim_end_matches("/alerts").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let ca = TestCa::new();
    let tunnelled = Arc::new(AtomicUsize::new(0));
    let counted = tunnelled.clone();
    let tls_receiver = Fake::start_tls(
        axum::Router::new().route(
            "/alerts",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::NO_CONTENT }
            }),
        ),
        &ca,
    )
    .await;
    let gone_hits = Arc::new(AtomicUsize::new(0));
    let counted = gone_hits.clone();
    let gone = Fake::start(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::NOT_FOUND, "no_service") }
    }))
    .await;
    let down = closed_port().await;
    let port = free_port();
    let config = format!(
        r#"
[server]
api_listen = "127.0.0.1:{port}"

[api]
rate_limit = 0
keys = [{{ name = "ops", key = "{ADMIN}", role = "admin" }}]

[alerting]
interval = "1s"
group_wait = "1s"
default_rules = false

[[check]]
name = "web"
plugin = "http"
interval = "1s"
target = "http://{down}/"

[[rule]]
name = "web_down"
plugin = "health"
channels = ["webhook", "slack"]

[[channel]]
name = "proxied"
kind = "webhook"
url = "http://receiver.invalid/alerts"

[[channel]]
name = "tunnelled"
kind = "webhook"
url = "{tls}/alerts"
ca_file = "ca.pem"

[[channel]]
name = "direct"
kind = "webhook"
url = "{direct_url}"

[[channel]]
name = "deleted"
kind = "slack"
url = "{gone}/services/T000/B000/{SLACK_TOKEN}"
max_attempts = 5
"#,
        tls = tls_receiver.url(),
        gone = gone.url(),
    );
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("ca.pem"), &ca.pem).unwrap();
    let mut command = selfmon_command(&workdir);
    command.env("HTTP_PROXY", &proxy.url).env("HTTPS_PROXY", &proxy.url).env("NO_PROXY", "127.0.0.1");
    let (mut child, url) = serve_command(command, port).await;

    behind_proxy.wait_for("web", &["firing"]).await;
    direct.wait_for("web", &["firing"]).await;
    eventually("the message through the tunnel", async || (tunnelled.load(Ordering::SeqCst) > 0).then_some(())).await;
    let seen = proxy.seen();
    let tls_port = tls_receiver.addr.port();
    assert!(seen.contains(&"POST http://receiver.invalid/alerts HTTP/1.1".to_string()), "{seen:?}");
    assert!(seen.contains(&format!("CONNECT localhost:{tls_port} HTTP/1.1")), "{seen:?}");
    let direct_port = direct_url.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    assert!(
        !seen.iter().any(|line| line.contains(&direct_port)),
        "NO_PROXY's receiver went through the proxy: {seen:?}"
    );

    // The 404 ended the delivery at its first attempt.
    let attempts = eventually("the deleted webhook's attempt on record", async || {
        let (_, page) = get_json_with_key(&format!("{url}/v1/alerts/notifications?limit=100"), ADMIN).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let of: Vec<Value> = items.into_iter().filter(|a| a["channel"] == "deleted").collect();
        (!of.is_empty()).then_some(of)
    })
    .await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!((attempts[0]["outcome"].as_str(), attempts[0]["status_code"].as_u64()), (Some("gave_up"), Some(404)));
    // A retry would have come within a second (the first wait is drawn from 0.5-1 s).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(gone_hits.load(Ordering::SeqCst), 1);
    let text = attempts[0]["error"].as_str().expect("a given-up attempt says why");
    assert!(text.contains("404") && !text.contains(SLACK_TOKEN), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}
