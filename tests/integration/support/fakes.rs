//! Local stand-ins for the SaaS APIs selfmon checks, reproducing their documented status codes, headers and JSON
//! bodies, errors included. Each picks its answer from the credential it is sent, so one server serves every
//! scenario of a test. HTTPS is served with a throwaway certificate authority ([`TestCa`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long the "slow" scenario of every fake takes to answer: longer than the checks' timeouts in the tests.
pub const SLOW: Duration = Duration::from_secs(5);

/// A fake API server on loopback.
pub struct Fake {
    pub addr: SocketAddr,
    https: bool,
}

impl Fake {
    pub async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, https: false }
    }

    /// Serve over HTTPS with a certificate for `localhost` from `ca`.
    pub async fn start_tls(app: Router, ca: &TestCa) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = TlsListener { listener, acceptor: ca.acceptor() };
        tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });
        Self { addr, https: true }
    }

    /// The base URL (with `localhost` for HTTPS, the name its certificate is for).
    pub fn url(&self) -> String {
        if self.https { format!("https://localhost:{}", self.addr.port()) } else { format!("http://{}", self.addr) }
    }
}

/// A certificate authority made for one test, and a server certificate it signed for `localhost`.
pub struct TestCa {
    pub pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
    /// The server certificate and its key, PEM.
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "selfmon test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf =
            CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
        Self {
            pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        acceptor(self.leaf.clone(), self.leaf_key.clone())
    }
}

