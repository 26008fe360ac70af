//! The `tls` import: a TLS handshake the host makes for a checker with a `host:port` its check is granted, and the
//! chain the server presented, parsed. The chain is verified for the name asked (the system's roots and the check's
//! `ca_file`), but the handshake goes on whatever the verdict, so that an expired or misnamed certificate is
//! reported rather than hidden behind a failed connection; nothing is sent after it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::CertificateError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::bindings::selfmon::plugin::tls::{Certificate, Handshake, Host};
use super::state::{PluginState, truncate};
use crate::config::trust::{Judge, Verifier};

/// Handshakes one call may make.
pub const HANDSHAKES_PER_CALL: usize = 8;
/// The most of a plugin's argument repeated in selfmon's log and errors.
const SHOWN_BYTES: usize = 256;

impl Host for PluginState {
    async fn inspect(&mut self, address: String, server_name: String, timeout_ms: u32) -> Result<Handshake, String> {
        // Refused handshakes count too: a plugin cannot fill selfmon's log with refusals.
        if !self.count_handshake() {
            return Err(format!("more than {HANDSHAKES_PER_CALL} TLS handshakes in one call"));
        }
        let confinement = self.confinement();
        let labels = &confinement.labels;
        let (host, port) = split(&address)?;
        if !confinement.grants.allows(host, port) {
            let address = truncate(&address, SHOWN_BYTES);
            tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), %address, "Refused a TLS handshake the check is not granted");
            return Err(format!(
                "connection to {address} refused by selfmon: the check is not granted this address (add it to the \
                 check's `target` or `allow`)"
            ));
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(confinement.timeout);
        let (roots, pins) = (confinement.tls.roots(), confinement.tls.pins());
        tokio::time::timeout(timeout, handshake(host, port, &server_name, roots, pins))
            .await
            .unwrap_or_else(|_| Err(format!("no handshake with {address} within {} ms", timeout.as_millis())))
    }
}

/// `host:port`, the host without the brackets of an IPv6 address.
fn split(address: &str) -> Result<(&str, u16), String> {
    let not = || format!("`{}` is not host:port", truncate(address, SHOWN_BYTES));
    let (host, port) = address.rsplit_once(':').ok_or_else(not)?;
    let port = port.parse().map_err(|_| not())?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

async fn handshake(
    host: &str,
    port: u16,
    server_name: &str,
    roots: Arc<rustls::RootCertStore>,
    pins: Arc<rustls::RootCertStore>,
) -> Result<Handshake, String> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
        format!("`{}` is not a name or address to ask a server for", truncate(server_name, SHOWN_BYTES))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?;
    let recorder = Verifier::new(Recorder { inner: verifier, pins, verdict: Mutex::default() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {}", reason(&e)))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {}", handshake_failure(&e)))?;
    let took = started.elapsed();
    let (_, connection) = stream.get_ref();
    let protocol = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        other => other.map(|v| format!("{v:?}")).unwrap_or_default(),
    };
    let cipher = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str().map(str::to_string))
        .unwrap_or_default();
    let chain: Vec<Certificate> =
        connection.peer_certificates().unwrap_or_default().iter().map(|der| parse(der.as_ref())).collect();
    // A handshake that finished without the chain being looked at is not one to trust.
    let untrusted = recorder
        .judge
        .verdict
        .lock()
        .expect("verdict lock")
        .take()
        .unwrap_or_else(|| Some("the chain was not verified".into()));
    Ok(Handshake {
        chain,
        untrusted,
        protocol,
        cipher,
        handshake_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
    })
}

fn reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => error.to_string(),
    }
}

/// A certificate's fields as the contract gives them; one that cannot be parsed keeps its DER and says so.
fn parse(der: &[u8]) -> Certificate {
    let unreadable = |why: String| Certificate {
        subject: format!("(unreadable: {why})"),
        issuer: String::new(),
        not_before: 0,
        not_after: 0,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        der: der.to_vec(),
    };
    let (_, certificate) = match x509_parser::parse_x509_certificate(der) {
        Ok(parsed) => parsed,
        Err(error) => return unreadable(error.to_string()),
    };
    let (mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new());
    if let Ok(Some(names)) = certificate.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    ip_addresses.extend(ip);
                }
                _ => {}
            }
        }
    }
    Certificate {
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        not_before: certificate.validity().not_before.timestamp(),
        not_after: certificate.validity().not_after.timestamp(),
        dns_names,
        ip_addresses,
        der: der.to_vec(),
    }
}

