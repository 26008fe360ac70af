//! OTLP/HTTP in the API: an OTLP log export posted to `/v1/logs` taken in (decoded in
//! [`traces::otlp`](crate::traces::otlp), counted, stored on the log ingest path), and every OTLP answer sent back as
//! the exporters expect it: the bodies `traces::otlp` encodes, refusals as a `google.rpc.Status`, `Retry-After` when
//! the client should come back.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::error::QueryError;
use crate::api::intake::{self, Admission, JsonShape};
use crate::traces::measure::Export;
use crate::traces::otlp::{self, Format, Refusal};

/// A retryable OTLP answer for a query error; the details of a storage failure stay in the log.
pub fn unavailable(error: QueryError) -> Refusal {
    let message = match error {
        QueryError::Storage(detail) => {
            tracing::error!(detail, "An OTLP export could not be stored");
            "selfmon could not store the export; retry later".to_string()
        }
        // OTLP exporters retry 503, not 507.
        other => other.to_string(),
    };
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// An OTLP log export (decompressed already), answered as OTLP answers.
pub async fn logs(state: &AppState, admission: &mut Admission, format: Format, body: &[u8]) -> Response {
    if let Err(refusal) = admit_export(state, admission, Export::Logs, format, body).await {
        return refused(refusal, format);
    }
    let taken = match otlp::receive_logs(format, body, state.traces.max_attributes) {
        Ok(taken) => taken,
        Err(refusal) => return refused(refusal, format),
    };
    state.telemetry.observe_otlp("logs", taken.items.len(), taken.rejected);
    let message = taken.message();
    match state.ingest_records(admission, taken.items).await {
        Ok(()) => answer(format, otlp::logs_answer(format, taken.rejected, message)),
        Err(error) => refused(unavailable(error), format),
    }
}

/// Hold room for what an export will take once decoded, besides its body: measured from a protobuf body (whose
/// items are counted against `[ingest] max_items`), estimated from a JSON body's tokens.
pub async fn admit_export(
    state: &AppState,
    admission: &mut Admission,
    export: Export,
    format: Format,
    body: &[u8],
) -> Result<(), Refusal> {
    let decoded = match format {
        Format::Protobuf => {
            let measure = otlp::estimate(export, body)?;
            if measure.items > state.ingest.max_items {
                let what = if export == Export::Traces { "spans" } else { "log records" };
                return Err(intake::too_many(what, state.ingest.max_items));
            }
            measure.bytes
        }
        Format::Json => intake::decoded(body.len(), JsonShape::of(body), otlp::JSON_TOKEN, 0),
    };
    admission.add(decoded).await
}

/// A `200` with `body` in the request's encoding.
pub fn answer(format: Format, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// A refusal in the request's encoding: a `google.rpc.Status`, with `Retry-After` when the client should come back.
pub fn refused(refusal: Refusal, format: Format) -> Response {
    let body = refusal.body(format);
    let mut response = (refusal.status, [(header::CONTENT_TYPE, format.content_type())], body).into_response();
    if matches!(refusal.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}
