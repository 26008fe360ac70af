//! The live dashboard on the dashboard port: one page and its assets, embedded in the binary; the API under `/api`
//! for the page's own calls; a WebSocket fed by the [event bus](crate::events) and the log tail (see `socket`).
//!
//! With `[api] keys`, the page asks for a key once and keeps a session in a cookie: `HttpOnly` (scripts cannot read
//! it), `SameSite=Strict` (other sites cannot send it) and `Secure` (see [`SecureCookie`]). The cookie names the key
//! and carries an expiry, signed with HMAC-SHA256 under a key kept beside the database (`dashboard.key`) and bound
//! to the API key's digest, with a random id of its own: sessions outlive a restart, and end when they expire, on
//! signing out (kept in `dashboard.revoked` until they would have expired) or when the key is changed or removed.
//! The key itself is never stored, sent back or rendered.
//!
//! A request that carries an `Origin` must come from the dashboard's own page (its `Host`, or `[dashboard]
//! public_url`); without keys, `Host` must be an address, `localhost` or the public URL's host, so that a page of
//! another site whose name is pointed at this machine is refused.

mod socket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::access::{Access, Session, ViaDashboard};
use crate::api::error::ApiError;
use crate::api::origin::{host, host_name, local, public_origin, same_origin};
use crate::api::query::Queries;
use crate::config::{DashboardConfig, Role, Secret, SecureCookie};
use crate::storage::kept_key;

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

/// Signed-out sessions remembered at most; the oldest are forgotten first.
const MAX_REVOKED: usize = 10_000;

/// What signs the dashboard's sessions, made before anything starts (only with `[api] keys`).
pub struct Sessions {
    signer: Secret,
    /// Where signed-out sessions are kept.
    revoked_file: PathBuf,
}

impl Sessions {
    /// The signing key kept in `dir` (made on first use) and the signed-out sessions kept beside it.
    pub fn open(dir: &std::path::Path) -> Result<Self, String> {
        let signer = kept_key(&dir.join("dashboard.key"), "signs dashboard sessions")?;
        Ok(Self { signer, revoked_file: dir.join("dashboard.revoked") })
    }
}

/// What the dashboard's handlers share.
pub struct Dashboard {
    queries: Arc<Queries>,
    access: Arc<Access>,
    sessions: Option<Sessions>,
    lifetime: Duration,
    secure: SecureCookie,
    /// `[dashboard] public_url`: its origin (`https://monitor.example.com`) and host.
    public: Option<(String, String)>,
    /// Sessions signed out before they expire: (signature, expiry in seconds since the epoch), oldest first.
    revoked: Mutex<Vec<(String, u64)>>,
    sockets: Arc<tokio::sync::Semaphore>,
}