/// Verifies as a browser would and keeps the verdict, but lets the handshake finish either way (its signatures are
/// still checked for real).
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    /// The check's `ca_file`: a certificate in it is trusted as the server's own, as curl and OpenSSL do.
    pins: Arc<rustls::RootCertStore>,
    /// `Some(None)` trusted, `Some(Some(why))` not.
    verdict: Mutex<Option<Option<String>>>,
}

impl Judge for Recorder {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        // A certificate the operator pinned (one in `ca_file`, even a CA's) is trusted as itself: no chain to
        // build, but its dates and names count as they do for any other.
        let why = match verdict {
            Ok(_) => None,
            Err(_) if self.pinned(end_entity) => pinned_problem(end_entity.as_ref(), server_name, now),
            Err(error) => Some(untrusted(&error, server_name)),
        };
        *self.verdict.lock().expect("verdict lock") = Some(why);
        Ok(())
    }
}

impl Recorder {
    /// Whether `certificate` is itself one of the check's `ca_file`: same subject, same key.
    fn pinned(&self, certificate: &CertificateDer<'_>) -> bool {
        let mut own = rustls::RootCertStore::empty();
        if own.add(certificate.clone().into_owned()).is_err() {
            return false;
        }
        own.roots.first().is_some_and(|leaf| {
            self.pins.roots.iter().any(|anchor| {
                anchor.subject.as_ref() == leaf.subject.as_ref()
                    && anchor.subject_public_key_info.as_ref() == leaf.subject_public_key_info.as_ref()
            })
        })
    }
}

/// What keeps a pinned certificate from being trusted for `name` now: its dates, or a name it does not cover (a
/// DNS name, `*.` standing for one leftmost label, or an IP address).
fn pinned_problem(der: &[u8], name: &ServerName<'_>, now: UnixTime) -> Option<String> {
    let certificate = parse(der);
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < certificate.not_before {
        return Some("the certificate is not valid yet".into());
    }
    if now > certificate.not_after {
        return Some("the certificate has expired".into());
    }
    let covered = match name {
        ServerName::DnsName(dns) => {
            let asked = dns.as_ref().trim_end_matches('.').to_ascii_lowercase();
            certificate.dns_names.iter().any(|pattern| {
                let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(parent) => {
                        asked.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
                    }
                    None => pattern == asked,
                }
            })
        }
        ServerName::IpAddress(ip) => {
            let asked = std::net::IpAddr::from(*ip).to_string();
            certificate.ip_addresses.contains(&asked)
        }
        _ => false,
    };
    (!covered).then(|| format!("the certificate is not valid for `{}`", name.to_str()))
}

/// Why a handshake failed, in an operator's words where rustls' are a protocol's.
fn handshake_failure(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) => "the server did not answer with TLS (is this a TLS port?)".into(),
        _ => error.to_string(),
    }
}

/// Why a chain is not trusted, in an operator's words.
fn untrusted(error: &rustls::Error, name: &ServerName<'_>) -> String {
    let name = name.to_str();
    match error {
        rustls::Error::InvalidCertificate(reason) => match reason {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the certificate has expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for `{name}`")
            }
            // No path to a trusted authority: none issued it, or one of the same name with another key.
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "issued by an authority this check does not trust (add it with the check's `ca_file`)".into()
            }
            CertificateError::Revoked => "the certificate is revoked".into(),
            CertificateError::Other(other)
                if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)) =>
            {
                "the server presents a CA certificate as its own (give that certificate in the check's `ca_file` to \
                 pin it, or issue the server a certificate of its own)"
                    .into()
            }
            _ => error.to_string(),
        },
        _ => error.to_string(),
    }
}
