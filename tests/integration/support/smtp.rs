//! An SMTP server for tests: ESMTP with STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4954), keeping every message it
//! accepts. It refuses mail before the client has switched to TLS, as a server that requires STARTTLS does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::fakes::TestCa;

/// A message as the server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The whole message, headers and body, with the dot-stuffing undone.
    pub data: String,
    /// The `AUTH PLAIN` login, `user:password`.
    pub login: Option<String>,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let ca = TestCa::new();
        let acceptor = ca.acceptor();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, mails) = (acceptor.clone(), kept.clone());
                tokio::spawn(async move {
                    let mut plain = BufReader::new(stream);
                    if plain.get_mut().write_all(b"220 localhost ESMTP test\r\n").await.is_err() {
                        return;
                    }
                    if let Some(Upgrade) = session(&mut plain, false, &mails).await
                        && let Ok(tls) = acceptor.accept(plain.into_inner()).await
                    {
                        session(&mut BufReader::new(tls), true, &mails).await;
                    }
                });
            }
        });
        Self { addr, ca_pem: ca.pem, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// The client asked for STARTTLS and was told to go ahead.
struct Upgrade;

/// One phase of a session: before STARTTLS (`tls` false) or after it.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    tls: bool,
    mails: &Mutex<Vec<Mail>>,
) -> Option<Upgrade> {
    let mut envelope: Option<Mail> = None;
    let mut login = None;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let command = line.trim_end().to_string();
        let verb = command.split(' ').next().unwrap_or_default().to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" if tls => "250-localhost\r\n250 AUTH PLAIN\r\n".into(),
            "EHLO" => "250-localhost\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n".into(),
            "STARTTLS" if !tls => {
                stream.get_mut().write_all(b"220 go ahead\r\n").await.ok()?;
                return Some(Upgrade);
            }
            "AUTH" if tls => {
                let encoded = command.split(' ').nth(2).unwrap_or_default();
                let decoded = base64_decode(encoded);
                let parts: Vec<&str> = decoded.split('\0').collect();
                login = parts.get(1..3).map(|p| p.join(":"));
                "235 2.7.0 accepted\r\n".into()
            }
            "MAIL" if !tls => "530 5.7.0 must issue a STARTTLS command first\r\n".into(),
            "MAIL" => {
                let from = command.split_once(':').map(|(_, a)| a.trim().trim_matches(['<', '>']).to_string());
                envelope = Some(Mail {
                    from: from.unwrap_or_default(),
                    to: Vec::new(),
                    data: String::new(),
                    login: login.clone(),
                });
                "250 ok\r\n".into()
            }
            "RCPT" => {
                if let (Some(mail), Some((_, to))) = (envelope.as_mut(), command.split_once(':')) {
                    mail.to.push(to.trim().trim_matches(['<', '>']).to_string());
                }
                "250 ok\r\n".into()
            }
            "DATA" => {
                stream.get_mut().write_all(b"354 end with .\r\n").await.ok()?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.ok()? == 0 {
                        return None;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if let Some(mut mail) = envelope.take() {
                    mail.data = data;
                    mails.lock().unwrap().push(mail);
                }
                "250 queued\r\n".into()
            }
            "RSET" | "NOOP" => "250 ok\r\n".into(),
            "QUIT" => {
                let _ = stream.get_mut().write_all(b"221 bye\r\n").await;
                return None;
            }
            _ => "502 command not implemented\r\n".into(),
        };
        stream.get_mut().write_all(reply.as_bytes()).await.ok()?;
    }
}

fn base64_decode(text: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
