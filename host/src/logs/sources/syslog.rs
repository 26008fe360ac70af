//! The syslog listener of a `[[log_source]]` of `kind = "syslog"`: messages over UDP (one per datagram) and TCP
//! (RFC 6587: octet counting, `LEN <PRI>...`, or one message per line, chosen by a connection's first byte),
//! parsed and stored in batches.
//!
//! TCP senders are slowed down when storage falls behind (their connection is not read meanwhile); UDP has no way
//! to slow a sender, so datagrams arriving while the listener waits queue in the kernel's socket buffer, and past
//! that the kernel drops them, as with any syslog receiver.
//!
//! Bounded: messages waiting to be stored hold at most [`QUEUE`] messages and [`QUEUE_BYTES`]; a message over
//! [`MAX_LINE_BYTES`] is cut there and stored unparsed with the reason (the rest of it is read and dropped, the
//! connection goes on); one address may hold [`MAX_PER_PEER`] of a source's [`MAX_CONNECTIONS`] connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::Origin;
use crate::logs::ingest::Sink;
use crate::logs::parsing::{MAX_LINE_BYTES, PARSE_BATCH, Parsing};
use crate::runtime::Runtime;
use crate::storage::StorageError;

/// Messages waiting to be parsed, across a source's connections.
pub const QUEUE: usize = 10_000;
/// Bytes of messages waiting to be parsed, across a source's connections.
pub const QUEUE_BYTES: usize = 16 << 20;
/// TCP connections open at once per source.
pub const MAX_CONNECTIONS: usize = 256;
/// TCP connections open at once per source from one address.
pub const MAX_PER_PEER: usize = 16;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// How long a batch waits before it is stored again while the store is full.
const FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a TCP connection may stay quiet before it is closed.
const IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// An address to receive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Listen {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`, HOST an IP address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not udp://ADDRESS:PORT or tcp://ADDRESS:PORT (such as udp://0.0.0.0:5514)");
        let (scheme, address) = text.split_once("://").ok_or_else(bad)?;
        let address: SocketAddr = address.parse().map_err(|_| bad())?;
        match scheme {
            "udp" => Ok(Self::Udp(address)),
            "tcp" => Ok(Self::Tcp(address)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp(address) => write!(f, "udp://{address}"),
            Self::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// A syslog source, ready to bind.
pub struct Listener {
    pub sink: Sink,
    pub runtime: Arc<Runtime>,
    pub parsing: Parsing,
    pub origin: Origin,
}

/// Why a syslog source could not start.
#[derive(Debug, thiserror::Error)]
#[error("log source `{source_name}`: cannot listen on {address}: {error}")]
pub struct BindError {
    pub source_name: String,
    pub address: String,
    pub error: std::io::Error,
}

impl Listener {
    /// Bind every address (all or nothing), then receive until `stop`.
    pub async fn spawn(
        self,
        addresses: &[Listen],
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<(), BindError> {
        let bind_error = |address: &Listen, error| BindError {
            source_name: self.origin.source.clone(),
            address: address.to_string(),
            error,
        };
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for address in addresses {
            match address {
                Listen::Udp(at) => udp.push(UdpSocket::bind(at).await.map_err(|e| bind_error(address, e))?),
                Listen::Tcp(at) => tcp.push(TcpListener::bind(at).await.map_err(|e| bind_error(address, e))?),
            }
        }
        let (sender, queue) = mpsc::channel::<Queued>(QUEUE);
        let messages = Messages { sender, bytes: Arc::new(Semaphore::new(QUEUE_BYTES >> 10)) };
        for socket in udp {
            tracing::info!(source = %self.origin.source, address = ?socket.local_addr().ok(), "Receiving syslog over UDP");
            tasks.spawn(receive_udp(socket, messages.clone(), stop.clone()));
        }
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        for listener in tcp {
            tracing::info!(source = %self.origin.source, address = ?listener.local_addr().ok(), "Receiving syslog over TCP");
            tasks.spawn(accept_tcp(listener, messages.clone(), connections.clone(), tasks.clone(), stop.clone()));
        }
        drop(messages);
        tasks.spawn(self.store(queue, stop));
        Ok(())
    }

    /// Parse and store what arrives, in batches, until every receiver has stopped. While the store is full a batch
    /// is kept and stored again each [`FULL_RETRY`], until `stop`: what is still waiting then is dropped (and said).
    async fn store(self, mut queue: mpsc::Receiver<Queued>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(PARSE_BATCH);
        while queue.recv_many(&mut batch, PARSE_BATCH).await > 0 {
            // The batch's bytes stay counted in the queue until it is stored.
            let (lines, _held): (Vec<String>, Vec<OwnedSemaphorePermit>) =
                std::mem::take(&mut batch).into_iter().unzip();
            loop {
                match self.sink.ingest(&self.runtime, &self.parsing, &self.origin, lines.clone()).await {
                    Ok(_) => {}
                    Err(StorageError::Closed) => return,
                    // Kept until there is room (the storage says once that it is full); meanwhile the queue fills
                    // and TCP senders wait.
                    Err(StorageError::Full(_)) => {
                        tokio::select! {
                            () = tokio::time::sleep(FULL_RETRY) => continue,
                            () = stop.cancelled() => {
                                let dropped = lines.len() + queue.len();
                                tracing::warn!(source = %self.origin.source, dropped, "Stopping with syslog messages the full store could not take; they are dropped");
                                return;
                            }
                        }
                    }
                    // The batch is lost (a sender cannot be asked again); the listener goes on with the next one.
                    Err(error) => {
                        tracing::error!(source = %self.origin.source, %error, "Cannot store syslog messages");
                    }
                }
                break;
            }
        }
    }
}

/// A message waiting to be stored, and its share of [`QUEUE_BYTES`].
type Queued = (String, OwnedSemaphorePermit);

/// Where receivers put messages: into the queue, once it has room for their bytes.
#[derive(Clone)]
struct Messages {
    sender: mpsc::Sender<Queued>,
    /// [`QUEUE_BYTES`], in KiB.
    bytes: Arc<Semaphore>,
}

impl Messages {
    /// Queue a message, waiting for room; false once the store has stopped.
    async fn send(&self, message: String) -> bool {
        let kib = u32::try_from(message.len().div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let Ok(room) = self.bytes.clone().acquire_many_owned(kib).await else { return false };
        self.sender.send((message, room)).await.is_ok()
    }
}

async fn receive_udp(socket: UdpSocket, messages: Messages, stop: CancellationToken) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            () = stop.cancelled() => return,
        };
        let length = match received {
            Ok((length, _)) => length,
            Err(error) => {
                tracing::warn!(%error, "A syslog datagram could not be read");
                continue;
            }
        };
        let text = String::from_utf8_lossy(&buffer[..length]);
        // A datagram is one message; some senders end it with a newline.
        let message = text.trim_end_matches(['\n', '\r', '\0']).to_string();
        if !message.is_empty() && !messages.send(message).await {
            return;
        }
    }
}

async fn accept_tcp(
    listener: TcpListener,
    messages: Messages,
    connections: Arc<tokio::sync::Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "A syslog connection could not be accepted");
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "Refused a syslog connection: {MAX_CONNECTIONS} are open already");
            continue;
        };
        let Some(from_peer) = PeerTurn::take(&peers, peer.ip()) else {
            tracing::warn!(%peer, "Refused a syslog connection: {MAX_PER_PEER} from this address are open already");
            continue;
        };
        let messages = messages.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let _permit = (permit, from_peer);
            tokio::select! {
                result = receive_tcp(stream, &messages) => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "A syslog connection ended");
                    }
                }
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Read one connection's messages. The first byte tells the framing for the whole connection, as rsyslog's own
/// receiver does: a digit starts octet counting (`LEN SP MESSAGE`), anything else (`<PRI>`) a message per line. A
/// connection quiet for [`IDLE`] is closed.
async fn receive_tcp(stream: impl AsyncRead + Unpin, messages: &Messages) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let idle = |error: tokio::time::error::Elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, error);
    let first = tokio::time::timeout(IDLE, reader.fill_buf()).await.map_err(idle)??;
    let counted = first.first().is_some_and(u8::is_ascii_digit);
    loop {
        let mut message = Vec::new();
        if counted {
            let mut prefix = Vec::new();
            let mut limited = (&mut reader).take(12);
            let read = limited.read_until(b' ', &mut prefix);
            if tokio::time::timeout(IDLE, read).await.map_err(idle)?? == 0 {
                return Ok(());
            }
            let length = std::str::from_utf8(prefix.strip_suffix(b" ").unwrap_or_default())
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or_else(|| std::io::Error::other("a frame without a valid length"))?;
            // Kept up to one byte past the most a message may be (so that it is stored cut, and says so); the rest
            // of the frame is read and dropped.
            let kept = length.min(MAX_LINE_BYTES as u64 + 1);
            let mut limited = (&mut reader).take(kept);
            let read = limited.read_to_end(&mut message);
            if (tokio::time::timeout(IDLE, read).await.map_err(idle)?? as u64) < kept {
                return Ok(());
            }
            let (mut rest, mut dropped) = ((&mut reader).take(length - kept), tokio::io::sink());
            let skipped = tokio::io::copy(&mut rest, &mut dropped);
            if tokio::time::timeout(IDLE, skipped).await.map_err(idle)?? < length - kept {
                return Ok(());
            }
        } else {
            let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
            let read = limited.read_until(b'\n', &mut message);
            if tokio::time::timeout(IDLE, read).await.map_err(idle)?? == 0 {
                return Ok(());
            }
            if message.len() > MAX_LINE_BYTES && message.last() != Some(&b'\n') {
                // Too long: the rest of the line is read and dropped.
                loop {
                    let buffered = tokio::time::timeout(IDLE, reader.fill_buf()).await.map_err(idle)??;
                    if buffered.is_empty() {
                        break;
                    }
                    let (used, done) = match buffered.iter().position(|&b| b == b'\n') {
                        Some(end) => (end + 1, true),
                        None => (buffered.len(), false),
                    };
                    reader.consume(used);
                    if done {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&message).trim_end_matches(['\n', '\r', '\0']).to_string();
        if !text.is_empty() && !messages.send(text).await {
            return Ok(());
        }
    }
}

/// One of the connections an address may hold, given back when the connection ends.
struct PeerTurn {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl PeerTurn {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: IpAddr) -> Option<Self> {
        let mut open = peers.lock().expect("peers lock");
        let count = open.entry(peer).or_insert(0);
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Self { peers: peers.clone(), peer })
    }
}

impl Drop for PeerTurn {
    fn drop(&mut self) {
        let mut open = self.peers.lock().expect("peers lock");
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Listen::parse("udp://0.0.0.0:5514"), Ok(Listen::Udp("0.0.0.0:5514".parse().unwrap())));
        assert_eq!(Listen::parse("tcp://[::1]:601"), Ok(Listen::Tcp("[::1]:601".parse().unwrap())));
        for bad in ["0.0.0.0:5514", "udp://localhost:514", "http://1.2.3.4:5", "tcp://1.2.3.4"] {
            assert!(Listen::parse(bad).unwrap_err().contains("is not udp://ADDRESS:PORT"), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_queue_holds_messages_up_to_its_bytes_until_they_are_stored() {
        let (sender, mut queue) = mpsc::channel(QUEUE);
        let messages = Messages { sender, bytes: Arc::new(Semaphore::new(3)) };
        assert!(messages.send("x".repeat(2048)).await);
        // Two more KiB do not fit in three: the receiver waits ...
        let waiting = tokio::spawn({
            let messages = messages.clone();
            async move { messages.send("y".repeat(2000)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a message was queued past the queue's bytes");
        // ... until the first is taken and stored (its share goes with it).
        let (first, held) = queue.recv().await.unwrap();
        assert_eq!(first.len(), 2048);
        drop(held);
        assert!(waiting.await.unwrap());
        assert_eq!(queue.recv().await.unwrap().0.len(), 2000);
    }
}

/// Fuzz targets for the TCP framer (`scripts/fuzz` runs them for as long as it is given; the suite runs them
/// briefly): a stream is read the same however it arrives in pieces.
#[cfg(test)]
mod fuzz {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    use super::*;

    /// A stream that arrives in pieces of the given sizes (the last one repeated).
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            let size = if this.sizes.len() > 1 { this.sizes.remove(0) } else { this.sizes[0] };
            let end = (this.at + size.max(1)).min(this.bytes.len());
            let end = this.at + (end - this.at).min(buf.remaining());
            buf.put_slice(&this.bytes[this.at..end]);
            this.at = end;
            Poll::Ready(Ok(()))
        }
    }

    /// What a connection sending `bytes` in pieces of `sizes` delivers, and whether it ended well.
    fn received(bytes: Vec<u8>, sizes: Vec<usize>) -> (Vec<String>, bool) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (sender, mut queue) = mpsc::channel(QUEUE);
            let messages = Messages { sender, bytes: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)) };
            let ended = receive_tcp(Pieces { bytes, at: 0, sizes }, &messages).await.is_ok();
            drop(messages);
            let mut delivered = Vec::new();
            while let Some((message, _)) = queue.recv().await {
                delivered.push(message);
            }
            (delivered, ended)
        })
    }

    /// Messages as senders write them: not empty, not ending in what the framer trims.
    fn message() -> impl Strategy<Value = String> {
        "<[0-9]{1,3}>.{0,200}[^\\n\\r\\x00]"
    }

    fn sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..64, 1..32)
    }

    proptest! {
        /// Octet-counted frames (`LEN SP MESSAGE`, newlines inside allowed) come out whole, however they arrive.
        #[test]
        fn octet_counting(messages in prop::collection::vec(message(), 1..20), sizes in sizes()) {
            let bytes: Vec<u8> = messages.iter().flat_map(|m| format!("{} {m}", m.len()).into_bytes()).collect();
            prop_assert_eq!(received(bytes, sizes), (messages, true));
        }

        /// Messages one per line come out whole, however they arrive.
        #[test]
        fn a_message_per_line(messages in prop::collection::vec(message().prop_filter("one line", |m| !m.contains('\n')), 1..20), sizes in sizes()) {
            let bytes = messages.iter().map(|m| format!("{m}\n")).collect::<String>().into_bytes();
            prop_assert_eq!(received(bytes, sizes), (messages, true));
        }

        /// Any bytes end the connection or are delivered as messages no longer than the most kept: never a panic.
        #[test]
        fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), sizes in sizes()) {
            let (delivered, _) = received(bytes, sizes);
            prop_assert!(delivered.iter().all(|m| m.len() <= 3 * (MAX_LINE_BYTES + 1)));
        }
    }
}