/// A TLS server's side of the handshake, presenting `certificate` (`key`: its private key, PKCS#8 DER).
pub fn acceptor(certificate: rustls::pki_types::CertificateDer<'static>, key: Vec<u8>) -> TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.listener.accept().await else { continue };
            // A client that rejects the certificate ends the handshake; wait for the next one.
            if let Ok(stream) = self.acceptor.accept(stream).await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

fn json_response(status: u16, headers: &[(&str, &str)], body: serde_json::Value) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

fn garbage() -> Response {
    (StatusCode::OK, "<html><body>502 Bad Gateway from a proxy</body></html>").into_response()
}

/// The OpenAI API's `GET /v1/models`. The bearer key picks the answer: `sk-ok`, `sk-bad` (401), `sk-quota` (429
/// insufficient_quota), `sk-limited` (429 rate_limit_exceeded), `sk-down` (503), `sk-garbage`, `sk-slow`.
/// Bodies and headers as in <https://platform.openai.com/docs/guides/error-codes> and
/// <https://platform.openai.com/docs/guides/rate-limits>.
pub fn openai() -> Router {
    Router::new().route(
        "/v1/models",
        get(|headers: HeaderMap| async move {
            let key = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let limits = [
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-remaining-requests", "499"),
                ("x-ratelimit-reset-requests", "120ms"),
                ("x-ratelimit-limit-tokens", "30000"),
                ("x-ratelimit-remaining-tokens", "29000"),
                ("x-ratelimit-reset-tokens", "6m0s"),
                ("x-request-id", "req_8f2d"),
            ];
            let error = |status, kind: &str, code: &str, message: &str| {
                json_response(status, &limits, json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
            };
            match key.trim_start_matches("Bearer ") {
                "sk-ok" => json_response(
                    200,
                    &limits,
                    json!({"object": "list", "data": [
                        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
                        {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"}
                    ]}),
                ),
                "sk-bad" => error(
                    401,
                    "invalid_request_error",
                    "invalid_api_key",
                    "Incorrect API key provided: sk-bad***bad. You can find your API key at https://platform.openai.com/account/api-keys.",
                ),
                "sk-quota" => error(429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota, please check your plan and billing details."),
                "sk-limited" => error(429, "requests", "rate_limit_exceeded", "Rate limit reached for requests"),
                "sk-down" => error(503, "server_error", "service_unavailable", "The server is overloaded or not ready yet."),
                "sk-garbage" => garbage(),
                "sk-slow" => {
                    tokio::time::sleep(SLOW).await;
                    json_response(200, &limits, json!({"object": "list", "data": []}))
                }
                _ => error(401, "invalid_request_error", "invalid_api_key", "You didn't provide an API key."),
            }
        }),
    )
}

/// The Anthropic API's `GET /v1/models`. The `x-api-key` picks the answer: `sk-ant-ok`, `sk-ant-limited` (429
/// rate_limit_error with retry-after), `sk-ant-overloaded` (529), `sk-ant-garbage`, `sk-ant-slow`; any other key
/// is 401 authentication_error. Bodies and headers as in <https://docs.anthropic.com/en/api/errors> and
/// <https://docs.anthropic.com/en/api/rate-limits>.
pub fn anthropic() -> Router {
    Router::new().route(
        "/v1/models",
        get(|headers: HeaderMap| async move {
            if headers.get("anthropic-version").is_none() {
                return json_response(
                    400,
                    &[],
                    json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"}}),
                );
            }
            let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let reset = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60)).to_string();
            let limits = [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-requests-reset", reset.as_str()),
                ("anthropic-ratelimit-tokens-limit", "40000"),
                ("anthropic-ratelimit-tokens-remaining", "39000"),
                ("request-id", "req_018E"),
            ];
            let error = |status, kind: &str, message: &str, extra: &[(&str, &str)]| {
                let headers: Vec<_> = limits.iter().chain(extra).copied().collect();
                json_response(status, &headers, json!({"type": "error", "error": {"type": kind, "message": message}}))
            };
            match key {
                "sk-ant-ok" => json_response(
                    200,
                    &limits,
                    json!({"data": [
                        {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
                        {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5", "created_at": "2025-10-01T00:00:00Z"}
                    ], "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"}),
                ),
                "sk-ant-limited" => error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", &[("retry-after", "17")]),
                "sk-ant-overloaded" => error(529, "overloaded_error", "Overloaded", &[]),
                "sk-ant-garbage" => garbage(),
                "sk-ant-slow" => {
                    tokio::time::sleep(SLOW).await;
                    json_response(200, &limits, json!({"data": []}))
                }
                _ => error(401, "authentication_error", "invalid x-api-key", &[]),
            }
        }),
    )
}

/// The Telegram Bot API's `getMe` and `getWebhookInfo`. The token picks the answer: `1:ok`, `1:backlog` (pending
/// updates), `1:failing` (a recent webhook error), `1:limited` (429 with retry_after), `1:garbage`, `1:slow`; any
/// other token is 401 Unauthorized. Bodies as in <https://core.telegram.org/bots/api#making-requests>.
pub fn telegram() -> Router {
    Router::new().route(
        "/{bot}/{method}",
        get(|Path((bot, method)): Path<(String, String)>| async move {
            let Some(token) = bot.strip_prefix("bot") else {
                return json_response(404, &[], json!({"ok": false, "error_code": 404, "description": "Not Found"}));
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            match (token, method.as_str()) {
                ("1:garbage", _) => garbage(),
                ("1:slow", _) => {
                    tokio::time::sleep(SLOW).await;
                    json_response(200, &[], json!({"ok": true, "result": {}}))
                }
                ("1:limited", _) => json_response(
                    429,
                    &[],
                    json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 35", "parameters": {"retry_after": 35}}),
                ),
                ("1:ok" | "1:backlog" | "1:failing", "getMe") => json_response(
                    200,
                    &[],
                    json!({"ok": true, "result": {"id": 7000001, "is_bot": true, "first_name": "Coach", "username": "coach_bot",
                        "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false}}),
                ),
                ("1:ok", "getWebhookInfo") => json_response(
                    200,
                    &[],
                    json!({"ok": true, "result": {"url": "https://bot.example.com/hook/s3cret-path", "has_custom_certificate": false,
                        "pending_update_count": 0, "max_connections": 40}}),
                ),
                ("1:backlog", "getWebhookInfo") => json_response(
                    200,
                    &[],
                    json!({"ok": true, "result": {"url": "", "has_custom_certificate": false, "pending_update_count": 250}}),
                ),
                ("1:failing", "getWebhookInfo") => json_response(
                    200,
                    &[],
                    json!({"ok": true, "result": {"url": "https://bot.example.com/hook", "has_custom_certificate": false,
                        "pending_update_count": 3, "last_error_date": now - 60,
                        "last_error_message": "Wrong response from the webhook: 502 Bad Gateway"}}),
                ),
                _ => json_response(401, &[], json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
            }
        }),
    )
}

/// Qdrant's `/readyz`, `/collections` and `/collections/{name}`. Like the real server, `/readyz` needs no key; the
/// `api-key` picks the rest: `qd-ready` (collections `memories` green, `sessions` yellow, `fresh` grey, `broken`
/// red), `qd-starting` (not ready), `qd-garbage` (an HTML collections list), `qd-slow`; anything else is 401. Answers as in
/// <https://api.qdrant.tech/api-reference/collections/get-collection>.
pub fn qdrant() -> Router {
    fn key(headers: &HeaderMap) -> &str {
        headers.get("api-key").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
    fn unauthorized() -> Response {
        (StatusCode::UNAUTHORIZED, "Must provide an API key or an Authorization bearer token").into_response()
    }
    Router::new()
        .route(
            "/readyz",
            get(|headers: HeaderMap| async move {
                match key(&headers) {
                    "qd-starting" => (StatusCode::SERVICE_UNAVAILABLE, "some shards are not ready").into_response(),
                    _ => (StatusCode::OK, "all shards are ready").into_response(),
                }
            }),
        )
        .route(
            "/collections",
            get(|headers: HeaderMap| async move {
                match key(&headers) {
                    "qd-ready" => {}
                    "qd-garbage" => return garbage(),
                    "qd-slow" => tokio::time::sleep(SLOW).await,
                    _ => return unauthorized(),
                }
                json_response(
                    200,
                    &[],
                    json!({"result": {"collections": [{"name": "memories"}, {"name": "sessions"}, {"name": "fresh"}, {"name": "broken"}]}, "status": "ok", "time": 0.00001}),
                )
            }),
        )
        .route(
            "/collections/{name}",
            get(|headers: HeaderMap, Path(name): Path<String>| async move {
                if key(&headers) != "qd-ready" {
                    return unauthorized();
                }
                let (status, points) = match name.as_str() {
                    "memories" => ("green", 1200),
                    "sessions" => ("yellow", 40),
                    "fresh" => ("grey", 5),
                    "broken" => ("red", 0),
                    _ => {
                        return json_response(
                            404,
                            &[],
                            json!({"status": {"error": format!("Not found: Collection `{name}` doesn't exist!")}, "time": 0.00001}),
                        );
                    }
                };
                json_response(
                    200,
                    &[],
                    json!({"result": {"status": status, "optimizer_status": "ok", "indexed_vectors_count": points,
                        "points_count": points, "segments_count": 2, "config": {}}, "status": "ok", "time": 0.00002}),
                )
            }),
        )
}
