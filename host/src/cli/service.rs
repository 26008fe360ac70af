//! What running selfmon as a service asks of its command: `healthcheck` (a container's or a supervisor's probe of
//! the local API), `completions` for the shells and `man` pages, both generated from the command's own definition
//! so they never disagree with it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::CommandFactory;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::Cli;
use crate::config::Config;
use crate::config::trust::{Judge, Verifier};

/// How long the probe waits for the whole answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /health` of the API this config serves, on this machine: exit 0 on a 200, 1 otherwise, with why on
/// stderr. An API listening on every address (`0.0.0.0`, `::`) is asked on loopback. Over TLS (`[tls]`), the
/// server must present the configured certificate itself: nothing else is trusted, and no name is checked (the
/// probe asks an address, and the certificate names the service's public name).
pub async fn healthcheck(config: &Config) -> ExitCode {
    let mut address = config.server.api_listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let pinned = match &config.tls.cert_file {
        Some(path) => match own_certificate(&config.source.resolve(path)) {
            Ok(certificate) => Some(certificate),
            Err(error) => {
                eprintln!("unhealthy: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe(address, pinned)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("unhealthy: {address} answered /health with HTTP {status}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("unhealthy: {address}: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "unhealthy: {address} did not answer /health within {}",
                humantime::format_duration(PROBE_TIMEOUT)
            );
            ExitCode::FAILURE
        }
    }
}

/// The first certificate of the chain in `path`: the server's own.
fn own_certificate(path: &Path) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("`[tls] cert_file` {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("`[tls] cert_file` {}: no certificate in it", path.display()))?
        .map_err(|e| format!("`[tls] cert_file` {}: {e}", path.display()))
}

/// One `GET /health` over HTTP/1.1, over TLS if `pinned`: the answer's status.
async fn probe(address: std::net::SocketAddr, pinned: Option<CertificateDer<'static>>) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("cannot connect: {e}"))?;
    let request = http::Request::get("/health")
        .header(http::header::HOST, address.to_string())
        .header(http::header::USER_AGENT, concat!("selfmon-healthcheck/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    match pinned {
        None => exchange(TokioIo::new(stream), request).await,
        Some(certificate) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Verifier::new(Pinned(certificate)))
                .with_no_client_auth();
            let name = ServerName::IpAddress(address.ip().into());
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), request).await
        }
    }
}

async fn exchange<T>(io: TokioIo<T>, request: http::Request<Empty<bytes::Bytes>>) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    // The body is a few bytes; reading it lets the server finish the exchange cleanly.
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// Trusts exactly one certificate: the one the server is configured with.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>);

impl Judge for Pinned {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<(), rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::General("the server's certificate is not `[tls] cert_file`'s".into()))
        }
    }
}

/// Print the completion script of `shell` for the whole command line.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(shell, &mut Cli::command(), "selfmon", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Print `selfmon(1)`, or with `dir` write it and a page for every subcommand (`selfmon-serve.1`,
/// `selfmon-logs-search.1`, ...) there.
pub fn man(dir: Option<&Path>) -> ExitCode {
    let command = Cli::command();
    let written = match dir {
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout().lock()),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)),
    };
    match written.and_then(|()| std::io::stdout().flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the manual: {error}");
            ExitCode::FAILURE
        }
    }
}
