//! The certificate authorities selfmon's TLS clients trust: the system's (Mozilla's bundle where the system has
//! none), plus those of a CA file a setting names (a check's `ca_file`, PostgreSQL's `sslrootcert`).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The trusted roots of this machine, read once.
pub fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            tracing::warn!("No trusted certificates found on this system; TLS clients trust Mozilla's bundle instead");
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

/// Add every certificate of `pem` (a CA file's contents) to `roots`; the error says what is wrong with the file.
pub fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), String> {
    let mut added = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|e| format!("is not PEM: {e}"))?;
        roots.add(certificate).map_err(|e| format!("holds a certificate that cannot be used: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// How a verifier of selfmon's own judges a server's certificate (pinned, its chain only, recorded and let through);
/// [`Verifier`] does the rest.
pub trait Judge: std::fmt::Debug + Send + Sync {
    /// Whether the server's certificate (`end_entity`, with the `intermediates` it sent) is accepted for `name`.
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

/// A rustls verifier that accepts the certificates its judge accepts and checks the handshake's signatures for
/// real, with ring's algorithms: a server that cannot prove it holds its certificate's key fails the handshake,
/// whatever the judge says.
#[derive(Debug)]
pub struct Verifier<J> {
    pub judge: J,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<J: Judge> Verifier<J> {
    pub fn new(judge: J) -> Arc<Self> {
        Arc::new(Self { judge, algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms })
    }
}

impl<J: Judge> ServerCertVerifier for Verifier<J> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.judge.judge(end_entity, intermediates, name, ocsp_response, now).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signed, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signed, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
