//! HTTPS on the API and the dashboard, with a certificate authority made here and a client that verifies the
//! server against it: the certificate served, a renewal taken up when the files change and on `SIGHUP` while open
//! connections carry on, a renewal that cannot be used left aside, and a broken pair refused at start-up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{PATIENCE, Workdir, free_port, selfmon_command, signal};

/// A certificate authority made for one test.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "selfmon test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self { pem, issuer: Issuer::new(params, key) }
    }

    /// A server certificate for `localhost` and 127.0.0.1 named `name`, and its key, as PEM.
    fn server(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    /// A client that trusts this authority only.
    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// One verified HTTPS connection, kept open across requests.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    /// The common name of the certificate the server presented.
    presented: String,
}

impl Connection {
    async fn open(address: SocketAddr, client: &tokio_rustls::TlsConnector) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let tls = client.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        let certificate = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self { sender, presented: common_name(&certificate) })
    }

    async fn get(&mut self, path: &str) -> (u16, http::HeaderMap, String) {
        let request = http::Request::get(path).header("host", "localhost").body(Empty::new()).unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The common name in a certificate's subject (the tests give each certificate a distinct one).
fn common_name(certificate: &CertificateDer<'_>) -> String {
    let text = String::from_utf8_lossy(certificate.as_ref()).into_owned();
    ["first", "renewed", "signalled", "mismatched"]
        .into_iter()
        .find(|name| text.contains(&format!("cert-{name}")))
        .unwrap_or("unknown")
        .to_string()
}

/// Write `text` to `path` whole: to a hidden file beside it, then renamed over it, as certificate tools do.
fn replace(path: &Path, text: &str) {
    let hidden = path.with_file_name(format!(".{}.new", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&hidden, text).unwrap();
    std::fs::rename(hidden, path).unwrap();
}

/// Open connections until one presents `name`.
async fn until_presented(address: SocketAddr, client: &tokio_rustls::TlsConnector, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let presented = Connection::open(address, client).await.map(|c| c.presented);
        if presented.as_deref().ok() == Some(name) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never presented {name}; last {presented:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_a_verified_certificate_and_takes_up_renewals_without_dropping_connections() {
    let authority = Authority::new();
    let client = authority.client();
    let (api_port, dashboard_port) = (free_port(), free_port());
    // The connection kept open across the renewal waits for it between requests: longer than the default idle
    // bound on a busy machine.
    let workdir = Workdir::new(
        &format!(
            "[server]\napi_listen = \"127.0.0.1:{api_port}\"\nheader_timeout = \"5m\"\n\n\
             [dashboard]\nenabled = true\nlisten = \"127.0.0.1:{dashboard_port}\"\n\n\
             [tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n"
        ),
        &[],
    );
    // The configured names are links into a store, as certbot's `live` folder links into `archive`.
    let (tls, store) = (workdir.path().join("tls"), workdir.path().join("store"));
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let (cert, key) = authority.server("cert-first");
    std::fs::write(store.join("cert-1.pem"), &cert).unwrap();
    std::fs::write(store.join("key-1.pem"), &key).unwrap();
    std::os::unix::fs::symlink(store.join("cert-1.pem"), tls.join("cert.pem")).unwrap();
    std::os::unix::fs::symlink(store.join("key-1.pem"), tls.join("key.pem")).unwrap();

    let mut child = selfmon_command(&workdir)
        .arg("serve")
        .env("SELFMON_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, log) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let dashboard: SocketAddr = format!("127.0.0.1:{dashboard_port}").parse().unwrap();
    until_presented(api, &client, "first").await;

    let mut kept = Connection::open(api, &client).await.unwrap();
    let (status, _, body) = kept.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(reqwest::get(format!("http://{api}/health")).await.is_err(), "plain HTTP gets no answer");
    let mut page = Connection::open(dashboard, &client).await.unwrap();
    let (status, headers, _) = page.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    let (_, api_headers, _) = kept.get("/health").await;
    assert!(!api_headers.contains_key("strict-transport-security"), "HSTS is the dashboard's");

    // A renewal put in place by replacing the links: taken up by new connections; the open one carries on.
    let (cert, key) = authority.server("cert-renewed");
    std::fs::write(store.join("cert-2.pem"), &cert).unwrap();
    std::fs::write(store.join("key-2.pem"), &key).unwrap();
    for (link, target) in [("key.pem", "key-2.pem"), ("cert.pem", "cert-2.pem")] {
        let hidden = tls.join(format!(".{link}.new"));
        std::os::unix::fs::symlink(store.join(target), &hidden).unwrap();
        std::fs::rename(hidden, tls.join(link)).unwrap();
    }
    until_presented(api, &client, "renewed").await;
    until_presented(dashboard, &client, "renewed").await;
    assert_eq!(kept.get("/health").await.0, 200, "the connection opened before the renewal still answers");
    assert_eq!(kept.presented, "first");

    // A certificate whose key is another's is not taken up: the log says so, and the current one stays.
    let (mismatched, _) = authority.server("cert-mismatched");
    replace(&store.join("cert-2.pem"), &mismatched);
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let line = log.recv_timeout(PATIENCE).expect("the log said nothing of the refused certificate");
        if line.contains("was not reloaded") {
            assert!(line.contains("is not the key of the certificate"), "{line}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the log said nothing of the refused certificate");
    }
    assert_eq!(Connection::open(api, &client).await.unwrap().presented, "renewed");

    // Files changed where nothing watches them (the store, behind the links) are read again on SIGHUP.
    let (cert, key) = authority.server("cert-signalled");
    std::fs::write(store.join("key-2.pem"), &key).unwrap();
    std::fs::write(store.join("cert-2.pem"), &cert).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    until_presented(api, &client, "signalled").await;

    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_broken_certificate_pair_stops_start_up_naming_the_file() {
    let authority = Authority::new();
    let (cert, key) = authority.server("cert-first");
    let (_, other_key) = authority.server("cert-renewed");
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n";
    for (files, expected) in [
        (vec![("key.pem", key.as_str())], "`[tls] cert_file` {dir}/cert.pem: cannot read"),
        (vec![("cert.pem", cert.as_str())], "`[tls] key_file` {dir}/key.pem: cannot read"),
        (vec![("cert.pem", cert.as_str()), ("key.pem", "not a key")], "key.pem: holds no private key"),
        (vec![("cert.pem", garbage), ("key.pem", key.as_str())], "`[tls] cert_file` {dir}/cert.pem: is not PEM"),
        (
            vec![("cert.pem", cert.as_str()), ("key.pem", other_key.as_str())],
            "key.pem is not the key of the certificate in `[tls] cert_file` {dir}/cert.pem",
        ),
    ] {
        let workdir = Workdir::new("[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n", &[]);
        let expected = expected.replace("{dir}", &workdir.path().display().to_string());
        for (name, text) in &files {
            std::fs::write(workdir.path().join(name), text).unwrap();
        }
        let output = selfmon_command(&workdir).args(["config", "check"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(&expected), "{files:?}: {stderr}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = selfmon::app::serve(workdir.config(), listener, std::future::pending()).await.unwrap_err();
        assert!(refused.to_string().contains(&expected), "{refused}");
    }
    let workdir = Workdir::new("[tls]\ncert_file = \"cert.pem\"\n", &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = selfmon::app::serve(workdir.config(), listener, std::future::pending()).await.unwrap_err();
    assert!(refused.to_string().contains("`[tls] cert_file` is set without `[tls] key_file`"), "{refused}");
}
