//! Outgoing webhooks over real HTTP: a subscription made through the API, a health change delivered to a receiver
//! that fails twice and then accepts, every attempt signed (verified here with the subscription's secret) and in
//! the delivery log.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{ENGINES, Engine, PATIENCE, Selfmon, Workdir, get_json_with_key};

const ADMIN: &str = "admin-key-0123456789";
const SECRET: &str = "webhook-secret-0123456789";

/// A receiver that answers 500 to its first two deliveries and 200 after.
#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<(HeaderMap, String)>>,
}

async fn start_receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let state = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut received = state.received.lock().unwrap();
                received.push((headers, body));
                if received.len() <= 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_health_change_is_delivered_signed_and_retried_after_the_receiver_fails_twice() {
    for engine in ENGINES {
        eprintln!("on {engine:?}");
        a_health_change_is_delivered_signed_and_retried_after_the_receiver_fails_twice_on(engine).await;
    }
}

async fn a_health_change_is_delivered_signed_and_retried_after_the_receiver_fails_twice_on(engine: Engine) {
    let (up, service_url) = crate::support::switchable_service().await;
    let (receiver, hook_url) = start_receiver().await;

    let config = format!(
        "[api]\nrate_limit = 0\nkeys = [{{ name = \"ops\", key = \"{ADMIN}\", role = \"admin\" }}]\n\n\
         [webhooks]\nallow_networks = [\"127.0.0.1\"]\n\n\
         [[check]]\nname = \"bot\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{service_url}\"\n"
    );
    let workdir = Workdir::on(engine, &config, &[]);
    let mut selfmon = Selfmon::start(&workdir).await;
    selfmon.key = Some(ADMIN.into());
    selfmon.wait_for("bot", "healthy", |s| s["status"] == "healthy").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", selfmon.url);

    let invalid = client
        .post(url("/v1/webhooks"))
        .bearer_auth(ADMIN)
        .json(&json!({"url": "not a url", "events": ["deploy"], "secret": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(invalid.json::<Value>().await.unwrap()["error"]["details"].as_array().unwrap().len(), 3);

    let created = client
        .post(url("/v1/webhooks"))
        .bearer_auth(ADMIN)
        .json(&json!({"url": hook_url, "events": ["health.changed"], "secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = created.text().await.unwrap();
    assert!(!created.contains(SECRET), "the secret is never shown: {created}");
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"].as_i64().unwrap();
    let (_, listed) = get_json_with_key(&url("/v1/webhooks"), ADMIN).await;
    assert_eq!(listed["webhooks"][0]["events"], json!(["health.changed"]));
    assert!(!listed.to_string().contains(SECRET));

    up.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while receiver.received.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "three delivery attempts did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let received = receiver.received.lock().unwrap().clone();
    let delivery_id = received[0].0["x-selfmon-delivery"].clone();
    for (headers, body) in &received {
        assert_eq!(headers["x-selfmon-event"], "health.changed");
        assert_eq!(headers["x-selfmon-delivery"], delivery_id, "retries carry the same delivery id");
        assert_eq!(headers["content-type"], "application/json");
        let timestamp = headers["x-selfmon-timestamp"].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(headers["x-selfmon-signature"].to_str().unwrap(), format!("sha256={expected}"));
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["event"], "health.changed");
        assert_eq!((event["data"]["check"].as_str(), event["data"]["from"].as_str()), (Some("bot"), Some("healthy")));
        assert_eq!(event["data"]["to"], "unhealthy");
    }

    // The log has every attempt, newest first, once the last one is written.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let log = loop {
        let (status, log) = get_json_with_key(&url(&format!("/v1/webhooks/{id}/deliveries")), ADMIN).await;
        assert_eq!(status, 200, "{log}");
        if log["total"] == 3 {
            break log;
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery log never had three attempts: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts: Vec<(u64, &str, u64)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["attempt"].as_u64().unwrap(), d["outcome"].as_str().unwrap(), d["status_code"].as_u64().unwrap()))
        .collect();
    assert_eq!(attempts, [(3, "delivered", 204), (2, "failed", 500), (1, "failed", 500)]);
    assert_eq!(log["items"][1]["error"], "answered HTTP 500");

    let deleted = client.delete(url(&format!("/v1/webhooks/{id}"))).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, _) = get_json_with_key(&url(&format!("/v1/webhooks/{id}/deliveries")), ADMIN).await;
    assert_eq!(status, 404);
    selfmon.stop().await;
}
