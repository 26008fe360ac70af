//! The built-in network checkers against real servers on loopback: `tcp` (connect, send, expect).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{Workdir, closed_port, run_once};

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
        ("target = \"cache.internal\"", "`target` `cache.internal` must be host:port"),
        ("target = \"cache.internal:6379\"\nconfig = { expect = \"\" }", "`expect` is empty"),
    ] {
        let workdir = Workdir::new(&format!("[[check]]\nname = \"cache\"\nplugin = \"tcp\"\n{config}\n"), &[]);
        let error = selfmon::app::host::Host::build(workdir.config()).await.err().unwrap().to_string();
        assert!(error.contains("check `cache`") && error.contains(expected), "{error}");
    }
}
