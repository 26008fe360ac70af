//! HTTPS on the API and dashboard listeners: the certificate and key of `[tls]`, read again when either file
//! changes and on `SIGHUP`, and a listener that completes TLS handshakes before handing connections to the server.
//!
//! A renewed certificate is put in place whole for the handshakes that follow; connections already open keep the
//! one they began with, so nothing is dropped. A renewal that cannot be read (half written, or a key that does not
//! match) leaves the current certificate serving and says why in the log.
//!
//! Handshakes run side by side, [`MAX_HANDSHAKES`] at most, each within [`HANDSHAKE_TIMEOUT`], so a client that
//! stalls mid-handshake holds up no one else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};

/// Handshakes in progress at once, per listener; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;
/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate and key being served, and the files they come from.
#[derive(Debug)]
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// The files `[tls]` names, read; `None` without `[tls]`. A missing, unreadable or mismatched pair is an error
    /// naming the setting and the file.
    pub fn load(config: &Config) -> Result<Option<Arc<Self>>, ConfigError> {
        let error = |message: String| ConfigError::new(config.source.name(), None, message);
        let (cert_file, key_file) = match (&config.tls.cert_file, &config.tls.key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (config.source.resolve(cert), config.source.resolve(key)),
            (Some(_), None) => return Err(error("`[tls] cert_file` is set without `[tls] key_file`".into())),
            (None, Some(_)) => return Err(error("`[tls] key_file` is set without `[tls] cert_file`".into())),
        };
        let current = read(&cert_file, &key_file).map_err(error)?;
        Ok(Some(Arc::new(Self { cert_file, key_file, current: RwLock::new(Arc::new(current)) })))
    }

    /// Read the files again and serve what they hold from the next handshake on; on an error the current
    /// certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let renewed = read(&self.cert_file, &self.key_file)?;
        let mut current = self.current.write().expect("certificate lock");
        if current.cert != renewed.cert {
            *current = Arc::new(renewed);
            tracing::info!(target: "selfmon::security", cert_file = %self.cert_file.display(), "TLS certificate reloaded");
        }
        Ok(())
    }

    /// Reload, saying in the log why it failed.
    fn reload_or_warn(&self) {
        if let Err(error) = self.reload() {
            tracing::error!(target: "selfmon::security", %error, "The TLS certificate was not reloaded; the current one stays");
        }
    }

    /// A TLS server that serves the current certificate, HTTP/1.1 over it.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Reload when either file (or the folder entry it is reached through, as with certbot's links) changes,
    /// until `stop`.
    pub fn watch(self: &Arc<Self>, tasks: &TaskTracker, stop: CancellationToken) {
        use notify::Watcher as _;
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        let names: Vec<PathBuf> = [&self.cert_file, &self.key_file].into_iter().cloned().collect();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
                && event.paths.iter().any(|path| names.iter().any(|name| path.file_name() == name.file_name()))
            {
                let _ = changed.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "Cannot watch the TLS files: they are read again on SIGHUP only");
                return;
            }
        };
        for dir in [&self.cert_file, &self.key_file].into_iter().filter_map(|file| file.parent()) {
            if let Err(error) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "Cannot watch the TLS files: they are read again on SIGHUP only");
            }
        }
        let certificates = self.clone();
        tasks.spawn(async move {
            let _watcher = watcher;
            while crate::ops::reload::watch::settled(&mut changes, &stop).await {
                certificates.reload_or_warn();
            }
        });
    }

    /// Reload on `SIGHUP`, until `stop`.
    pub fn reload_on_hangup(self: &Arc<Self>, tasks: &TaskTracker, stop: CancellationToken) {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        let certificates = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    hangup = hangups.recv() => if hangup.is_none() { return },
                }
                certificates.reload_or_warn();
            }
        });
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// The chain in `cert_file` with the key in `key_file`, checked to belong together.
fn read(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let cert_setting = format!("`[tls] cert_file` {}", cert_file.display());
    let key_setting = format!("`[tls] key_file` {}", key_file.display());
    let cert_pem = std::fs::read(cert_file).map_err(|e| format!("{cert_setting}: cannot read: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_setting}: is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert_setting}: holds no certificate"));
    }
    let key_pem = std::fs::read(key_file).map_err(|e| format!("{key_setting}: cannot read: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{key_setting}: holds no private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{key_setting} is not the key of the certificate in {cert_setting}")
        }
        e => format!("{key_setting}: cannot be used with the certificate in {cert_setting}: {e}"),
    })
}

/// A listener whose connections have completed their TLS handshake.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accept on `listener` and shake hands with `config`, until `stop`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (done, handshaken) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let handshakes = tasks.clone();
        tasks.spawn(async move {
            loop {
                let slot = tokio::select! {
                    () = stop.cancelled() => return,
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                };
                let (stream, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: wait a little rather than spin.
                            tracing::warn!(%error, "Cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                handshakes.spawn(async move {
                    let _slot = slot;
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = done.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "A TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "A TLS handshake did not finish in time"),
                    }
                });
            }
        });
        Ok(Self { handshaken, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // Stopping: the server's graceful shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