/// The dashboard's routes; `api` is the API's router, served under `/api` to the page's session.
pub fn app(
    queries: Arc<Queries>,
    access: Arc<Access>,
    api: Router,
    config: &DashboardConfig,
    sessions: Option<Sessions>,
    https: bool,
) -> Router {
    let revoked = sessions.as_ref().map(|s| read_revoked(&s.revoked_file)).unwrap_or_default();
    let state = Arc::new(Dashboard {
        queries,
        access,
        sessions,
        lifetime: config.session_lifetime,
        secure: if https { SecureCookie::Always } else { config.secure_cookie },
        public: config.public_url.as_deref().and_then(public_origin),
        revoked: Mutex::new(revoked),
        sockets: Arc::new(tokio::sync::Semaphore::new(socket::MAX_SOCKETS)),
    });
    let api = api.layer(middleware::from_fn_with_state(state.clone(), with_session));
    // The page and its scripts travel gzipped to browsers that take it (about a third of their size).
    let page = Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .layer(tower_http::compression::CompressionLayer::new());
    Router::new()
        .merge(page)
        .route("/health", get(liveness))
        .route("/session", get(session).post(sign_in).delete(sign_out))
        .route("/ws", get(socket::upgrade))
        .nest_service("/api", api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        .layer(middleware::from_fn_with_state(state.clone(), same_site_only))
        .with_state(state)
        .layer(middleware::map_response(move |mut response: Response| async move {
            let headers = response.headers_mut();
            if https {
                // Browsers that have been here once come back over HTTPS only, for a year.
                headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
            }
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
    // Sign-ins have a rate of their own: guessing keys here does not use up anyone's API calls.
    if let Some(limited) = dashboard.access.over_limit(&format!("sign-in {}", address.ip())) {
        return limited;
    }
    // The rejection's own text could quote the body, which is a key.
    let Ok(Json(SignIn { key })) = body else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "send {\"key\": \"…\"} as JSON").into_response();
    };
    let Some(sessions) = &dashboard.sessions else {
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
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no randomness for a session id")
            .into_response();
    }
    let token = Token { name, expires: now_seconds().saturating_add(dashboard.lifetime.as_secs()), nonce: hex(&nonce) };
    let value = format!(
        "{}.{}.{}.{}",
        hex(token.name.as_bytes()),
        token.expires,
        token.nonce,
        token.signature(&sessions.signer, &digest)
    );
    tracing::info!(target: "selfmon::security", key = %token.name, remote = %address.ip(), "Dashboard sign-in");
    let mut response = Json(serde_json::json!({"name": token.name, "role": role})).into_response();
    dashboard.set_cookie(&mut response, &headers, value, dashboard.lifetime);
    response
}

/// `DELETE /session`: sign out; the cookie is cleared and its session refused until it would have expired.
async fn sign_out(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(value) = cookie_value(&headers)
        && dashboard.session_of(&value).is_some()
        && let Some((token, signature)) = Token::parse(&value)
        && let Some(sessions) = &dashboard.sessions
    {
        let now = now_seconds();
        let kept = {
            let mut revoked = dashboard.revoked.lock().expect("revoked lock");
            revoked.retain(|(_, until)| *until > now);
            revoked.push((signature.to_string(), token.expires));
            let over = revoked.len().saturating_sub(MAX_REVOKED);
            revoked.drain(..over);
            revoked.clone()
        };
        if let Err(error) = write_revoked(&sessions.revoked_file, &kept) {
            tracing::warn!(%error, "Cannot keep the signed-out session on disk: it is refused until selfmon restarts");
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    dashboard.set_cookie(&mut response, &headers, String::new(), Duration::ZERO);
    response
}

/// In front of the API: a valid session cookie identifies the caller, as its key would. The API's public paths
/// (`/health`, `/metrics`) are not public here, and its GraphQL socket is not served: the page's socket is `/ws`.
async fn with_session(State(dashboard): State<Arc<Dashboard>>, mut request: Request, next: Next) -> Response {
    if request.headers().contains_key(header::UPGRADE) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the dashboard's socket is /ws").into_response();
    }
    request.extensions_mut().insert(ViaDashboard);
    if let Some(session) = dashboard.session(request.headers()) {
        request.extensions_mut().insert(session);
    }
    next.run(request).await
}

/// In front of everything but `/health`: a request with an `Origin` must come from the dashboard's own page, and
/// without keys `Host` must name this dashboard.
async fn same_site_only(State(dashboard): State<Arc<Dashboard>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/health" {
        let address = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        if !dashboard.host_allowed(request.headers()) {
            let message =
                "this dashboard answers at its address or localhost; set `[dashboard] public_url` to reach it by name";
            let access = &dashboard.access;
            return access.refuse(StatusCode::MISDIRECTED_REQUEST, "unknown_host", message, address, &request);
        }
        if !dashboard.origin_allowed(request.headers()) {
            let message = "only the dashboard's own page may call it";
            return dashboard.access.refuse(StatusCode::FORBIDDEN, "cross_origin", message, address, &request);
        }
    }
    next.run(request).await
}

/// The signed-out sessions kept on disk that have not expired; a missing or unreadable file holds none.
fn read_revoked(file: &std::path::Path) -> Vec<(String, u64)> {
    let now = now_seconds();
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (signature, expires) = line.split_once(' ')?;
            Some((signature.to_string(), expires.parse().ok()?))
        })
        .filter(|(_, expires)| *expires > now)
        .collect()
}

fn write_revoked(file: &std::path::Path, revoked: &[(String, u64)]) -> std::io::Result<()> {
    let text: String = revoked.iter().map(|(signature, expires)| format!("{signature} {expires}\n")).collect();
    let partial = file.with_extension("revoked.partial");
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create(true).truncate(true), 0o600);
    std::io::Write::write_all(&mut options.open(&partial)?, text.as_bytes())?;
    std::fs::rename(partial, file)
}

