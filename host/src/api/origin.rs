//! Where the API and the dashboard answer, and which pages may call them: a request's `Origin` against its own
//! `Host`, a `Host` that no other site can point its name at (an address, or `localhost`), and a configured public
//! URL's origin and host.

use axum::http::{HeaderMap, HeaderValue, header};

/// `https://monitor.example.com[:port]` into its origin and host; `None` when it is not such a URL.
pub fn public_origin(url: &str) -> Option<(String, String)> {
    let url = url.trim_end_matches('/');
    let (scheme, host) = url.split_once("://")?;
    let valid = matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !host.contains(['/', '?', '#', '@', ' '])
        && HeaderValue::from_str(url).is_ok();
    valid.then(|| (url.to_string(), host.to_string()))
}

/// A `Host` header's name, without its port or brackets.
pub fn host_name(host: &str) -> &str {
    let name = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(n, _)| n);
    name.trim_matches(|c| c == '[' || c == ']')
}

/// The request's `Host`, if it has one that is text.
pub fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// Whether a `Host` names this machine in a way no other site's DNS can: an address, or `localhost`.
pub fn local(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether `origin` is the server's own, the one the request was sent to (its host and port are the `Host`).
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let host = host(headers);
    host.is_some() && origin.split_once("://").map(|(_, rest)| rest) == host
}
