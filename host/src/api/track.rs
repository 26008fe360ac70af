//! The API layer that counts and times every request, and makes it a span of selfmon's own log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::ops::journal;
use crate::ops::telemetry::Telemetry;

/// API requests slower than this are performance log records.
const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// The API layer that counts and times every request by its route pattern (`unmatched` for unknown paths, so a
/// scan of random URLs cannot grow the label set). Each request is a span of selfmon's own log, with the caller's
/// trace (W3C `traceparent`) and correlation id (`X-Correlation-ID` or `X-Request-ID`, else a new one, sent back
/// as `X-Correlation-ID`).
pub async fn track(State(telemetry): State<Arc<Telemetry>>, request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let (trace_id, correlation_id) = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let correlation_id = header("x-correlation-id")
            .or_else(|| header("x-request-id"))
            .and_then(journal::correlation_id)
            .unwrap_or_else(|| journal::random_id(16));
        (header("traceparent").and_then(journal::traceparent), correlation_id)
    };
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        trace_id = trace_id.as_deref(),
        correlation_id = %correlation_id,
    );
    let started = std::time::Instant::now();
    let mut response = measure(&telemetry, request, next).instrument(span.clone()).await;
    let took = started.elapsed();
    if took >= SLOW_REQUEST {
        span.in_scope(|| {
            tracing::warn!(
                target: journal::PERFORMANCE,
                operation = "slow_operations",
                status = response.status().as_u16(),
                duration_ms = took.as_secs_f64() * 1000.0,
                "Slow API request"
            );
        });
    }
    if let Ok(value) = axum::http::HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

async fn measure(telemetry: &Telemetry, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    telemetry.observe_request(&route, method, response.status().as_str(), started.elapsed());
    response
}
