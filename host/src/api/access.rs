//! Who may call the API: bearer keys with a role, a rate limit per caller, which pages and names may reach it
//! ([`same_site`]), and a record of refused calls.
//!
//! Keys are compared by their SHA-256 digests in constant time, all of them, so neither timing nor the key itself
//! ever shows. A refused call is a security event in the log (the caller's address, the route, why; never the
//! presented key) and is counted for `/v1/status`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::api::origin::{host, host_name, local, same_origin};
use crate::config::{ApiConfig, ConfigError, Env, Role, Source};

/// Callers kept by the rate limiter before the idle ones are forgotten.
const REMEMBERED_CALLERS: usize = 10_000;

/// The shortest key accepted: one a caller could guess within the rate limit is no key.
pub const MIN_KEY_LENGTH: usize = 16;

struct Key {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// The API's keys and limits.
pub struct Access {
    /// Replaced whole by a reload ([`Access::take_keys`]).
    keys: RwLock<Vec<Key>>,
    metrics_public: bool,
    /// `[api] cors_origins`: the pages of other origins that may change things.
    origins: Vec<String>,
    /// `[api] allowed_hosts`: names the API answers to when it has no keys.
    hosts: Vec<String>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    refused: AtomicU64,
}

impl Access {
    /// The keys from `[api]` and `MONITORING_API_KEY`.
    pub fn from_config(config: &ApiConfig, source: &Source, env: &Env) -> Result<Self, Vec<ConfigError>> {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        for key in &config.keys {
            match key.key.resolve(env, &source.base_dir) {
                Ok(secret) if secret.expose().chars().count() < MIN_KEY_LENGTH => errors.push(ConfigError::new(
                    source.name(),
                    None,
                    format!(
                        "`[api] keys`: the key of `{}` is shorter than {MIN_KEY_LENGTH} characters (make one with \
                         `openssl rand -hex 24`)",
                        key.name
                    ),
                )),
                Ok(secret) => {
                    keys.push(Key { name: key.name.clone(), digest: digest(secret.expose()), role: key.role })
                }
                Err(reason) => errors.push(ConfigError::new(
                    source.name(),
                    None,
                    format!("`[api] keys`: the key of `{}` {reason}", key.name),
                )),
            }
        }
        match env("MONITORING_API_KEY").filter(|k| !k.is_empty()) {
            Some(monitoring) if monitoring.chars().count() < MIN_KEY_LENGTH => errors.push(ConfigError::new(
                "environment variable MONITORING_API_KEY",
                None,
                format!("the key is shorter than {MIN_KEY_LENGTH} characters (make one with `openssl rand -hex 24`)"),
            )),
            Some(monitoring) => {
                keys.push(Key { name: "monitoring".into(), digest: digest(&monitoring), role: Role::Admin })
            }
            None => {}
        }
        let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            errors.push(ConfigError::new(
                source.name(),
                None,
                format!("`[api] keys`: the name `{}` is used twice", twice[0]),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let limiter =
            NonZeroU32::new(config.rate_limit).map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute)));
        Ok(Self {
            keys: RwLock::new(keys),
            metrics_public: config.metrics_public,
            origins: config.cors_origins.clone(),
            hosts: config.allowed_hosts.clone(),
            limiter,
            refused: AtomicU64::new(0),
        })
    }

    /// Whether calls need a key.
    pub fn is_open(&self) -> bool {
        self.keys.read().expect("keys lock").is_empty()
    }

    /// Put in the keys of `built` (built by a reload) in place of these: a removed key stops working at once.
    /// Adding the first key or removing the last is refused: whether the API is open is decided at start-up (the
    /// dashboard's sign-in depends on it).
    pub fn take_keys(&self, built: &Access) -> Result<Vec<String>, String> {
        if self.is_open() != built.is_open() {
            return Err("`[api] keys`: adding the first key or removing the last takes effect at the next start".into());
        }
        let new = std::mem::take(&mut *built.keys.write().expect("keys lock"));
        let mut keys = self.keys.write().expect("keys lock");
        let names = |keys: &[Key]| keys.iter().map(|k| (k.name.clone(), k.digest, k.role)).collect::<Vec<_>>();
        let (before, after) = (names(&keys), names(&new));
        let mut said: Vec<String> = before
            .iter()
            .filter(|k| !after.contains(k))
            .map(|(name, ..)| format!("API key `{name}` removed or changed"))
            .collect();
        said.extend(after.iter().filter(|k| !before.contains(k)).map(|(name, ..)| format!("API key `{name}` added")));
        *keys = new;
        Ok(said)
    }

