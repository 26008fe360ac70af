//! A small blocking HTTP client over `wasi:http`.
//!
//! selfmon performs the request on the plugin's behalf (TLS included) after checking it against the check's grants.
//!
//! ```no_run
//! use std::time::Duration;
//! use selfmon_sdk::http;
//!
//! # fn main() -> Result<(), selfmon_sdk::Error> {
//! let response = http::get("https://api.example.com/v1/models")
//!     .bearer_auth("sk-...")
//!     .timeout(Duration::from_secs(5))
//!     .send()?;
//! if response.status() == 200 {
//!     let models: serde_json::Value = response.json()?;
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll;
use wasip2::io::streams::StreamError;

/// The timeout of a request that does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a response body kept by default; the rest is read and dropped.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A `GET` request.
pub fn get(url: &str) -> Request {
    Request::new("GET", url)
}

/// A `HEAD` request.
pub fn head(url: &str) -> Request {
    Request::new("HEAD", url)
}

/// A `POST` request.
pub fn post(url: &str) -> Request {
    Request::new("POST", url)
}

/// A request with any method.
pub fn request(method: &str, url: &str) -> Request {
    Request::new(method, url)
}

/// A request being built. Nothing is sent until [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    max_body_bytes: usize,
}

impl Request {
    fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Add `Authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Send these bytes as the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Send a value as a JSON body, with `Content-Type: application/json`.
    ///
    /// # Panics
    /// If the value cannot be serialised to JSON, which only happens for types with a broken `Serialize`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("a request body serialises to JSON");
        self.header("content-type", "application/json").body(body)
    }

    /// The whole time the request may take, from connecting to the last byte of the body. Default: 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keep at most this many bytes of the response body (the rest is read and dropped). Default: 1 MiB.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let started = monotonic_clock::now();
        let deadline = started.saturating_add(duration_ns(self.timeout));
        let uri: ::http::Uri =
            self.url.parse().map_err(|e| Error::InvalidUrl(format!("`{}`: {e}", redact_url(&self.url))))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(Error::InvalidUrl(format!(
                    "`{}` does not start with http:// or https://",
                    redact_url(&self.url)
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| Error::InvalidUrl(format!("`{}` has no host", redact_url(&self.url))))?
            .to_string();
        // What errors show: host and port, never the `user:password@` a URL may carry.
        let shown = authority.rsplit_once('@').map_or(authority.as_str(), |(_, host)| host).to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());

        let headers =
            Fields::from_list(&self.headers).map_err(|e| Error::InvalidRequest(format!("headers refused: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| Error::InvalidRequest(format!("{what} refused: `{}`", redact_url(&self.url)));
        request.set_method(&method).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(&authority)).map_err(|()| invalid("host"))?;
        request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;

        let options = RequestOptions::new();
        let timeout_ns = duration_ns(self.timeout);
        // Each of these is also bounded by the overall deadline below; setting them keeps the host from waiting on
        // its own, longer defaults.
        let _ = options.set_connect_timeout(Some(timeout_ns));
        let _ = options.set_first_byte_timeout(Some(timeout_ns));
        let _ = options.set_between_bytes_timeout(Some(timeout_ns));

        let outgoing_body = match &self.body {
            Some(_) => Some(request.body().map_err(|()| invalid("body"))?),
            None => None,
        };
        let future =
            outgoing_handler::handle(request, Some(options)).map_err(|e| Error::from_code(e, &shown, self.timeout))?;
        if let (Some(body), Some(bytes)) = (outgoing_body, &self.body) {
            write_body(body, bytes).map_err(|e| Error::from_code(e, &shown, self.timeout))?;
        }

        let timer = monotonic_clock::subscribe_instant(deadline);
        let ready = future.subscribe();
        if !poll::poll(&[&ready, &timer]).contains(&0) {
            return Err(Error::Timeout { after: self.timeout });
        }
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(Error::from_code(code, &shown, self.timeout)),
            Some(Err(())) | None => return Err(Error::Protocol("the response was already taken".into())),
        };
        let first_byte = Duration::from_nanos(monotonic_clock::now().saturating_sub(started));
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| Error::Protocol("response body unavailable".into()))?;
        let (body, truncated) = read_body(&incoming, &timer, self.max_body_bytes, &shown, self.timeout)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
            truncated,
            first_byte,
            elapsed: Duration::from_nanos(monotonic_clock::now().saturating_sub(started)),
        })
    }
}

/// `base` and `path` joined with exactly one slash: `url("https://api.example.com/v1/", "/models")`.
pub fn url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// A URL as it may be shown: without `user:password@` and without the query (where API keys often travel).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.find(['/', '?', '#']).map_or((rest, ""), |i| rest.split_at(i));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let query = if rest.contains('?') { "?…" } else { "" };
    if scheme.is_empty() { format!("{host}{path}{query}") } else { format!("{scheme}://{host}{path}{query}") }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), ErrorCode> {
    let stream = body.write().map_err(|()| ErrorCode::InternalError(Some("request body unavailable".into())))?;
    // `blocking-write-and-flush` takes at most 4096 bytes a call.
    for chunk in bytes.chunks(4096) {
        stream.blocking_write_and_flush(chunk).map_err(|e| stream_error_code(&e))?;
    }
    drop(stream);
    OutgoingBody::finish(body, None)
}

fn read_body(
    body: &IncomingBody,
    timer: &poll::Pollable,
    max: usize,
    authority: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), Error> {
    let stream = body.stream().map_err(|()| Error::Protocol("response body stream unavailable".into()))?;
    let ready = stream.subscribe();
    let mut kept = Vec::new();
    let mut truncated = false;
    loop {
        if !poll::poll(&[&ready, timer]).contains(&0) {
            return Err(Error::Timeout { after: timeout });
        }
        match stream.read(64 * 1024) {
            Ok(chunk) => {
                let room = max.saturating_sub(kept.len());
                truncated |= chunk.len() > room;
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(StreamError::Closed) => return Ok((kept, truncated)),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => Error::from_code(code, authority, timeout),
                    None => Error::Protocol(format!("reading the body failed: {}", e.to_debug_string())),
                });
            }
        }
    }
}

fn stream_error_code(error: &StreamError) -> ErrorCode {
    match error {
        StreamError::Closed => ErrorCode::ConnectionTerminated,
        StreamError::LastOperationFailed(e) => wasip2::http::types::http_error_code(e)
            .unwrap_or_else(|| ErrorCode::InternalError(Some(e.to_debug_string()))),
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    truncated: bool,
    first_byte: Duration,
    elapsed: Duration,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header (names compare case-insensitively), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The body (at most the request's `max_body_bytes`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Body(format!("not the JSON expected: {e}")))
    }

    /// Whether the body was longer than the request's `max_body_bytes`.
    pub fn body_truncated(&self) -> bool {
        self.truncated
    }

    /// Time from sending the request to the response headers.
    pub fn time_to_first_byte(&self) -> Duration {
        self.first_byte
    }

    /// Time from sending the request to the last byte of the body.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Why a request failed. The messages are written for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be used.
    InvalidUrl(String),
    /// A header, the method or the body was refused before sending.
    InvalidRequest(String),
    /// selfmon refused the request: the check is not granted this host.
    Denied {
        /// The `host:port` asked for.
        authority: String,
    },
    /// The host name could not be resolved.
    Dns(String),
    /// Nothing accepted the connection.
    ConnectionRefused(String),
    /// The request took longer than its timeout.
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// TLS failed (certificate, protocol).
    Tls(String),
    /// The server broke the HTTP protocol or the connection.
    Protocol(String),
    /// The body could not be read or parsed.
    Body(String),
}

impl Error {
    fn from_code(code: ErrorCode, authority: &str, timeout: Duration) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Self::Denied { authority: authority.to_string() },
            ErrorCode::DnsTimeout => Self::Dns(format!("DNS lookup of {authority} timed out")),
            ErrorCode::DnsError(e) => Self::Dns(format!(
                "DNS lookup of {authority} failed{}",
                e.rcode.map(|r| format!(": {r}")).unwrap_or_default()
            )),
            ErrorCode::DestinationNotFound => Self::Dns(format!("{authority} was not found")),
            ErrorCode::ConnectionRefused => Self::ConnectionRefused(format!("connection to {authority} refused")),
            ErrorCode::DestinationUnavailable | ErrorCode::DestinationIpUnroutable => {
                Self::ConnectionRefused(format!("{authority} is unreachable"))
            }
            ErrorCode::DestinationIpProhibited => Self::Denied { authority: authority.to_string() },
            ErrorCode::ConnectionTimeout => Self::Protocol(format!("connecting to {authority} timed out")),
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => Self::Timeout { after: timeout },
            ErrorCode::TlsCertificateError => Self::Tls(format!("the TLS certificate of {authority} was rejected")),
            ErrorCode::TlsProtocolError => Self::Tls(format!("TLS with {authority} failed")),
            ErrorCode::TlsAlertReceived(alert) => Self::Tls(format!(
                "{authority} sent a TLS alert{}",
                alert.alert_message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            ErrorCode::ConnectionTerminated => Self::Protocol(format!("{authority} closed the connection")),
            ErrorCode::HttpResponseIncomplete => Self::Protocol(format!("incomplete response from {authority}")),
            ErrorCode::InternalError(Some(message)) => Self::Protocol(message),
            other => Self::Protocol(format!("{other:?} from {authority}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Denied { authority } => write!(
                f,
                "request to {authority} refused by selfmon: the check is not granted this host \
                 (add it to the check's `target` or `allow`)"
            ),
            Self::Timeout { after } => write!(f, "no complete response within {} ms", after.as_millis()),
            Self::Dns(m) | Self::ConnectionRefused(m) | Self::Tls(m) | Self::Protocol(m) | Self::Body(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(url("https://api.example.com/v1/", "/models"), "https://api.example.com/v1/models");
        assert_eq!(url("http://q:6333", "collections"), "http://q:6333/collections");
    }

    #[test]
    fn shown_urls_carry_no_credentials_or_query() {
        assert_eq!(
            redact_url("https://user:pw@api.example.com:8443/v1/x?key=abc#f"),
            "https://api.example.com:8443/v1/x?…"
        );
        assert_eq!(redact_url("http://example.com"), "http://example.com");
        assert_eq!(redact_url("http://example.com/health"), "http://example.com/health");
    }
}
