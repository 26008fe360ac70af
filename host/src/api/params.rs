//! What handlers read from a request (query parameters, a JSON body, a path segment, times, labels, pages), each
//! with a clear 400 that names what is wrong; and the admin-only gate of the areas that need it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::AppState;
use crate::api::access::Caller;
use crate::api::error::ApiError;

/// Query parameters, with a clear 400 when they do not parse.
pub fn params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(params)| params).map_err(|e| {
        let text = e.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("query parameters: {text}"))
    })
}

/// `check=web,plugin=http` as label pairs.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => Err(format!("`labels`: `{pair}` is not name=value")),
        })
        .collect()
}

/// RFC 3339 (`2026-11-26T10:00:00Z`) or Unix seconds (`1795730000`, `1795730000.5`).
pub fn parse_time(what: &str, text: &str) -> Result<SystemTime, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds < 0.0 {
            return Err(format!("`{what}` must not be negative"));
        }
        return Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since))
            .ok_or_else(|| format!("`{what}` is out of range"));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| format!("`{what}`: `{text}` is neither RFC 3339 nor Unix seconds"))
}

/// `60` (seconds), or a duration such as `1m`.
pub fn parse_step(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(text))
        .map_err(|_| format!("`step`: `{text}` is neither seconds nor a duration such as \"1m\""))
}

/// A JSON body, with a clear 400 (or 415 without the JSON content type) when it does not parse.
pub fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(body)| body).map_err(|rejection| match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        // Valid JSON of the wrong shape (a field of the wrong type, an unknown field) is the caller's mistake in
        // the body, like a failed validation.
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            let text = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&text);
            ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body: {text}"))
        }
        other => {
            let text = other.body_text();
            let text = text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(&text);
            ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("the body is not JSON: {text}"))
        }
    })
}

pub fn path<T>(path: Result<Path<T>, PathRejection>, what: &str) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", format!("{what} in the path is not valid")))
}

/// Webhooks carry URLs that may hold tokens: only admin keys see or follow them.
pub fn admin_only(state: &AppState, caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    state.access.refused_inside("forbidden", caller.name.as_deref(), what);
    Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this needs a key with the admin role"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items to skip (default 0) and to return (default 100, at most 1000).
    pub offset: Option<u64>,
    pub limit: Option<u64>,
}

impl PageParams {
    pub fn offset_limit(&self) -> (u64, u64) {
        // Past the end is an empty page; beyond what a signed 64-bit number holds is the same.
        (self.offset.unwrap_or(0).min(i64::MAX.unsigned_abs()), self.limit.unwrap_or(100).clamp(1, 1000))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    /// Seconds back from now (default 3600, at most a week).
    pub time_window: Option<u64>,
}

impl WindowParams {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.time_window.unwrap_or(3600))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoursParams {
    /// Hours back from now (default 24, at most 2160).
    pub hours: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_labels("check=web,plugin=http").unwrap(),
            [("check".into(), "web".into()), ("plugin".into(), "http".into())]
        );
        assert_eq!(parse_labels("check").unwrap_err(), "`labels`: `check` is not name=value");
        assert_eq!(parse_time("from", "60").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(parse_time("from", "1970-01-01T00:01:00Z").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        assert!(parse_time("to", "yesterday").unwrap_err().contains("neither RFC 3339 nor Unix seconds"));
        assert!(parse_time("to", "-5").is_err());
        assert_eq!(parse_time("to", "1e300").unwrap_err(), "`to` is out of range");
        assert_eq!(parse_time("to", "NaN").unwrap_err(), "`to` is out of range");
        assert_eq!(parse_step("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_step("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_step("often").is_err());
    }
}
