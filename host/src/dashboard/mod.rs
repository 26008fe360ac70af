//! The live dashboard on the dashboard port: one page and its assets, embedded in the binary; the API under `/api`
//! for the page's own calls; a WebSocket fed by the [event bus](crate::events) and the log tail (see [`socket`]).
//!
//! With `[api] keys`, the page asks for a key once and keeps a session in a cookie: `HttpOnly` (scripts cannot read
//! it), `SameSite=Strict` (other sites cannot send it) and `Secure` (see [`SecureCookie`]). The cookie names the key
//! and carries an expiry, signed with HMAC-SHA256 under a key kept beside the database (`dashboard.key`) and bound
//! to the API key's digest: sessions outlive a restart, and end when the key is changed or removed. The key itself
//! is never stored, sent back or rendered.

mod socket;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::{Access, Session};
use crate::api::ApiError;
use crate::config::{DashboardConfig, Role, Secret, SecureCookie};
use crate::query::Queries;

/// The session cookie's name.
const COOKIE: &str = "selfmon_session";

/// The page may load its own scripts and styles only, and talk to its own origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                                       img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                                       base-uri 'none'; form-action 'self'";

/// The page and its assets, with their content types.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("index.html", "text/html; charset=utf-8", include_bytes!("assets/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("assets/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("assets/app.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("assets/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("assets/uPlot.min.css")),
];

/// Each asset's entity tag: a digest of its bytes, so a browser revalidates cheaply and never keeps a stale page
/// after an upgrade.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, bytes)| {
            let digest = Sha256::digest(bytes);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
        })
        .collect()
});

/// What the dashboard's handlers share.
pub struct Dashboard {
    queries: Arc<Queries>,
    access: Arc<Access>,
    /// Signs session cookies; `None` when the API has no keys.
    signer: Option<Secret>,
    lifetime: Duration,
    secure: SecureCookie,
    /// Sessions signed out before they expire: (signature, expiry in seconds since the epoch).
    revoked: Mutex<Vec<(String, u64)>>,
    sockets: Arc<tokio::sync::Semaphore>,
}

/// The dashboard's routes; `api` is the API's router, served under `/api` to the page's session.
pub fn app(
    queries: Arc<Queries>,
    access: Arc<Access>,
    api: Router,
    config: &DashboardConfig,
    signer: Option<Secret>,
) -> Router {
    let state = Arc::new(Dashboard {
        queries,
        access,
        signer,
        lifetime: config.session_lifetime,
        secure: config.secure_cookie,
        revoked: Mutex::new(Vec::new()),
        sockets: Arc::new(tokio::sync::Semaphore::new(socket::MAX_SOCKETS)),
    });
    let api = api.layer(middleware::from_fn_with_state(state.clone(), with_session));
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/health", get(liveness))
        .route("/session", get(session).post(sign_in).delete(sign_out))
        .route("/ws", get(socket::upgrade))
        .nest_service("/api", api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        .with_state(state)
        .layer(middleware::map_response(|mut response: Response| async move {
            let headers = response.headers_mut();
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }))
}

async fn index(State(_): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let mut response = serve_asset(0, &headers);
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|(name, _, _)| *name == file) {
        Some(index) if index > 0 => serve_asset(index, &headers),
        _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset").into_response(),
    }
}

fn serve_asset(index: usize, headers: &HeaderMap) -> Response {
    let (_, content_type, bytes) = ASSETS[index];
    let etag = ETAGS[index].clone();
    let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|tag| *tag == etag);
    let mut response = if cached { StatusCode::NOT_MODIFIED.into_response() } else { bytes.into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, etag);
    response
}

#[derive(Serialize)]
struct Liveness {
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
}

/// `GET /health` on the dashboard port: the dashboard is up and serving.
async fn liveness(State(dashboard): State<Arc<Dashboard>>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: dashboard.queries.started.elapsed().as_secs_f64(),
    })
}

#[derive(Serialize)]
struct SessionAnswer {
    auth_required: bool,
    signed_in: bool,
    name: Option<String>,
    role: Option<Role>,
}

