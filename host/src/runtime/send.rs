//! Sending a plugin's HTTP request once its grant is checked: resolve, connect, TLS, HTTP/1.1, with the call's
//! timeouts.
//!
//! wasmtime-wasi-http's own sender trusts only a built-in root bundle. Checks watch private services too, so
//! here TLS trusts the system's roots (falling back to Mozilla's bundle where the system has none) plus the
//! certificate authorities of the check's own `ca_file`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::config::trust;
use crate::runtime::reach::Reach;

/// The certificate authorities one check's HTTPS requests trust, and its `ca_file`'s own certificates.
#[derive(Clone)]
pub struct TlsConfig(Arc<ClientConfig>, Arc<rustls::RootCertStore>, Arc<rustls::RootCertStore>);

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// The system's roots, plus every certificate in `extra_pem` (a CA file's contents).
    pub fn new(extra_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = trust::system_roots().clone();
        let mut own = rustls::RootCertStore::empty();
        if let Some(pem) = extra_pem {
            trust::add_pem(&mut own, pem)?;
            roots.extend(own.roots.iter().cloned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(Self(Arc::new(config), Arc::new(roots), Arc::new(own)))
    }

    /// The certificate authorities themselves, for a verifier built elsewhere.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.1.clone()
    }

    /// The certificates of the check's `ca_file` alone (none without one): those an operator may pin a server to.
    pub fn pins(&self) -> Arc<rustls::RootCertStore> {
        self.2.clone()
    }

    /// The rustls configuration itself, for a client built elsewhere.
    pub fn client_config(&self) -> ClientConfig {
        (*self.0).clone()
    }

    /// The system's roots only; shared by every check without a `ca_file`.
    pub fn system() -> Self {
        static SYSTEM: OnceLock<TlsConfig> = OnceLock::new();
        SYSTEM.get_or_init(|| Self::new(None).expect("TLS with the system's roots")).clone()
    }
}

/// How long each phase may take; the caller has already bounded them by the call's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

type IoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Send `request` (an absolute URI) to an address `reach` allows and return the response as soon as its head
/// arrives, with a future that finishes the connection's I/O.
pub async fn send(
    mut request: http::Request<WasiBody>,
    timeouts: Timeouts,
    tls: &TlsConfig,
    reach: &Reach,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri().clone();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });

    let stream = tokio::time::timeout(timeouts.connect, connect(host, port, reach))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let stream: Box<dyn Io> = if https {
        let name = ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)?;
        let connector = tokio_rustls::TlsConnector::from(tls.0.clone());
        let tls_stream = tokio::time::timeout(timeouts.connect, connector.connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(tls_error)?;
        Box::new(tls_stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(Error::from)?;

    // HTTP/1.1 to an origin server takes the path, not the absolute URI, and needs a Host header (hyper's
    // connection API adds none; wasi:http requests carry one already).
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    if !request.headers().contains_key(http::header::HOST)
        && let Some(authority) = uri.authority()
    {
        let host = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, host)| host);
        let value = http::HeaderValue::from_str(host).map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    // The connection is driven in this task until the response head arrives (a task of its own would mean a
    // wake-up and a hop between threads for every read), then handed back to run on its own.
    let mut connection = Some(Box::pin(connection));
    let mut exchange = std::pin::pin!(sender.send_request(request));
    let head = std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = exchange.as_mut().poll(cx) {
            return Poll::Ready(response.map_err(Error::from));
        }
        if let Some(driving) = connection.as_mut()
            && let Poll::Ready(finished) = driving.as_mut().poll(cx)
        {
            connection = None;
            finished.map_err(Error::from)?;
            return exchange.as_mut().poll(cx).map_err(Error::from);
        }
        Poll::Pending
    });
    let response =
        tokio::time::timeout(timeouts.first_byte, head).await.map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| TimedBody::new(body, timeouts.between_bytes).boxed_unsync());
    let io: IoFuture = Box::pin(async move {
        match connection {
            Some(connection) => connection.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((response, io))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Resolve and connect to the first address `reach` allows that accepts. A name that does not resolve is a DNS
/// error, not a refused connection; one whose every address is refused is `DestinationIpProhibited`.
async fn connect(host: &str, port: u16, reach: &Reach) -> Result<TcpStream, Error> {
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::DnsError { rcode: Some(e.to_string()), info_code: None })?
        .collect();
    let mut last = Error::DestinationNotFound;
    for address in addresses {
        if reach.refusal(address.ip()).is_some() {
            last = Error::DestinationIpProhibited;
            continue;
        }
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => last = Error::ConnectionRefused,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Error::ConnectionTimeout,
            Err(_) => last = Error::DestinationUnavailable,
        }
    }
    Err(last)
}

/// A failed TLS handshake, in the terms of `wasi:http`: a rejected certificate is told apart.
fn tls_error(error: std::io::Error) -> Error {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => {
            Error::TlsAlertReceived { alert_id: Some(u8::from(*alert)), alert_message: Some(format!("{alert:?}")) }
        }
        _ => Error::TlsProtocolError,
    }
}

/// A response body that fails when the server pauses longer than `between_bytes`.
struct TimedBody {
    body: Incoming,
    between_bytes: Duration,
    timer: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(body: Incoming, between_bytes: Duration) -> Self {
        Self { body, between_bytes, timer: Box::pin(tokio::time::sleep(between_bytes)) }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = Instant::now() + self.between_bytes;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Error::from(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}
