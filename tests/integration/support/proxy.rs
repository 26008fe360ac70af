//! A forward HTTP proxy on loopback, as an office's or a cluster's egress proxy is: a plain HTTP request in
//! absolute form is forwarded, HTTPS goes through a `CONNECT` tunnel (RFC 9110 9.3.6). It resolves names itself
//! (every `.invalid` name to one upstream, so a request that arrives there can only have come through the proxy)
//! and records the first line of every request it was sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most a request's head may take.
const HEAD_BYTES: usize = 64 * 1024;

pub struct Proxy {
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// A proxy sending requests for `.invalid` names to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, log.clone()));
            }
        });
        Self { url, seen }
    }

    /// The first lines of the requests it was sent, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) if head.len() + read <= HEAD_BYTES => head.extend_from_slice(&chunk[..read]),
            Ok(_) => return,
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let first = text.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(first.clone());
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else { return };
    let connect_to = |authority: &str| -> String {
        let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
        if host.ends_with(".invalid") { upstream.to_string() } else { authority.to_string() }
    };
    if method == "CONNECT" {
        let Ok(mut server) = TcpStream::connect(connect_to(target)).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        server.write_all(&head[end..]).await.unwrap_or_default();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let Ok(uri) = target.parse::<http::Uri>() else { return };
    let Some(authority) = uri.authority() else { return };
    let authority = if authority.port().is_some() { authority.to_string() } else { format!("{authority}:80") };
    let Ok(mut server) = TcpStream::connect(connect_to(&authority)).await else { return };
    // Origin form upstream, one request per connection so that every request is seen here.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let rest_of_head: String = text
        .split("\r\n")
        .skip(1)
        .filter(|line| !line.is_empty() && !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    let forwarded = format!("{method} {path} {version}\r\n{rest_of_head}connection: close\r\n\r\n");
    if server.write_all(forwarded.as_bytes()).await.is_err() || server.write_all(&head[end..]).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