/// `GET /session`: whether the page must ask for a key, and whose session this is.
async fn session(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Json<SessionAnswer> {
    let session = dashboard.session(&headers);
    Json(SessionAnswer {
        auth_required: !dashboard.access.is_open(),
        signed_in: dashboard.access.is_open() || session.is_some(),
        role: session.as_ref().map(|s| s.role).or(dashboard.access.is_open().then_some(Role::Admin)),
        name: session.map(|s| s.name),
    })
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

/// `POST /session` `{"key": "…"}`: sign in with an API key (read or admin); the answer sets the session cookie.
async fn sign_in(
    State(dashboard): State<Arc<Dashboard>>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(limited) = dashboard.access.over_limit(&format!("address {}", address.ip())) {
        return limited;
    }
    let Json(SignIn { key }) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"key\": \"…\"}}: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    let Some(signer) = &dashboard.signer else {
        // Without keys there is nothing to sign in to.
        return StatusCode::NO_CONTENT.into_response();
    };
    let Some((name, role)) = dashboard.access.authenticate(key.trim()) else {
        dashboard.access.refused_sign_in(Some(address), "invalid_key");
        return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_key", "the API key is not valid").into_response();
    };
    if role == Role::Ingest {
        dashboard.access.refused_sign_in(Some(address), "ingest_key");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an ingest key only sends telemetry; sign in with a read or admin key",
        )
        .into_response();
    }
    let Some((digest, _)) = dashboard.access.named(&name) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_key", "the API key is not valid").into_response();
    };
    let expires = now_seconds() + dashboard.lifetime.as_secs();
    let token = format!("{}.{expires}.{}", hex(name.as_bytes()), signature(signer, &name, expires, &digest));
    tracing::info!(target: "selfmon::security", key = %name, remote = %address.ip(), "Dashboard sign-in");
    let cookie = cookie::Cookie::build((COOKIE, token))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(dashboard.secure_cookie(&headers))
        .max_age(cookie::time::Duration::seconds(i64::try_from(dashboard.lifetime.as_secs()).unwrap_or(i64::MAX)))
        .build();
    let mut response = Json(serde_json::json!({"name": name, "role": role})).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `DELETE /session`: sign out; the cookie is cleared and its signature refused until it would have expired.
async fn sign_out(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_value(&headers)
        && let Some((_, expires, signature)) = parse_token(&token)
    {
        let now = now_seconds();
        let mut revoked = dashboard.revoked.lock().expect("revoked lock");
        revoked.retain(|(_, until)| *until > now);
        revoked.push((signature.to_string(), expires));
    }
    let cookie = cookie::Cookie::build((COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(dashboard.secure_cookie(&headers))
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// In front of the API: a valid session cookie identifies the caller, as its key would. A change must come from
/// the dashboard's own page (its `Origin`), on top of the cookie's `SameSite`.
async fn with_session(State(dashboard): State<Arc<Dashboard>>, mut request: Request, next: Next) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && !same_origin(request.headers()) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross_origin", "changes must come from the dashboard's own page")
            .into_response();
    }
    if let Some(session) = dashboard.session(request.headers()) {
        request.extensions_mut().insert(session);
    }
    next.run(request).await
}

/// Whether a request's `Origin`, when it has one, is the dashboard's own (its `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    host.is_some() && origin_host == host
}

impl Dashboard {
    /// The session the request's cookie carries, if it is valid now.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let signer = self.signer.as_ref()?;
        let token = cookie_value(headers)?;
        let (name, expires, presented) = parse_token(&token)?;
        if expires <= now_seconds() {
            return None;
        }
        let (digest, role) = self.access.named(&name)?;
        let expected = signature(signer, &name, expires, &digest);
        if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            return None;
        }
        if self.revoked.lock().expect("revoked lock").iter().any(|(revoked, _)| revoked == presented) {
            return None;
        }
        (role != Role::Ingest).then_some(Session { name, role })
    }

    /// When the request's session ends (seconds since the epoch), for sockets that outlive a page load.
    fn session_expiry(&self, headers: &HeaderMap) -> Option<u64> {
        self.session(headers)?;
        parse_token(&cookie_value(headers)?).map(|(_, expires, _)| expires)
    }

    fn secure_cookie(&self, headers: &HeaderMap) -> bool {
        match self.secure {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => {
                let https = headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("https"));
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
                let name =
                    host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(n, _)| n);
                let loopback = name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                https || loopback
            }
        }
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// `NAME-HEX.EXPIRES.SIGNATURE` into its parts.
fn parse_token(token: &str) -> Option<(String, u64, &str)> {
    let mut parts = token.splitn(3, '.');
    let name = parts.next()?;
    let expires = parts.next()?.parse().ok()?;
    let signature = parts.next()?;
    let bytes = (0..name.len())
        .step_by(2)
        .map(|i| name.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    Some((String::from_utf8(bytes).ok()?, expires, signature))
}

fn signature(signer: &Secret, name: &str, expires: u64, digest: &[u8; 32]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(signer.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(b"selfmon dashboard session\0");
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac.update(expires.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(digest);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let signer = Secret::new("k".repeat(64));
        let digest = [7u8; 32];
        let signed = signature(&signer, "ops team", 1_900_000_000, &digest);
        let token = format!("{}.1900000000.{signed}", hex("ops team".as_bytes()));
        let (name, expires, presented) = parse_token(&token).unwrap();
        assert_eq!((name.as_str(), expires, presented), ("ops team", 1_900_000_000, signed.as_str()));
        // Another expiry, another key digest or another signer gives another signature.
        assert_ne!(signature(&signer, "ops team", 1_900_000_001, &digest), signed);
        assert_ne!(signature(&signer, "ops team", 1_900_000_000, &[8u8; 32]), signed);
        assert_ne!(signature(&Secret::new("j".repeat(64)), "ops team", 1_900_000_000, &digest), signed);
        assert!(parse_token("zz.1.sig").is_none() && parse_token("6f70").is_none());
    }

    #[test]
    fn origins_must_match_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8000"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example:8000"));
        assert!(!same_origin(&headers));
    }
}
