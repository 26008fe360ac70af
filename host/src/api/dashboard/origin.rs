//! Where the dashboard answers: its public URL's origin and host, and a `Host` header's name.

use axum::http::HeaderValue;

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
