//! selfmon's own HTTP requests (alert channels, webhook deliveries, recovery actions), on reqwest: proxies from
//! the environment as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, in either case), no
//! redirects followed, a deadline on the whole exchange, and only the start of an answer read. Plugins' requests
//! do not come here: they go through the runtime's sender, which enforces each check's grants.
//!
//! Where a client may reach only public addresses ([`Reach::Public`], for webhooks an API caller subscribed), the
//! addresses a name resolves to are filtered when connecting, so a name that later resolves elsewhere gains
//! nothing; an address written in the URL is checked before anything is sent. A request that goes through a proxy
//! is connected by the proxy, so selfmon checks what the name resolves to here and leaves the rest to the proxy;
//! the proxy's own address is the operator's choice and is never refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use hyper_util::client::proxy::matcher::Matcher;

use crate::config::Secret;
use crate::runtime::{Reach, TlsConfig};

/// The environment variables naming proxies, as curl reads them.
const PROXY_VARIABLES: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// A client for selfmon's own requests, reaching where its [`Reach`] allows.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    reach: Reach,
    /// Which requests go through a proxy (read from the environment once, as reqwest reads it).
    proxies: Arc<Matcher>,
    /// The proxies' own hosts, which the resolver passes unfiltered.
    proxy_hosts: Arc<[String]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("reach", &self.reach).finish_non_exhaustive()
    }
}

/// A receiver's answer: its status, how long it asked to wait before another request, and the start of its body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// Why a request got no answer, said without its URL (which may carry a token).
#[derive(Debug)]
pub struct NoAnswer {
    pub message: String,
    pub why: Why,
}

/// What kept a request from an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The receiver is where this client may not reach: asking again gives the same.
    Refused,
    /// It ran out of time.
    TimedOut,
    /// The network or the receiver failed.
    Failed,
}

impl NoAnswer {
    fn new(why: Why, message: String) -> Self {
        Self { message, why }
    }
}

/// One request: what is sent, how long the whole exchange may take, and how much of the answer is kept.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: http::Method,
    pub url: &'a str,
    pub headers: &'a [(String, Secret)],
    /// The body with its content type.
    pub body: Option<(&'static str, Bytes)>,
    pub timeout: Duration,
    pub keep: usize,
}

impl Client {
    /// A client trusting `tls`'s certificate authorities and connecting where `reach` allows.
    pub fn new(tls: &TlsConfig, reach: Reach) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.client_config())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("selfmon/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        let proxy_hosts: Arc<[String]> = proxy_hosts().into();
        if let Reach::Public(_) = reach {
            builder = builder.dns_resolver(Arc::new(Guard { reach: reach.clone(), proxies: proxy_hosts.clone() }));
        }
        let http =
            builder.build().map_err(|e| format!("the HTTP client cannot be set up: {}", describe(&e).message))?;
        Ok(Self { http, reach, proxies: Arc::new(Matcher::from_env()), proxy_hosts })
    }

    /// Send `request`: the answer, whatever its status, or why there is none.
    pub async fn send(&self, request: Request<'_>) -> Result<Answer, NoAnswer> {
        let url =
            reqwest::Url::parse(request.url).map_err(|e| NoAnswer::new(Why::Refused, format!("invalid URL: {e}")))?;
        if let Some(refusal) = self.refusal(&url).await {
            return Err(NoAnswer::new(Why::Refused, refusal));
        }
        let mut builder = self.http.request(request.method, url).timeout(request.timeout);
        for (name, value) in request.headers {
            builder = builder.header(name.as_str(), value.expose());
        }
        if let Some((content_type, body)) = request.body {
            builder = builder.header(http::header::CONTENT_TYPE, content_type).body(body);
        }
        let timeout = request.timeout;
        let mut response = builder.send().await.map_err(|e| match e.is_timeout() {
            true => NoAnswer::new(Why::TimedOut, format!("no answer within {}", humantime::format_duration(timeout))),
            false => describe(&e),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, SystemTime::now()));
        let mut body = BytesMut::new();
        while body.len() < request.keep {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(request.keep - body.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer { status, retry_after, body: body.freeze() })
    }

    /// Why `url` may not be asked for: an address in it that the reach refuses; or, through a proxy (or straight to
    /// a proxy's own host, which the resolver passes), a name with any address here that is refused.
    async fn refusal(&self, url: &reqwest::Url) -> Option<String> {
        if matches!(self.reach, Reach::Anywhere) {
            return None;
        }
        let refused = |ip: IpAddr| self.reach.refusal(ip).map(|kind| refused_message(&ip.to_string(), ip, kind));
        let host = url.host_str()?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return refused(ip);
        }
        let uri: http::Uri = url.as_str().parse().ok()?;
        let proxied = self.proxies.intercept(&uri).is_some();
        if !proxied && !self.proxy_hosts.iter().any(|p| p.eq_ignore_ascii_case(host)) {
            return None;
        }
        // A name that does not resolve here is the proxy's to resolve (and police).
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((host, 0)).await.ok()?.map(|a| a.ip()).collect();
        let (ip, kind) = addresses.iter().find_map(|ip| Some((*ip, self.reach.refusal(*ip)?)))?;
        Some(refused_message(host, ip, kind))
    }
}

