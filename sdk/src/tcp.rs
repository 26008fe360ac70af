//! TCP connections over `wasi:sockets`, for checks that speak a protocol themselves (PostgreSQL, Redis, SMTP).
//!
//! Only the check's `target` and the addresses in its `allow` list can be reached; selfmon refuses the rest, and
//! [`connect`] reports that as [`Error::Denied`] instead of a bare "permission denied".
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), selfmon_sdk::Error> {
//! let mut stream = selfmon_sdk::tcp::connect("db.internal:5432", Duration::from_secs(3))?;
//! stream.write_all(b"...")?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use std::net::TcpStream;

/// Resolve `host:port` and connect to the first address that accepts, each attempt bounded by `timeout`. Reads and
/// writes on the returned stream time out after `timeout` too.
pub fn connect(address: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => Error::Denied { address: address.to_string() },
            _ => Error::Resolve { address: address.to_string(), reason: e.to_string() },
        })?
        .collect();
    let mut last = None;
    for socket in &addresses {
        match TcpStream::connect_timeout(socket, timeout) {
            Ok(stream) => {
                // A refused non-blocking connect can come back as success from wasi-libc; the socket then has no
                // peer and its pending error says why.
                if let Some(error) = stream.take_error().ok().flatten() {
                    last = Some(error);
                    continue;
                }
                if let Err(error) = stream.peer_addr() {
                    last = Some(io::Error::new(io::ErrorKind::ConnectionRefused, error));
                    continue;
                }
                // Not every WASI implementation supports socket timeouts; the host's deadline still bounds the call.
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::Denied { address: address.to_string() });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => {
            Error::Timeout { address: address.to_string(), after: timeout }
        }
        Some(e) => Error::Connect { address: address.to_string(), reason: reason(&e) },
        None => Error::Resolve { address: address.to_string(), reason: "no addresses".into() },
    })
}

/// What an operator needs to know about a failed connect, without the errno numbers WASI adds.
fn reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => error.to_string(),
    }
}

/// Why a connection could not be made. The messages are written for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// selfmon refused the connection: the check is not granted this address.
    Denied {
        /// The `host:port` asked for.
        address: String,
    },
    /// The host name could not be resolved.
    Resolve { address: String, reason: String },
    /// Every address refused or failed.
    Connect { address: String, reason: String },
    /// No address answered in time.
    Timeout { address: String, after: Duration },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { address } => write!(
                f,
                "connection to {address} refused by selfmon: the check is not granted this address \
                 (add it to the check's `target` or `allow`)"
            ),
            Self::Resolve { address, reason } => write!(f, "cannot resolve {address}: {reason}"),
            Self::Connect { address, reason } => write!(f, "cannot connect to {address}: {reason}"),
            Self::Timeout { address, after } => {
                write!(f, "connecting to {address} timed out after {} ms", after.as_millis())
            }
        }
    }
}

impl std::error::Error for Error {}
