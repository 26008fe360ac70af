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

/// What a time parameter may look like: Unix seconds (`1795730000`, `1795730000.5`) or RFC 3339 in UTC
/// (`2026-11-26T10:00:00Z`, the `T` and `Z` optional); the OpenAPI document gives it as every such parameter's
/// pattern.
pub const TIME_PATTERN: &str = r"^([0-9]{1,12}(\.[0-9]{1,9})?|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00)?)$";

/// A time parameter (see [`TIME_PATTERN`]).
pub fn parse_time(what: &str, text: &str) -> Result<SystemTime, String> {
    static PATTERN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(TIME_PATTERN).expect("the time pattern compiles"));
    let wrong = || format!("`{what}`: `{text}` is neither RFC 3339 nor Unix seconds");
    if !PATTERN.is_match(text) {
        return Err(wrong());
    }
    if !text.contains('-') {
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        // Nine fraction digits at most, so the padded nanoseconds fit.
        let nanos = format!("{fraction:0<9}").parse::<u32>().map_err(|_| wrong())?;
        let seconds = seconds.parse::<u64>().map_err(|_| wrong())?;
        return Ok(UNIX_EPOCH + Duration::new(seconds, nanos));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| wrong())
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

/// A JSON object body, read like [`body`]: an array or a scalar is refused even where the type could be read from
/// one (serde reads a struct from an array of its fields in order).
pub fn object_body<T: serde::de::DeserializeOwned>(
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let value = body(json)?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("the body: {error}")))
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

/// `limit`: `default` without it, else 1 to `max`.
pub fn limit(limit: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(bad_query(format!("`limit` must be 1 to {max}, not {limit}"))),
    }
}

/// `offset`: 0 without it; never negative.
pub fn offset(offset: Option<i64>) -> Result<u64, ApiError> {
    u64::try_from(offset.unwrap_or(0)).map_err(|_| bad_query("`offset` must not be negative".into()))
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Items to return (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

impl PageParams {
    pub fn offset_limit(&self) -> Result<(u64, u64), ApiError> {
        Ok((offset(self.offset)?, limit(self.limit, 100, 1000)?))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    /// Seconds back from now (default 3600, at most a week).
    #[param(minimum = 1, maximum = 604800)]
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
    #[param(minimum = 1, maximum = 2160)]
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
        assert_eq!(parse_time("from", "60.25").unwrap(), UNIX_EPOCH + Duration::from_millis(60_250));
        assert_eq!(parse_time("from", "1970-01-01 00:01:00.5").unwrap(), UNIX_EPOCH + Duration::from_millis(60_500));
        assert_eq!(parse_time("from", "1970-01-01T00:01:00+00:00").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        // Whatever the pattern in the document refuses is refused: signs, exponents, other offsets, trailing text.
        for refused in ["-5", "1e300", "NaN", "inf", "", "60.", "1970-01-01T00:01:00+02:00", "1970-01-01T00:01:00Zx"] {
            assert!(parse_time("to", refused).is_err(), "`{refused}` was taken");
        }
        // What the pattern allows but the calendar does not.
        assert!(parse_time("to", "2026-02-30T00:00:00Z").is_err());
        assert_eq!(parse_step("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_step("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_step("often").is_err());
    }
}