fn refused_message(host: &str, ip: IpAddr, kind: &str) -> String {
    format!(
        "refused: `{host}` is {ip} ({kind}), not a public address, and `[webhooks] allow_networks` does not include it"
    )
}

/// The hosts of the proxies the environment names: the operator's choice, so never refused.
fn proxy_hosts() -> Vec<String> {
    PROXY_VARIABLES
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .filter_map(|value| {
            let value = if value.contains("://") { value } else { format!("http://{value}") };
            Some(reqwest::Url::parse(&value).ok()?.host_str()?.to_ascii_lowercase())
        })
        .collect()
}

/// Resolves names for a client of limited reach: only the addresses it may connect to are given to it.
struct Guard {
    reach: Reach,
    proxies: Arc<[String]>,
}

/// The name's every address is refused.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let proxy = self.proxies.contains(&host);
        let reach = self.reach.clone();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if proxy {
                return Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs);
            }
            let first_refused = addresses.iter().find_map(|a| Some((a.ip(), reach.refusal(a.ip())?)));
            let allowed: Vec<SocketAddr> = addresses.into_iter().filter(|a| reach.refusal(a.ip()).is_none()).collect();
            match (allowed.is_empty(), first_refused) {
                (true, Some((ip, kind))) => Err(Box::new(Refused(refused_message(&host, ip, kind))) as _),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// What went wrong, without the URL: the refusal if the reach refused, else reqwest's kind of failure and its
/// deepest cause.
fn describe(error: &reqwest::Error) -> NoAnswer {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return NoAnswer::new(Why::Refused, refused.0.clone());
        }
        deepest = Some(cause.to_string());
        source = cause.source();
    }
    let kind = match () {
        () if error.is_connect() => "cannot connect",
        () if error.is_body() || error.is_decode() => "the answer broke off",
        () if error.is_builder() => "invalid request",
        () => "request failed",
    };
    let message = match deepest {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    };
    // A request that cannot be built (a header with a line break, a scheme other than http) stays so.
    NoAnswer::new(if error.is_builder() { Why::Refused } else { Why::Failed }, message)
}

/// A `Retry-After` value (RFC 9110 10.2.3): seconds, or an HTTP date, as a wait from `now` (none for a date
/// already past).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_and_as_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now), Some(Duration::ZERO), "a date past");
        for garbage in ["-1", "soon", "NaN", "inf", ""] {
            assert_eq!(retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    /// A receiver on loopback answering every request with a 500 and a body of 640 MiB; its URL and its hits.
    async fn endless_receiver() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let chunks = (0..10_000).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 64 * 1024])));
            let body = axum::body::Body::from_stream(tokio_stream::iter(chunks));
            async move { (http::StatusCode::INTERNAL_SERVER_ERROR, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, hits)
    }

    fn get(url: &str) -> Request<'_> {
        Request {
            method: http::Method::GET,
            url,
            headers: &[],
            body: None,
            timeout: Duration::from_secs(10),
            keep: 1024,
        }
    }

    #[tokio::test]
    async fn only_the_start_of_an_answer_is_read() {
        let (url, _) = endless_receiver().await;
        let client = Client::new(&TlsConfig::system(), Reach::Anywhere).unwrap();
        let answer = client.send(get(&url)).await.unwrap();
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body.len(), 1024);
    }

    #[tokio::test]
    async fn a_refused_address_is_never_connected_to_by_name_or_number() {
        let (url, hits) = endless_receiver().await;
        let by_number = url.replace("localhost", "127.0.0.1");
        let public_only = Client::new(&TlsConfig::system(), Reach::Public(Arc::from(Vec::new()))).unwrap();
        for url in [&url, &by_number] {
            let refusal = public_only.send(get(url)).await.unwrap_err();
            assert_eq!(refusal.why, Why::Refused);
            let refusal = refusal.message;
            assert!(refusal.starts_with("refused: `"), "{refusal}");
            assert!(refusal.contains("(loopback)") && refusal.contains("[webhooks] allow_networks"), "{refusal}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let allowed = Reach::Public(Arc::from(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]));
        let allowed = Client::new(&TlsConfig::system(), allowed).unwrap();
        for url in [&url, &by_number] {
            assert_eq!(allowed.send(get(url)).await.unwrap().status, 500);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_not_followed() {
        let (target, hits) = endless_receiver().await;
        let app = axum::Router::new().fallback(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = Client::new(&TlsConfig::system(), Reach::Anywhere).unwrap();
        assert_eq!(client.send(get(&url)).await.unwrap().status, 307);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }
}