impl Dashboard {
    /// The session the request's cookie carries, if it is valid now.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.session_of(&cookie_value(headers)?)
    }

    /// The session a cookie's value carries, if it is valid now.
    fn session_of(&self, value: &str) -> Option<Session> {
        let sessions = self.sessions.as_ref()?;
        let (token, presented) = Token::parse(value)?;
        if token.expires <= now_seconds() {
            return None;
        }
        let (digest, role) = self.access.named(&token.name)?;
        let expected = token.signature(&sessions.signer, &digest);
        if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            return None;
        }
        if self.revoked.lock().expect("revoked lock").iter().any(|(revoked, _)| revoked == presented) {
            return None;
        }
        (role != Role::Ingest).then_some(Session { name: token.name, role })
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        self.public.as_ref().is_some_and(|(public, _)| public.eq_ignore_ascii_case(origin))
            || same_origin(headers, origin)
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if !self.access.is_open() {
            return true;
        }
        let Some(host) = host(headers) else { return true };
        local(host)
            || self.public.as_ref().is_some_and(|(_, public)| host_name(public).eq_ignore_ascii_case(host_name(host)))
    }

    /// The session cookie with `value` for `max_age` (zero clears it), on `response`.
    fn set_cookie(&self, response: &mut Response, headers: &HeaderMap, value: String, max_age: Duration) {
        let cookie = cookie::Cookie::build((COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .secure(self.secure_cookie(headers))
            .max_age(cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)))
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
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
                let name = host_name(host);
                let loopback = name.eq_ignore_ascii_case("localhost")
                    || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
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

/// What a session cookie says: the key's name, when it expires, and a random id of its own.
struct Token {
    name: String,
    expires: u64,
    nonce: String,
}

impl Token {
    /// `NAME-HEX.EXPIRES.NONCE.SIGNATURE` into the token and its signature.
    fn parse(value: &str) -> Option<(Self, &str)> {
        let mut parts = value.splitn(4, '.');
        let name = parts.next()?;
        let expires = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let signature = parts.next()?;
        let hex_of = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(nonce, 32) || !hex_of(signature, 64) || name.len() > 512 {
            return None;
        }
        let bytes = (0..name.len())
            .step_by(2)
            .map(|i| name.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        Some((Self { name: String::from_utf8(bytes).ok()?, expires, nonce: nonce.to_string() }, signature))
    }

    /// HMAC-SHA256 of the token and the API key's digest, hex.
    fn signature(&self, signer: &Secret, digest: &[u8; 32]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(signer.expose().as_bytes()).expect("HMAC takes any key");
        mac.update(b"selfmon dashboard session\0");
        mac.update(self.name.as_bytes());
        mac.update(b"\0");
        mac.update(self.expires.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(self.nonce.as_bytes());
        mac.update(b"\0");
        mac.update(digest);
        hex(&mac.finalize().into_bytes())
    }
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
        let token = Token { name: "ops team".into(), expires: 1_900_000_000, nonce: "ab".repeat(16) };
        let signed = token.signature(&signer, &digest);
        let value = format!("{}.1900000000.{}.{signed}", hex("ops team".as_bytes()), "ab".repeat(16));
        let (parsed, presented) = Token::parse(&value).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.expires, presented), ("ops team", 1_900_000_000, signed.as_str()));
        // Another expiry, id, key digest or signer gives another signature.
        let other = |expires, nonce: &str| Token { name: "ops team".into(), expires, nonce: nonce.into() };
        assert_ne!(other(1_900_000_001, &"ab".repeat(16)).signature(&signer, &digest), signed);
        assert_ne!(other(1_900_000_000, &"cd".repeat(16)).signature(&signer, &digest), signed);
        assert_ne!(token.signature(&signer, &[8u8; 32]), signed);
        assert_ne!(token.signature(&Secret::new("j".repeat(64)), &digest), signed);
        // Malformed values, and signatures of the wrong length, are not tokens.
        let long = format!("6f70.1.{}.{}", "ab".repeat(16), "0".repeat(100_000));
        for bad in ["zz.1.x.y", "6f70", long.as_str()] {
            assert!(Token::parse(bad).is_none(), "{bad:.40}");
        }
    }

    #[test]
    fn public_urls_are_origins() {
        assert_eq!(
            public_origin("https://monitor.example.com/"),
            Some(("https://monitor.example.com".into(), "monitor.example.com".into()))
        );
        assert_eq!(host_name("monitor.example.com:8443"), "monitor.example.com");
        assert_eq!(host_name("[::1]:8000"), "::1");
        for bad in ["monitor.example.com", "ftp://x", "https://x/dashboard", "https://"] {
            assert!(public_origin(bad).is_none(), "{bad}");
        }
    }
}
