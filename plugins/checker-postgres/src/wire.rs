//! Just enough of PostgreSQL's frontend/backend protocol (version 3) for a health check: connect, start up,
//! authenticate (trust, cleartext, MD5, SCRAM-SHA-256), run simple queries, say goodbye.
//!
//! Message layouts: <https://www.postgresql.org/docs/current/protocol-message-formats.html>;
//! authentication flow: <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP>.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use selfmon_sdk::tcp::{self, TcpStream};

/// The longest message accepted from the server; the check's own query returns one short row.
const MAX_MESSAGE: u32 = 16 << 20;

/// Why talking to the server failed, in the terms an operator needs.
#[derive(Debug)]
pub enum Failure {
    /// The network: refused, unreachable, not granted, timed out.
    Connect(tcp::Error),
    /// The connection broke or the server spoke something else than PostgreSQL.
    Io(String),
    /// The server answered with an error.
    Server { code: String, message: String },
    /// The server wants a password and none is configured.
    NoPassword { method: &'static str },
    /// The server offered only authentication methods this check does not speak.
    Unsupported(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Server { code, message } => write!(f, "{message} (SQLSTATE {code})"),
            Self::NoPassword { method } => write!(
                f,
                "the server asks for a password ({method}) and none is set (`[check.secrets] password` or DB_PASSWORD)"
            ),
            Self::Unsupported(what) => {
                write!(f, "the server offers no authentication method this check speaks: {what}")
            }
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Io(format!("the connection failed: {e}"))
    }
}

/// An authenticated session.
pub struct Session {
    stream: TcpStream,
    buffer: BytesMut,
    /// `ParameterStatus` values the server sent at start-up (`server_version`, ...).
    pub parameters: Vec<(String, String)>,
}

/// Where and as whom to log in.
pub struct Login<'a> {
    pub address: &'a str,
    pub user: &'a str,
    pub database: &'a str,
    pub password: Option<&'a str>,
    pub timeout: Duration,
}

impl Session {
    pub fn connect(login: &Login<'_>) -> Result<Self, Failure> {
        let stream = tcp::connect(login.address, login.timeout).map_err(Failure::Connect)?;
        let mut session = Self { stream, buffer: BytesMut::with_capacity(8192), parameters: Vec::new() };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [("user", login.user), ("database", login.database), ("application_name", "selfmon")],
            &mut out,
        )?;
        session.send(&out)?;
        session.authenticate(login)?;
        // After AuthenticationOk: parameters and key data until the server is ready.
        loop {
            match session.receive()? {
                Message::ParameterStatus(body) => {
                    session.parameters.push((body.name()?.to_string(), body.value()?.to_string()));
                }
                Message::ReadyForQuery(_) => return Ok(session),
                Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => {}
            }
        }
    }

    fn authenticate(&mut self, login: &Login<'_>) -> Result<(), Failure> {
        let mut out = BytesMut::new();
        loop {
            out.clear();
            match self.receive()? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let password = login.password.ok_or(Failure::NoPassword { method: "cleartext" })?;
                    frontend::password_message(password.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = login.password.ok_or(Failure::NoPassword { method: "MD5" })?;
                    let hash = md5_hash(login.user.as_bytes(), password.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mechanisms: Vec<String> = body.mechanisms().map(|m| Ok(m.to_string())).collect()?;
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(Failure::Unsupported(mechanisms.join(", ")));
                    }
                    let password = login.password.ok_or(Failure::NoPassword { method: "SCRAM-SHA-256" })?;
                    self.scram(password)?;
                    continue;
                }
                Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => return Err(Failure::Unsupported("an authentication request this check does not know".into())),
            }
            self.send(&out)?;
        }
    }

    fn scram(&mut self, password: &str) -> Result<(), Failure> {
        let mut scram = sasl::ScramSha256::new(password.as_bytes(), sasl::ChannelBinding::unsupported());
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut out)?;
        self.send(&out)?;
        match self.receive()? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data())?,
            Message::ErrorResponse(body) => return Err(server_error(&body)),
            _ => return Err(Failure::Io("unexpected message during SCRAM authentication".into())),
        }
        out.clear();
        frontend::sasl_response(scram.message(), &mut out)?;
        self.send(&out)?;
        match self.receive()? {
            Message::AuthenticationSaslFinal(body) => {
                scram.finish(body.data()).map_err(|e| Failure::Io(format!("the server's SCRAM proof is wrong: {e}")))
            }
            Message::ErrorResponse(body) => Err(server_error(&body)),
            _ => Err(Failure::Io("unexpected message during SCRAM authentication".into())),
        }
    }

    /// Run one simple query and return its rows, every column as text (`None` for NULL).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Failure> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&out)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.receive()? {
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let row = body
                        .ranges()
                        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()?;
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(server_error(&body)),
                Message::ReadyForQuery(_) => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// Say goodbye so the server does not log an unexpected EOF.
    pub fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(&out);
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn receive(&mut self) -> Result<Message, Failure> {
        loop {
            // A message is a type byte and a length; a length no PostgreSQL server would send means this is not one
            // (and must not make the plugin reserve gigabytes).
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]);
                if !(4..=MAX_MESSAGE).contains(&length) {
                    return Err(Failure::Io(format!("this is not a PostgreSQL server (a message of {length} bytes)")));
                }
            }
            if let Some(message) = Message::parse(&mut self.buffer)? {
                return Ok(message);
            }
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(Failure::Io("the server closed the connection".into()));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

fn server_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> Failure {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    Failure::Server { code, message }
}
