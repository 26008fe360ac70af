//! Delivering a POST to a receiver: attempt after attempt with back-off until one gets a 2xx, each attempt
//! recorded in one shape ([`Attempt`]). Webhook subscriptions and alert channels both deliver this way; what they
//! send, how they log and where they store an attempt is theirs ([`Receiver`]).
//!
//! An attempt has [`ATTEMPT_TIMEOUT`] to be answered. The wait before a retry starts at one second and doubles, up
//! to a minute, unless the receiver asked for another (`Retry-After` in seconds, or Telegram's
//! `parameters.retry_after`).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Serialize;

use crate::config::Secret;
use crate::runtime::{Reach, Timeouts, TlsConfig, read_start, send, truncate};
use crate::storage::time::serialize_rfc3339;

/// How long one attempt may take, connection to the end of the answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before the first retry; it doubles after each, up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// How much of a receiver's answer is read: enough for an error message or Telegram's `retry_after`.
const ANSWER_BYTES: usize = 16 * 1024;

/// One attempt to deliver, as stored and served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct Attempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// RFC 3339.
    #[serde(serialize_with = "serialize_rfc3339")]
    #[schema(value_type = String)]
    pub at: SystemTime,
    pub status_code: Option<u16>,
    /// `delivered`, `failed` (retried later) or `gave_up` (the last attempt failed).
    pub outcome: String,
    /// Why it failed, secrets removed.
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// Why an attempt did not get a 2xx: the status (none without an answer), what to say, and how long the receiver
/// asked to wait.
#[derive(Debug)]
pub struct Failure {
    pub code: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(code: Option<u16>, message: String) -> Self {
        Self { code, message, retry_after: None }
    }
}

/// Where deliveries go, and what becomes of each attempt.
pub trait Receiver: Sync {
    /// Whether the next attempt is still wanted (a subscription deleted meanwhile gets nothing more).
    fn wanted(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// One attempt: the status of a 2xx answer (none where the transport has no status), or why it failed.
    fn send(&self) -> impl Future<Output = Result<Option<u16>, Failure>> + Send;

    /// Log and store an attempt; whether to go on after a failed one.
    fn record(&self, attempt: &Attempt) -> impl Future<Output = bool> + Send;
}

/// Deliver to `receiver`, in at most `max_attempts` attempts: whether one of them got a 2xx.
pub async fn deliver(receiver: &impl Receiver, max_attempts: u32) -> bool {
    let mut wait = FIRST_RETRY;
    for number in 1..=max_attempts {
        if !receiver.wanted().await {
            return false;
        }
        let started = Instant::now();
        let at = SystemTime::now();
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, receiver.send()).await.unwrap_or_else(|_| {
            Err(Failure::new(None, format!("no answer within {}", humantime::format_duration(ATTEMPT_TIMEOUT))))
        });
        let (status_code, error, retry_after) = match result {
            Ok(code) => (code, None, None),
            Err(failure) => (failure.code, Some(failure.message), failure.retry_after),
        };
        let last = number == max_attempts;
        let outcome = match (&error, last) {
            (None, _) => "delivered",
            (Some(_), true) => "gave_up",
            (Some(_), false) => "failed",
        };
        let delivered = error.is_none();
        let attempt = Attempt {
            attempt: number,
            at,
            status_code,
            outcome: outcome.into(),
            error,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        if !receiver.record(&attempt).await || delivered || last {
            return delivered;
        }
        tokio::time::sleep(retry_after.unwrap_or(wait).min(MAX_RETRY_WAIT)).await;
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
    false
}

/// One POST of JSON to an address `reach` allows: the status of a 2xx answer, or why there is none (with the start
/// of the receiver's answer, of which 16 KiB at most are read).
pub async fn post(
    url: &str,
    headers: &[(String, Secret)],
    body: &Bytes,
    tls: &TlsConfig,
    reach: &Reach,
) -> Result<u16, Failure> {
    let full = http_body_util::Full::new(body.clone()).map_err(|never| match never {}).boxed_unsync();
    let mut request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("selfmon/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.expose());
    }
    let request = request.body(full).map_err(|e| Failure::new(None, format!("invalid request: {e}")))?;
    let timeouts = Timeouts { connect: ATTEMPT_TIMEOUT, first_byte: ATTEMPT_TIMEOUT, between_bytes: ATTEMPT_TIMEOUT };
    let (response, io) = send(request, timeouts, tls, reach).await.map_err(|e| match e {
        wasmtime_wasi_http::Error::DestinationIpProhibited => Failure::new(
            None,
            "refused: the receiver's address is not public, and `[webhooks] allow_networks` does not include it".into(),
        ),
        e => Failure::new(None, format!("request failed: {e}")),
    })?;
    tokio::spawn(io);
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let text = tokio::time::timeout(Duration::from_secs(2), read_start(response.into_body(), ANSWER_BYTES))
        .await
        .map(|start| String::from_utf8_lossy(&start).into_owned())
        .unwrap_or_default();
    // Telegram says how long to wait in the body: `{"parameters": {"retry_after": 5}}`.
    let retry_after = retry_after.or_else(|| {
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        body["parameters"]["retry_after"].as_f64().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
    });
    let text = truncate(text.trim(), 200);
    let message =
        if text.is_empty() { format!("answered HTTP {status}") } else { format!("answered HTTP {status}: {text}") };
    Err(Failure { code: Some(status), message, retry_after })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A receiver on loopback answering every POST with a 500 and a body of 640 MiB; its URL and its hits.
    async fn endless_receiver() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let chunks = (0..10_000).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 64 * 1024])));
                let body = axum::body::Body::from_stream(tokio_stream::iter(chunks));
                async move { (http::StatusCode::INTERNAL_SERVER_ERROR, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, hits)
    }

    #[tokio::test]
    async fn only_the_start_of_an_answer_is_read() {
        let (url, _) = endless_receiver().await;
        let failure =
            post(&url, &[], &Bytes::from_static(b"{}"), &TlsConfig::system(), &Reach::Anywhere).await.unwrap_err();
        assert_eq!(failure.code, Some(500));
        assert!(failure.message.starts_with("answered HTTP 500: xxxx"), "{}", &failure.message[..40]);
        // Reading it all would hit the 2 s read limit and show nothing of it.
        assert!(failure.message.len() < 300, "the message holds the start only");
    }

    #[tokio::test]
    async fn a_refused_address_is_never_connected_to() {
        let (url, hits) = endless_receiver().await;
        let public_only = Reach::Public(Arc::from(Vec::new()));
        let failure =
            post(&url, &[], &Bytes::from_static(b"{}"), &TlsConfig::system(), &public_only).await.unwrap_err();
        assert_eq!(failure.code, None);
        assert!(failure.message.contains("[webhooks] allow_networks"), "{}", failure.message);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let allowed = Reach::Public(Arc::from(vec!["127.0.0.0/8".parse().unwrap()]));
        assert_eq!(post(&url, &[], &Bytes::new(), &TlsConfig::system(), &allowed).await.unwrap_err().code, Some(500));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