    /// Calls refused for a missing or wrong key or a role too weak, since start-up.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The name and role of the key presented, if it is one.
    pub fn authenticate(&self, presented: &str) -> Option<(String, Role)> {
        let presented = digest(presented);
        let keys = self.keys.read().expect("keys lock");
        // Every key is compared, whichever matches, so the time taken does not tell which one did.
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some((key.name.clone(), key.role));
            }
        }
        found
    }

    /// The digest and role of the key named `name`: what a dashboard session is bound to.
    pub fn named(&self, name: &str) -> Option<([u8; 32], Role)> {
        self.keys.read().expect("keys lock").iter().find(|key| key.name == name).map(|key| (key.digest, key.role))
    }

    /// Count and log a refused call as a security event.
    pub fn count_refusal(&self, address: Option<SocketAddr>, method: &Method, route: &str, reason: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "selfmon::security",
            remote = address.map(|a| a.ip().to_string()),
            method = %method,
            route,
            reason,
            "API call refused"
        );
    }

    /// Count and log a refused dashboard sign-in (never the key presented).
    pub fn refused_sign_in(&self, address: Option<SocketAddr>, reason: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "selfmon::security",
            remote = address.map(|a| a.ip().to_string()),
            reason,
            "Dashboard sign-in refused"
        );
    }

    /// Refuse a call: counted, logged as a security event (the caller's address, the method, the route and why)
    /// and answered in the one error shape.
    pub fn refuse(
        &self,
        status: StatusCode,
        code: &'static str,
        message: &str,
        address: Option<SocketAddr>,
        request: &Request,
    ) -> Response {
        // The route, not the path: a path may carry a user id.
        let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |m| m.as_str());
        self.count_refusal(address, request.method(), route, code);
        let mut response = ApiError::new(status, code, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Who made a call that got through: the key's name (none when the API is open) and its role. Handlers find it in
/// the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Option<String>,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A caller the dashboard has identified by its session cookie, put in the request's extensions in front of the
/// API (never taken from the wire).
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
}

/// The request came through the dashboard's `/api`: no path is public there.
#[derive(Debug, Clone, Copy)]
pub struct ViaDashboard;

/// Where keys with the ingest role may send.
const INGEST_PATHS: [&str; 3] = ["/v1/traces", "/v1/logs", "/v1/events"];

