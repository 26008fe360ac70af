//! The PostgreSQL engine, chosen by `[storage] url`: a pool of connections (tokio-postgres with deadpool), the
//! schema brought up to date under an advisory lock, daily partitions made ahead. TLS follows the URL's `sslmode`
//! as libpq reads it: `disable`; `prefer` (the default) and `require` encrypt without checking the server, unless
//! `sslrootcert` names a CA file, which `require` then checks the chain against; `verify-ca` checks the chain,
//! `verify-full` the chain and the host name (against `sslrootcert`, or the system's roots without it).

mod codec;
pub mod listen;
pub mod partitions;
mod schema;
mod session;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use session::{Session, column};
use tokio::sync::Semaphore;

use super::sql::{self, Db, SqlError};
use super::{READERS, StorageError};
use crate::config::trust::{self, Judge, Verifier};

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database to connect to, read from `[storage] url`.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Where it is, for messages: host, port and database, never the password.
    pub name: String,
}

/// Why `[storage] url` cannot be used; never quotes the URL, which may hold a password.
fn refused(reason: impl std::fmt::Display) -> String {
    format!("`[storage] url` {reason}")
}

impl Target {
    /// Read a `postgres://` URL; `read_file` reads the CA file `sslrootcert` names.
    pub fn parse(url: &str, read_file: impl Fn(&str) -> std::io::Result<Vec<u8>>) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(refused("is not a postgres:// URL"));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let (mut mode, mut root_file) = ("prefer".to_string(), None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = value.to_string(),
                Some(("sslrootcert", value)) => root_file = Some(value.to_string()),
                _ => kept.push(pair),
            }
        }
        let roots = match &root_file {
            Some(file) => {
                let pem = read_file(file).map_err(|e| refused(format!("`sslrootcert`: cannot read {file}: {e}")))?;
                let mut roots = RootCertStore::empty();
                trust::add_pem(&mut roots, &pem).map_err(|e| refused(format!("`sslrootcert` {file} {e}")))?;
                Some(roots)
            }
            None => None,
        };
        let system = || trust::system_roots().clone();
        let (ssl_mode, verify) = match mode.as_str() {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, roots.map_or(Verify::Nothing, Verify::Chain)),
            "require" => (SslMode::Require, roots.map_or(Verify::Nothing, Verify::Chain)),
            "verify-ca" => (SslMode::Require, Verify::Chain(roots.unwrap_or_else(system))),
            "verify-full" => (SslMode::Require, Verify::Full(roots.unwrap_or_else(system))),
            other => {
                return Err(refused(format!(
                    "has `sslmode={other}`: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        let rebuilt = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        let mut config: tokio_postgres::Config =
            rebuilt.parse().map_err(|e| refused(format!("cannot be read: {e}")))?;
        config.ssl_mode(ssl_mode).connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("selfmon");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let name = format!("{}:{port}/{}", hosts.join(","), config.get_dbname().unwrap_or_default());
        Ok(Self { config, tls: MakeRustlsConnect::new(verify.client_config()?), name })
    }

    /// A pool of at most `size` connections.
    pub fn pool(&self, size: usize) -> Result<Pool, String> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| e.to_string())
    }
}

/// An open PostgreSQL store: its pool, and the turns to read.
pub struct Postgres {
    pub pool: Pool,
    /// Where it is, for messages and figures.
    pub name: String,
    turns: Arc<Semaphore>,
    /// Where it is, for connections of their own ([`listen`]).
    pub target: Target,
}

/// Connect, bring the schema up to date and make the partitions of the days around `now` (Unix ms).
pub async fn open(target: &Target, now: i64) -> Result<Postgres, String> {
    // The readers, the writer, and the cluster's own few.
    let pool = target.pool(READERS + 4)?;
    let failed = |error: SqlError| error.to_string();
    let mut client = pool.get().await.map_err(|e| failed(e.into()))?;
    schema::migrate(&mut client).await.map_err(|e| match e {
        schema::MigrateError::Postgres(error) => failed(error.into()),
        newer => newer.to_string(),
    })?;
    partitions::prepare(&mut client, &[], now).await.map_err(|e| failed(e.into()))?;
    drop(client);
    Ok(Postgres { pool, name: target.name.clone(), turns: Arc::new(Semaphore::new(READERS)), target: target.clone() })
}

/// Connect to read only, beside the nodes writing the database: no migration.
pub async fn open_reader(target: &Target) -> Result<Postgres, String> {
    let pool = target.pool(2)?;
    drop(pool.get().await.map_err(|e| SqlError::from(e).to_string())?);
    Ok(Postgres { pool, name: target.name.clone(), turns: Arc::new(Semaphore::new(1)), target: target.clone() })
}

impl Postgres {
    /// Run a read on a pooled connection, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        // Held until the read is over, even if its caller stops waiting for it.
        let turn = self.turns.clone().acquire_owned().await.map_err(|_| StorageError::Closed)?;
        self.run(query, Some(turn)).await
    }

    /// Run statements at once on a pooled connection of their own, each committed as it runs: neither behind the
    /// writer's queue nor waiting for a turn to read.
    pub async fn coordinate<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.run(query, None).await
    }

    async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Db) -> sql::Result<T> + Send + 'static,
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<T, StorageError> {
        let client = self.pool.get().await.map_err(SqlError::from)?;
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let session = Session::new(client, runtime);
            let result = query(&Db::postgres(&session));
            drop(turn);
            result.map_err(StorageError::from)
        })
        .await
        .expect("storage reads do not panic")
    }
}

/// What a TLS connection checks of the server.
enum Verify {
    Nothing,
    Chain(RootCertStore),
    Full(RootCertStore),
}

impl Verify {
    fn client_config(self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?;
        let full = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| refused(format!("`sslrootcert` cannot be used: {e}")))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            Self::Nothing => Verifier::new(Unverified),
            Self::Chain(roots) => Verifier::new(ChainOnly(full(roots)?)),
            Self::Full(roots) => full(roots)?,
        };
        Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
    }
}

/// `sslmode=prefer` or `require` without a CA file: the connection is encrypted, the server is not checked (as
/// libpq does); the handshake's signatures still are.
#[derive(Debug)]
struct Unverified;

impl Judge for Unverified {
    fn judge(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// `sslmode=verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl Judge for ChainOnly {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, String> {
        Target::parse(url, |_| Err(std::io::Error::from(std::io::ErrorKind::NotFound)))
    }

    #[test]
    fn urls_are_read_with_their_tls_mode_and_named_without_their_password() {
        let target = parse("postgres://selfmon:hunter2@db.internal:6432/monitoring?sslmode=verify-full").unwrap();
        assert_eq!(target.name, "db.internal:6432/monitoring");
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(parse("postgresql://u@h/d").unwrap().config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(parse("postgresql://u@h/d?sslmode=disable").unwrap().config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(parse("postgresql://u@h/d?application_name=x").unwrap().config.get_application_name(), Some("x"));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for (url, says) in [
            ("mysql://root:hunter2@h/d", "is not a postgres:// URL"),
            ("postgres://u:hunter2@h/d?sslmode=sometimes", "`sslmode=sometimes`"),
            ("postgres://u:hunter2@h/d?sslrootcert=/nowhere.pem", "cannot read /nowhere.pem"),
            ("postgres://u:hunter2@h/d?bogus=1", "cannot be read"),
        ] {
            let error = parse(url).err().unwrap();
            assert!(error.starts_with("`[storage] url` ") && error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
