//! The certificate authorities selfmon's TLS clients trust: the system's (Mozilla's bundle where the system has
//! none), plus those of a CA file a setting names (a check's `ca_file`, PostgreSQL's `sslrootcert`).

use std::sync::OnceLock;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
