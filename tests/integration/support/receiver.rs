//! A webhook receiver of alert notifications (Alertmanager's webhook payload), which can hold its first messages
//! unanswered, as a receiver does when the sender dies in the middle of a delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::Value;

#[derive(Clone, Default)]
pub struct AlertReceiver {
    /// The messages answered 2xx, in the order they came: what the sender knows was delivered.
    answered: Arc<Mutex<Vec<Value>>>,
    /// Every message that arrived, answered or not.
    arrived: Arc<AtomicUsize>,
}

impl AlertReceiver {
    /// A receiver on loopback that never answers its first `held` messages (their handlers wait until the test
    /// ends, or until the sender's connection is gone), and its URL.
    pub async fn start(held: usize) -> (Self, String) {
        let receiver = Self::default();
        let keep = receiver.clone();
        let app = Router::new().route(
            "/alerts",
            post(move |axum::Json(body): axum::Json<Value>| {
                let keep = keep.clone();
                async move {
                    if keep.arrived.fetch_add(1, Ordering::SeqCst) < held {
                        std::future::pending::<()>().await;
                    }
                    keep.answered.lock().unwrap().push(body);
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    /// The statuses of the answered messages about `check`, in the order they came.
    pub fn statuses(&self, check: &str) -> Vec<String> {
        let answered = self.answered.lock().unwrap();
        let about = |message: &&Value| {
            message["alerts"].as_array().into_iter().flatten().any(|a| a["labels"]["check"] == check)
        };
        answered
            .iter()
            .filter(about)
            .map(|message| message["status"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Wait until the answered messages about `check` have exactly `statuses`, in order.
    pub async fn wait_for(&self, check: &str, statuses: &[&str]) {
        let what = format!("messages {statuses:?} about {check}");
        super::within(super::PATIENCE, &what, async || (self.statuses(check) == statuses).then_some(())).await;
    }

    /// How many messages arrived, answered or not.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}