/// The middleware in front of every route.
pub async fn guard(State(access): State<Arc<Access>>, mut request: Request, next: Next) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let by_address = format!("address {}", address.map_or_else(|| "unknown".into(), |a| a.ip().to_string()));
    let path = request.uri().path();
    let via_dashboard = request.extensions().get::<ViaDashboard>().is_some();
    let public = !via_dashboard && (path == "/health" || (path == "/metrics" && access.metrics_public));
    let session = request.extensions().get::<Session>().cloned();
    let by_session = session.is_some();
    let caller = if access.is_open() || public {
        None
    } else {
        let header = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
        // The scheme is case-insensitive (RFC 9110).
        let presented = header.and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()).filter(|k| !k.is_empty())
        });
        let refusal = match (session, header, presented) {
            (Some(session), _, _) => Ok((session.name, session.role)),
            (None, None, _) => Err(("missing_key", "send an API key: Authorization: Bearer <key>")),
            (None, Some(_), None) => Err(("missing_key", "the Authorization header is not `Bearer <key>`")),
            (None, Some(_), Some(presented)) => {
                access.authenticate(presented).ok_or(("invalid_key", "the API key is not valid"))
            }
        };
        let key = match refusal {
            Ok(key) => key,
            Err((code, message)) => {
                // Guessing keys costs the same rate as calling with one.
                if let Some(limited) = access.over_limit(&by_address) {
                    return limited;
                }
                return access.refuse(StatusCode::UNAUTHORIZED, code, message, address, &request);
            }
        };
        // GraphQL queries come as POSTs too: its mutations check the role themselves.
        let reading = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) || path == "/graphql";
        let sending = *request.method() == Method::POST && INGEST_PATHS.contains(&path);
        let (name, role) = key;
        if role == Role::Ingest && !sending {
            return access.refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an ingest key may only send: POST /v1/traces, /v1/logs and /v1/events",
                address,
                &request,
            );
        }
        if !reading && role == Role::Read {
            return access.refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs a key with the admin role",
                address,
                &request,
            );
        }
        Some((name, role))
    };
    // A dashboard session has a rate of its own, beside its key's automation.
    let who = match &caller {
        Some((name, _)) if by_session => format!("session {name}"),
        Some((name, _)) => format!("key {name}"),
        None => by_address,
    };
    // `/health` answers every probe: load balancers, service managers and container engines ask it often from one
    // address, and it reads nothing.
    let health = !via_dashboard && path == "/health";
    if !health && let Some(limited) = access.over_limit(&who) {
        return limited;
    }
    let caller = match caller {
        Some((name, role)) => Caller { name: Some(name), role },
        // Without keys everyone may do everything; on the public routes nobody may change anything.
        None => Caller { name: None, role: if access.is_open() { Role::Admin } else { Role::Read } },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// In front of every route, before the keys: which pages and names may reach the API.
///
/// A request that changes something (any method but GET, HEAD and OPTIONS) or opens a WebSocket, and carries an
/// `Origin`, must come from the API's own origin or one of `[api] cors_origins`: a browser sends a page's forms and
/// `text/plain` posts to any site without asking, and WebSockets are not covered by CORS at all. Without keys,
/// `Host` must be an address, `localhost` or one of `[api] allowed_hosts` (but for `/health`), so that a page of a
/// site whose name is pointed at this machine (DNS rebinding) cannot read or change anything. Requests through the
/// dashboard's `/api` are checked by the dashboard. Refusals are 403 and security events.
pub async fn same_site(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if request.extensions().get::<ViaDashboard>().is_none()
        && let Some(refusal) = foreign(&access, &request)
    {
        let (status, code, message) = refusal;
        return access.refuse(status, code, message, address, &request);
    }
    // GraphQL takes JSON only, from the API and the dashboard alike: a browser sends a form or `text/plain` to any
    // site without asking first.
    if request.method() == Method::POST && request.uri().path() == "/graphql" && !json(request.headers()) {
        let message = "send the query as JSON with `Content-Type: application/json`";
        return access.refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json", message, address, &request);
    }
    next.run(request).await
}

/// Why a request is refused for the name it was sent to or the page it comes from, if it is.
fn foreign(access: &Access, request: &Request) -> Option<(StatusCode, &'static str, &'static str)> {
    let headers = request.headers();
    if access.is_open() && request.uri().path() != "/health" {
        let named = host(headers).is_none_or(|host| {
            local(host) || access.hosts.iter().any(|name| name.eq_ignore_ascii_case(host_name(host)))
        });
        if !named {
            let message = "this API answers at its addresses or localhost; add the name to `[api] allowed_hosts` to reach it by name";
            return Some((StatusCode::FORBIDDEN, "unknown_host", message));
        }
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if (changes || upgrade)
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let allowed = origin.to_str().is_ok_and(|origin| {
            same_origin(headers, origin) || access.origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        });
        if !allowed {
            let message = "a page of another origin may not change anything here: add it to `[api] cors_origins`";
            return Some((StatusCode::FORBIDDEN, "cross_origin", message));
        }
    }
    None
}

impl Access {
    /// A 429 with `Retry-After` when `who` has used up its rate.
    pub(crate) fn over_limit(&self, who: &str) -> Option<Response> {
        let limiter = self.limiter.as_ref()?;
        if limiter.len() > REMEMBERED_CALLERS {
            limiter.retain_recent();
        }
        let not_until = limiter.check_key(&who.to_string()).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now()).as_secs() + 1;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {wait} s"),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        Some(response)
    }

    /// Count and log a call refused past the guard (a GraphQL mutation with a read key).
    pub fn refused_inside(&self, code: &str, caller: Option<&str>, what: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "selfmon::security", key = caller, reason = code, what, "API call refused");
    }
}

/// Whether a request's `Content-Type` is JSON (`application/json` or a `+json` type).
fn json(headers: &header::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        essence == "application/json" || essence.ends_with("+json")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_config_and_monitoring_api_key() {
        let config: ApiConfig = toml::from_str("keys = [{ name = \"grafana\", key = \"env:GRAFANA_KEY\" }]").unwrap();
        let source = Source::default();
        let env = |name: &str| match name {
            "GRAFANA_KEY" => Some("grafana-key-0123456789".to_string()),
            "MONITORING_API_KEY" => Some("monitoring-key-0123456789".to_string()),
            _ => None,
        };
        let access = Access::from_config(&config, &source, &env).unwrap();
        assert!(!access.is_open());
        assert_eq!(access.authenticate("grafana-key-0123456789"), Some(("grafana".into(), Role::Read)));
        assert_eq!(access.authenticate("monitoring-key-0123456789"), Some(("monitoring".into(), Role::Admin)));
        assert!(access.authenticate("grafana-key-012345678").is_none() && access.authenticate("").is_none());
        let short = |name: &str| match name {
            "GRAFANA_KEY" => Some("too-short".to_string()),
            _ => None,
        };
        let errors = Access::from_config(&config, &source, &short).err().unwrap();
        assert!(errors[0].message.contains("shorter than 16 characters"), "{errors:?}");
        assert!(!errors[0].message.contains("too-short"), "the key itself is never shown");

        let errors = Access::from_config(&config, &source, &|_| None).err().unwrap();
        assert_eq!(
            errors[0].message,
            "`[api] keys`: the key of `grafana` refers to environment variable `GRAFANA_KEY`, which is not set"
        );
        assert!(Access::from_config(&ApiConfig::default(), &source, &|_| None).unwrap().is_open());
    }
}
