//! Delivering a POST to a receiver: attempt after attempt with back-off until one gets a 2xx, each attempt
//! recorded in one shape ([`Attempt`]). Webhook subscriptions and alert channels both deliver this way; what they
//! send, how they log and where they store an attempt is theirs ([`Receiver`]).
//!
//! An attempt has [`ATTEMPT_TIMEOUT`] to be answered. Only what may succeed later is tried again: no answer, a
//! 429 or a 5xx (a 4xx other than 429 says the request itself is wrong, a redirect is not followed, and an address
//! the client may not reach stays so). The wait
//! before a retry starts at one second and doubles, up to a minute, each drawn between half and all of it so that
//! many senders do not come back at once; unless the receiver asked for another (`Retry-After` in seconds or as a
//! date, or Telegram's `parameters.retry_after`).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::config::Secret;
use crate::events::outgoing::{Client, Request, Why};
use crate::runtime::truncate;
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

/// Why an attempt did not get a 2xx: the status (none without an answer), what to say, how long the receiver
/// asked to wait, and whether another attempt may succeed.
#[derive(Debug)]
pub struct Failure {
    pub code: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub retry: bool,
}

impl Failure {
    /// A failure worth another attempt.
    pub fn new(code: Option<u16>, message: String) -> Self {
        Self { code, message, retry_after: None, retry: true }
    }

    /// A failure another attempt would repeat: the receiver refused the request itself.
    pub fn permanent(code: Option<u16>, message: String) -> Self {
        Self { retry: false, ..Self::new(code, message) }
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
        let (status_code, error, retry_after, retry) = match result {
            Ok(code) => (code, None, None, false),
            Err(failure) => (failure.code, Some(failure.message), failure.retry_after, failure.retry),
        };
        let last = number == max_attempts || !retry;
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
        tokio::time::sleep(retry_after.unwrap_or_else(|| jittered(wait)).min(MAX_RETRY_WAIT)).await;
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
    false
}

/// A wait drawn between half of `wait` and all of it.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// One POST of JSON through `client`: the status of a 2xx answer, or why there is none (with the start of the
/// receiver's answer, of which 16 KiB at most are read).
pub async fn post(client: &Client, url: &str, headers: &[(String, Secret)], body: &Bytes) -> Result<u16, Failure> {
    let request = Request {
        method: http::Method::POST,
        url,
        headers,
        body: Some(("application/json", body.clone())),
        timeout: ATTEMPT_TIMEOUT,
        keep: ANSWER_BYTES,
    };
    let answer = client.send(request).await.map_err(|no| match no.why {
        Why::Refused => Failure::permanent(None, no.message),
        Why::TimedOut | Why::Failed => Failure::new(None, no.message),
    })?;
    let status = answer.status;
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let text = String::from_utf8_lossy(&answer.body);
    // Telegram says how long to wait in the body: `{"parameters": {"retry_after": 5}}`.
    let retry_after = answer.retry_after.or_else(|| {
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        let seconds = body["parameters"]["retry_after"].as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
        Some(Duration::from_secs_f64(seconds.min(MAX_RETRY_WAIT.as_secs_f64())))
    });
    let text = truncate(text.trim(), 200);
    let message =
        if text.is_empty() { format!("answered HTTP {status}") } else { format!("answered HTTP {status}: {text}") };
    Err(Failure { code: Some(status), message, retry_after, retry: status == 429 || status >= 500 })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::response::IntoResponse;

    use super::*;
    use crate::runtime::{Reach, TlsConfig};

    /// One URL delivered to, its attempts kept.
    struct Recorded<'a> {
        client: &'a Client,
        url: String,
        attempts: Mutex<Vec<(u32, Option<u16>, String)>>,
    }

    impl Receiver for Recorded<'_> {
        async fn send(&self) -> Result<Option<u16>, Failure> {
            post(self.client, &self.url, &[], &Bytes::from_static(b"{}")).await.map(Some)
        }

        async fn record(&self, attempt: &Attempt) -> bool {
            self.attempts.lock().unwrap().push((attempt.attempt, attempt.status_code, attempt.outcome.clone()));
            true
        }
    }

    /// A receiver on loopback whose answer depends on the path and on how often it was asked: `/gone` is a 404,
    /// `/busy` a 503 with `Retry-After` as a date then a 200, `/limited` a 429 with `Retry-After: 0` then a 204,
    /// `/broken` always a 500. Its base URL and its hits by path.
    async fn receiver() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
        let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri| {
            let path = uri.path().to_string();
            let seen = {
                let mut hits = counted.lock().unwrap();
                let seen = hits.entry(path.clone()).or_default();
                *seen += 1;
                *seen
            };
            async move {
                let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(1));
                match (path.as_str(), seen) {
                    ("/gone", _) => (http::StatusCode::NOT_FOUND, "no such hook").into_response(),
                    ("/busy", 1) => (http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", date)]).into_response(),
                    ("/limited", 1) => (http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response(),
                    ("/broken", _) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    ("/limited", _) => http::StatusCode::NO_CONTENT.into_response(),
                    _ => http::StatusCode::OK.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, hits)
    }

    #[tokio::test]
    async fn only_429_5xx_and_no_answer_are_tried_again() {
        let (base, hits) = receiver().await;
        let client = Client::new(&TlsConfig::system(), Reach::Anywhere).unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        type Expected = &'static [(u32, Option<u16>, &'static str)];
        let cases: [(String, bool, Expected); 5] = [
            (format!("{base}/gone"), false, &[(1, Some(404), "gave_up")]),
            (format!("{base}/busy"), true, &[(1, Some(503), "failed"), (2, Some(200), "delivered")]),
            (format!("{base}/limited"), true, &[(1, Some(429), "failed"), (2, Some(204), "delivered")]),
            (format!("{base}/broken"), false, &[(1, Some(500), "failed"), (2, Some(500), "gave_up")]),
            (format!("http://{closed}/"), false, &[(1, None, "failed"), (2, None, "gave_up")]),
        ];
        for (url, delivered, expected) in cases {
            let receiver = Recorded { client: &client, url: url.clone(), attempts: Mutex::default() };
            assert_eq!(deliver(&receiver, 2).await, delivered, "{url}");
            let attempts = receiver.attempts.into_inner().unwrap();
            let expected: Vec<_> = expected.iter().map(|(n, code, outcome)| (*n, *code, outcome.to_string())).collect();
            assert_eq!(attempts, expected, "{url}");
        }
        let hits = hits.lock().unwrap();
        assert_eq!((hits["/gone"], hits["/busy"], hits["/limited"], hits["/broken"]), (1, 2, 2, 2));
    }

    #[test]
    fn waits_are_drawn_between_half_and_all() {
        let waits: Vec<Duration> = (0..200).map(|_| jittered(Duration::from_secs(8))).collect();
        assert!(waits.iter().all(|w| (Duration::from_secs(4)..=Duration::from_secs(8)).contains(w)));
        assert!(waits.iter().any(|w| *w < Duration::from_secs(6)) && waits.iter().any(|w| *w > Duration::from_secs(6)));
    }
}
