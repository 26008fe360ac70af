//! `kind = "email"`: a plain-text message over SMTP, STARTTLS by default.

use lettre::AsyncTransport;
use lettre::message::Mailbox;

use super::{description, link, runbook, title};
use crate::alerting::dispatch::Notification;
use crate::config::{ChannelConfig, Secret, SmtpSecurity};
use crate::events::delivery::{ATTEMPT_TIMEOUT, Failure};
use crate::storage::{rfc3339, to_millis};

/// An SMTP server and the message's addresses.
pub struct Email {
    pub transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
}

impl Email {
    /// Send one message: the server's answer code, or why it was not taken.
    pub async fn send(&self, subject: &str, body: &str) -> Result<Option<u16>, Failure> {
        let mut builder = lettre::Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mail = builder
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| Failure::new(None, format!("cannot build the message: {e}")))?;
        self.transport.send(mail).await.map(|response| Some(response.code().into())).map_err(|e| {
            let failure = Failure::new(e.status().map(u16::from), format!("SMTP: {e}"));
            // A 5xx reply is the server refusing this message for good (RFC 5321 4.2.1).
            Failure { retry: !e.is_permanent(), ..failure }
        })
    }
}

pub fn transport(
    server: &str,
    channel: &ChannelConfig,
    password: Option<Secret>,
    ca_file: &Option<std::path::PathBuf>,
) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("`smtp`: `{port}` is not a port"))?),
        None => (server, if channel.security == SmtpSecurity::Tls { 465 } else { 587 }),
    };
    let mut parameters = TlsParameters::builder(host.to_string());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| format!("`ca_file` {}: {e}", path.display()))?;
        parameters = parameters.add_root_certificate(certificate);
    }
    let parameters = parameters.build().map_err(|e| format!("`smtp`: TLS for `{host}`: {e}"))?;
    let tls = match channel.security {
        SmtpSecurity::Starttls => Tls::Required(parameters),
        SmtpSecurity::Tls => Tls::Wrapper(parameters),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(ATTEMPT_TIMEOUT));
    match (&channel.username, password) {
        (Some(user), Some(password)) => {
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        (None, None) => {}
        _ => return Err("`username` and `password` go together".into()),
    }
    Ok(builder.build())
}

/// A subject like Alertmanager's and a plain-text body: one paragraph per alert.
pub fn message(notification: &Notification, external_url: &str) -> (String, String) {
    let mut body = String::new();
    for notice in &notification.alerts {
        body.push_str(&format!(
            "[{}] {} ({})\n{}\nSince: {}\n",
            notice.status.as_str().to_uppercase(),
            notice.labels.get("alertname").unwrap_or(&notice.rule),
            notice.severity,
            notice.summary,
            rfc3339(to_millis(notice.fired_at))
        ));
        if let Some(resolved) = notice.resolved_at {
            body.push_str(&format!("Resolved: {}\n", rfc3339(to_millis(resolved))));
        }
        for (k, v) in &notice.labels {
            body.push_str(&format!("  {k} = {v}\n"));
        }
        if let Some(description) = description(notice) {
            body.push_str(&format!("Description: {description}\n"));
        }
        if let Some(url) = runbook(notice) {
            body.push_str(&format!("Runbook: {url}\n"));
        }
        if let Some(link) = link(external_url, notice) {
            body.push_str(&format!("Details: {link}\n"));
        }
        body.push('\n');
    }
    body.push_str("-- \nselfmon\n");
    (format!("{} (selfmon)", title(notification)), body)
}
