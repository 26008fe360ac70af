//! The built-in network checkers against real servers on loopback: `tcp` (connect, send, expect).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{Workdir, closed_port, run_once, selfmon_command};

/// A TCP server on loopback that runs `serve` for every connection.
async fn server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connects_sends_and_expects_against_real_servers() {
    // A mail server's banner, as SMTP greets (RFC 5321 4.2).
    let banner = server(|mut stream| async move {
        let _ = stream.write_all(b"220 mail.test ESMTP ready\r\n").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    // Redis' inline PING (https://redis.io/docs/latest/commands/ping/): `+PONG`, or an error for anything else.
    let redis = server(|stream| async move {
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        if lines.read_line(&mut line).await.is_ok() {
            let reply: &[u8] = if line.trim() == "PING" { b"+PONG\r\n" } else { b"-ERR unknown command\r\n" };
            let _ = lines.get_mut().write_all(reply).await;
        }
    })
    .await;
    // Accepts and never says a word.
    let silent = server(|stream| async move {
        let _held = stream;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    // A reply a byte at a time, each well within any per-read timeout, never holding what is expected.
    let trickle = server(|mut stream| async move {
        for _ in 0..40 {
            if stream.write_all(b".").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The expected text split across two writes.
    let split = server(|mut stream| async move {
        let _ = stream.write_all(b"+PO").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stream.write_all(b"NG\r\n").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let closed = closed_port().await;
    let config = format!(
        r#"
[[check]]
name = "port"
plugin = "tcp"
target = "{banner}"

[[check]]
name = "banner"
plugin = "tcp"
target = "{banner}"
config = {{ expect = "220 " }}

[[check]]
name = "pong"
plugin = "tcp"
target = "{redis}"
config = {{ send = "PING\r\n", expect = "+PONG" }}

[[check]]
name = "wrong-reply"
plugin = "tcp"
target = "{redis}"
config = {{ send = "HELLO\r\n", expect = "+PONG" }}

[[check]]
name = "silent"
plugin = "tcp"
target = "{silent}"
timeout = "1s"
config = {{ expect = "220" }}

[[check]]
name = "trickle"
plugin = "tcp"
target = "{trickle}"
timeout = "1s"
config = {{ expect = "220" }}

[[check]]
name = "split"
plugin = "tcp"
target = "{split}"
config = {{ expect = "+PONG" }}

[[check]]
name = "closed"
plugin = "tcp"
target = "{closed}"
"#
    );
    let runs = run_once(&Workdir::new(&config, &[])).await;
    let seen = |name: &str| {
        let run = &runs[name];
        (run.health.as_str().to_string(), run.summary.clone(), run.error.clone())
    };
    let (health, summary, _) = seen("port");
    assert_eq!(health, "healthy", "{summary}");
    assert!(summary.starts_with(&format!("TCP {banner} connected in ")), "{summary}");
    let (health, summary, _) = seen("banner");
    assert_eq!(health, "healthy", "{summary}");
    assert!(summary.ends_with(", reply `220 mail.test ESMTP ready`"), "{summary}");
    let (health, summary, _) = seen("pong");
    assert_eq!((health.as_str(), summary.ends_with("reply `+PONG`")), ("healthy", true), "{summary}");
    let (health, summary, _) = seen("wrong-reply");
    assert_eq!(health, "unhealthy", "{summary}");
    assert!(
        summary.ends_with("but the reply lacks `+PONG` (the server closed the connection): `-ERR unknown command`"),
        "{summary}"
    );
    let (health, summary, error) = seen("silent");
    assert_eq!((health.as_str(), error), ("unhealthy", None), "a silent server is the check's finding: {summary}");
    assert!(summary.contains("but no reply: no more reply in time"), "{summary}");
    let (health, summary, error) = seen("trickle");
    assert_eq!((health.as_str(), error), ("unhealthy", None), "a reply that trickles past the deadline: {summary}");
    assert!(summary.contains("but the reply lacks `220` (no more reply in time): `....."), "{summary}");
    let (health, summary, _) = seen("split");
    assert_eq!(health, "healthy", "a match across two reads: {summary}");
    let (health, summary, _) = seen("closed");
    assert_eq!(health, "unhealthy");
    assert_eq!(summary, format!("cannot connect to {closed}: connection refused"));

    let metrics: Vec<&str> = runs["pong"].metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(metrics, ["bytes_received", "connect_time_seconds", "response_time_seconds"]);
    assert_eq!(runs["pong"].metrics[0].value, 7.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_check_without_host_and_port_is_a_config_error() {
    for (config, expected) in [
        ("target = \"cache.internal\"", "`target` `cache.internal` is not host:port"),
        ("target = \"redis://cache.internal:6379\"", "`target` is a URL: write host:port"),
        ("target = \"cache.internal:6379\"\n[check.config]\nexpect = \"\"", "`expect` is empty"),
    ] {
        let workdir = Workdir::new(&format!("[[check]]\nname = \"cache\"\nplugin = \"tcp\"\n{config}\n"), &[]);
        let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
        assert!(error.contains("check `cache`") && error.contains(expected), "{error}");
        // The plugin's reason names a key: the error points at that key's line.
        let written = std::fs::read_to_string(workdir.config_file()).unwrap();
        let key = expected.trim_start_matches('`').split('`').next().unwrap();
        let line = written.lines().position(|l| l.starts_with(&format!("{key} ="))).unwrap() + 1;
        assert!(error.contains(&format!("line {line}: invalid check `cache`")), "{error}");
    }
}

/// A certificate authority of the test's own, and servers on loopback presenting certificates it signs.
struct Authority {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self { key, params, pem }
    }

    /// A TLS server presenting a certificate for `names`, valid from `from` to `until` days from now, signed by this
    /// authority (or by itself, with `self_signed`).
    async fn server(&self, names: &[&str], from: i64, until: i64, self_signed: bool) -> SocketAddr {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(until);
        let certificate = if self_signed {
            params.self_signed(&key).unwrap()
        } else {
            params.signed_by(&key, &rcgen::Issuer::from_params(&self.params, &self.key)).unwrap()
        };
        serve_tls(&certificate, &key).await
    }

    /// A TLS server presenting a certificate of this authority's own for `name` (a CA certificate, as `openssl req
    /// -x509` makes), and that certificate's PEM.
    async fn serve_itself(&self, name: &str) -> (SocketAddr, String) {
        let mut params = self.params.clone();
        params.subject_alt_names = vec![rcgen::SanType::DnsName(name.try_into().unwrap())];
        let certificate = params.self_signed(&self.key).unwrap();
        (serve_tls(&certificate, &self.key).await, certificate.pem())
    }
}

/// A TLS server on loopback presenting `certificate`: the handshake, then the connection held until the client goes.
async fn serve_tls(certificate: &rcgen::Certificate, key: &rcgen::KeyPair) -> SocketAddr {
    let acceptor = crate::support::fakes::acceptor(certificate.der().clone(), key.serialize_der());
    server(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 64]).await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_judges_trust_names_and_days_left_of_real_certificates() {
    let ca = Authority::new("selfmon test CA");
    let valid = ca.server(&["localhost"], -1, 90, false).await;
    let soon = ca.server(&["localhost"], -60, 10, false).await;
    let closing = ca.server(&["localhost"], -80, 3, false).await;
    let expired = ca.server(&["localhost"], -30, -2, false).await;
    let misnamed = ca.server(&["other.test"], -1, 90, false).await;
    let stranger = ca.server(&["localhost"], -1, 90, true).await;
    let wildcard = ca.server(&["*.localhost", "localhost"], -1, 90, false).await;
    // A server whose certificate is its own authority's, as `openssl req -x509` makes: trusted once pinned.
    let (pinned_server, pinned_pem) = Authority::new("localhost").serve_itself("localhost").await;
    // Not TLS at all: a mail server's greeting.
    let plain = server(|mut stream| async move {
        let _ = stream.write_all(b"220 mail.test ESMTP ready\r\n").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    let closed = closed_port().await;
    let check = |name: &str, target: String, extra: &str| {
        format!(
            "[[check]]\nname = \"{name}\"\nplugin = \"tls\"\ntarget = \"{target}\"\nca_file = \"ca.pem\"\n{extra}\n"
        )
    };
    let port = |address: SocketAddr| address.port();
    let config = [
        check("valid", format!("https://localhost:{}/health", port(valid)), ""),
        check("soon", format!("localhost:{}", port(soon)), ""),
        check("closing", format!("localhost:{}", port(closing)), ""),
        check("expired", format!("localhost:{}", port(expired)), ""),
        check("misnamed", format!("localhost:{}", port(misnamed)), ""),
        check("stranger", format!("localhost:{}", port(stranger)), ""),
        check("reported-only", format!("localhost:{}", port(stranger)), "config = { verify = false }"),
        check(
            "wildcard",
            format!("localhost:{}", port(wildcard)),
            "config = { names = [\"api.localhost\", \"localhost\"] }",
        ),
        check(
            "uncovered",
            format!("localhost:{}", port(valid)),
            "config = { names = [\"localhost\", \"www.localhost\"] }",
        ),
        check("closed", format!("localhost:{}", closed.port()), ""),
        check("ca-as-server", format!("localhost:{}", port(pinned_server)), "config = { names = [\"localhost\"] }"),
        check("plain", format!("localhost:{}", port(plain)), ""),
        format!(
            "[[check]]\nname = \"pinned\"\nplugin = \"tls\"\ntarget = \"localhost:{}\"\nca_file = \"pinned.pem\"\n",
            port(pinned_server)
        ),
        // Pinned, but asked for a name it does not cover: its names count as any certificate's do.
        format!(
            "[[check]]\nname = \"pinned-misnamed\"\nplugin = \"tls\"\ntarget = \"localhost:{}\"\nca_file = \
             \"pinned.pem\"\nconfig = {{ server_name = \"other.test\", names = [\"localhost\"] }}\n",
            port(pinned_server)
        ),
        // The same subject with another key pins nothing.
        format!(
            "[[check]]\nname = \"pinned-other-key\"\nplugin = \"tls\"\ntarget = \"localhost:{}\"\nca_file = \
             \"impostor.pem\"\n",
            port(pinned_server)
        ),
    ]
    .concat();
    let workdir = Workdir::new(&config, &[]);
    std::fs::write(workdir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(workdir.path().join("pinned.pem"), &pinned_pem).unwrap();
    std::fs::write(workdir.path().join("impostor.pem"), Authority::new("localhost").pem).unwrap();
    let runs = run_once(&workdir).await;
    let seen = |name: &str| (runs[name].health.as_str().to_string(), runs[name].summary.clone());
    let metric = |name: &str, metric: &str| runs[name].metrics.iter().find(|m| m.name == metric).map(|m| m.value);

    let (health, summary) = seen("valid");
    assert_eq!(health, "healthy", "{summary}");
    assert!(summary.starts_with("TLSv1.3 certificate for localhost valid 90 more days (until "), "{summary}");
    assert!(summary.ends_with(", issued by selfmon test CA"), "{summary}");
    let days = metric("valid", "days_to_expiry").unwrap();
    assert!((89.9..=90.0).contains(&days), "{days}");
    assert_eq!((metric("valid", "trusted"), metric("valid", "chain_length")), (Some(1.0), Some(1.0)));
    for (name, health, said) in [
        ("soon", "degraded", "expires in 10.0 days"),
        ("closing", "unhealthy", "expires in 3.0 days"),
        ("expired", "unhealthy", "expired 2 days ago"),
        ("misnamed", "unhealthy", "is not trusted: the certificate is not valid for `localhost`"),
        ("stranger", "unhealthy", "is not trusted: issued by an authority this check does not trust"),
        ("uncovered", "unhealthy", "does not cover `www.localhost`"),
        ("closed", "unhealthy", "connection refused"),
        ("soon", "degraded", "fewer than `days_degraded` (21)"),
        ("ca-as-server", "unhealthy", "is not trusted: the server presents a CA certificate as its own (give"),
        ("plain", "unhealthy", "failed: the server did not answer with TLS (is this a TLS port?)"),
        ("pinned-misnamed", "unhealthy", "is not trusted: the certificate is not valid for `other.test`"),
        ("pinned-other-key", "unhealthy", "is not trusted: the server presents a CA certificate as its own"),
    ] {
        let (found, summary) = seen(name);
        assert_eq!(found, health, "{name}: {summary}");
        assert!(summary.contains(said), "{name}: {summary}");
    }
    let (health, summary) = seen("reported-only");
    assert_eq!(health, "healthy", "verify = false reports an untrusted chain without failing: {summary}");
    assert_eq!(metric("reported-only", "trusted"), Some(0.0));
    assert!(runs["reported-only"].details.iter().any(|(k, v)| k == "untrusted" && v.contains("does not trust")));
    assert_eq!(seen("wildcard").0, "healthy", "{}", seen("wildcard").1);
    let (health, summary) = seen("pinned");
    assert_eq!(health, "healthy", "a certificate given in `ca_file` is trusted as the server's own: {summary}");
    assert_eq!(metric("pinned", "trusted"), Some(1.0));

    // The same from the command line, the built-in named without a path, with and without the pinned certificate.
    let run = |ca_file: Option<&str>| {
        let mut command = selfmon_command(&workdir);
        command.args(["plugin", "run", "tls", "--target", &format!("localhost:{}", port(pinned_server))]);
        if let Some(file) = ca_file {
            command.arg("--ca-file").arg(workdir.path().join(file));
        }
        let output = command.output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, stdout) = run(Some("pinned.pem"));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("tls: healthy - TLSv1.3 certificate for localhost valid"), "{stdout}");
    let (code, stdout) = run(None);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("the server presents a CA certificate as its own"), "{stdout}");
    let missing = selfmon_command(&workdir).args(["plugin", "run", "tlz"]).output().unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        said.contains("tlz: cannot read") && said.contains("built-in plugins are named without a path: "),
        "{said}"
    );
}

/// A DNS server on loopback (UDP), answering from a table as an authoritative server does (RFC 1035 4.1): the
/// records of a name and type, an empty answer for a name without that type, NXDOMAIN for a name it does not know,
/// and SERVFAIL for `broken.` names (a zone it cannot load).
async fn dns_server(records: &[(&str, &str, &str)]) -> SocketAddr {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};

    let table: Vec<(Name, Record)> = records
        .iter()
        .map(|(name, kind, data)| {
            let owner = Name::from_ascii(name).unwrap();
            let rdata = match *kind {
                "A" => RData::A(data.parse::<std::net::Ipv4Addr>().unwrap().into()),
                "MX" => {
                    let (preference, exchange) = data.split_once(' ').unwrap();
                    RData::MX(rdata::MX::new(preference.parse().unwrap(), Name::from_ascii(exchange).unwrap()))
                }
                "TXT" => RData::TXT(rdata::TXT::new(vec![data.to_string()])),
                other => panic!("no {other} records in this server"),
            };
            (owner.clone(), Record::from_rdata(owner, 300, rdata))
        })
        .collect();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        while let Ok((read, from)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..read]) else { continue };
            let Some(question) = query.queries.first().cloned() else { continue };
            let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
            answer.metadata.authoritative = true;
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.add_query(question.clone());
            let known: Vec<&Record> = table
                .iter()
                .filter(|(owner, _)| owner.eq_case(question.name()) || *owner == *question.name())
                .map(|(_, record)| record)
                .collect();
            if question.name().to_ascii().starts_with("broken.") {
                answer.metadata.response_code = ResponseCode::ServFail;
            } else if known.is_empty() {
                answer.metadata.response_code = ResponseCode::NXDomain;
            }
            let wanted = question.query_type();
            answer.add_answers(
                known.into_iter().filter(|r| r.record_type() == wanted || wanted == RecordType::ANY).cloned(),
            );
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_looks_up_records_through_a_named_server_and_the_systems_resolver() {
    let server = dns_server(&[
        ("example.test.", "A", "192.0.2.10"),
        ("example.test.", "MX", "10 mail.example.test."),
        ("example.test.", "TXT", "v=spf1 -all"),
    ])
    .await;
    let check = |name: &str, target: &str, config: &str, granted: bool| {
        let allow = if granted { format!("allow = [\"{server}\"]\n") } else { String::new() };
        format!(
            "[[check]]\nname = \"{name}\"\nplugin = \"dns\"\ntarget = \"{target}\"\n{allow}\
             [check.config]\nserver = \"{server}\"\n{config}\n"
        )
    };
    let config = [
        check("mx", "example.test", "record = \"MX\"\nexpect = [\"10 mail.example.test\"]", true),
        check("txt", "example.test", "record = \"TXT\"\nexpect = [\"v=spf1 -all\"]", true),
        check("a", "example.test", "", true),
        check("a-wrong", "example.test", "expect = [\"192.0.2.99\"]", true),
        check("no-aaaa", "example.test", "record = \"AAAA\"", true),
        check("nx", "gone.example.test", "", true),
        check("servfail", "broken.example.test", "", true),
        check("ungranted-server", "example.test", "", false),
        // Through the system's resolver, which answers `localhost` itself (RFC 6761 6.3).
        "[[check]]\nname = \"resolver\"\nplugin = \"dns\"\ntarget = \"localhost\"\nconfig = { expect = [\"127.0.0.1\"] }\n"
            .to_string(),
    ]
    .concat();
    let runs = run_once(&Workdir::new(&config, &[])).await;
    let seen = |name: &str| (runs[name].health.as_str().to_string(), runs[name].summary.clone());
    let (health, summary) = seen("mx");
    assert_eq!(health, "healthy", "{summary}");
    assert!(summary.starts_with(&format!("MX example.test from {server} in ")), "{summary}");
    assert!(summary.ends_with(": 10 mail.example.test."), "{summary}");
    assert_eq!(seen("txt").0, "healthy", "{}", seen("txt").1);
    assert!(seen("a").1.ends_with(": 192.0.2.10"), "{}", seen("a").1);
    for (name, said) in [
        ("a-wrong", ": 192.0.2.10; missing `192.0.2.99`"),
        ("no-aaaa", ": no AAAA records"),
        ("nx", ": NXDOMAIN"),
        ("servfail", ": SERVFAIL"),
        (
            "ungranted-server",
            &format!("is refused by selfmon: the check is not granted it (add `{server}` to its `allow`)"),
        ),
    ] {
        let (health, summary) = seen(name);
        assert_eq!(health, "unhealthy", "{name}: {summary}");
        assert!(summary.ends_with(said), "{name}: {summary}");
    }
    let (health, summary) = seen("resolver");
    assert_eq!(health, "healthy", "{summary}");
    assert!(summary.starts_with("A localhost from system resolver in "), "{summary}");
    let ttl = runs["mx"].metrics.iter().find(|m| m.name == "ttl_seconds").map(|m| m.value);
    assert_eq!(ttl, Some(300.0));
}
