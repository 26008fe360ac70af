//! A plugin's stdout and stderr: the first bytes are kept for selfmon's log, the rest counted and dropped.
//!
//! A write never fails and never blocks, so a chatty plugin neither stalls nor crashes (Rust's `println!` panics
//! when its stream reports closed); it simply loses what does not fit.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much the guest may write in one go; anything is accepted, this only sizes its buffers.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct CappedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    kept: BytesMut,
    dropped: usize,
}

impl CappedOutput {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::new(Mutex::new(Captured { kept: BytesMut::with_capacity(0), dropped: 0 })) }
            .with_capacity(capacity)
    }

    fn with_capacity(self, capacity: usize) -> Self {
        self.inner.lock().expect("output lock").kept.reserve(capacity);
        self
    }

    /// What was kept, and how many bytes were dropped.
    pub fn contents(&self) -> (Bytes, usize) {
        let captured = self.inner.lock().expect("output lock");
        (captured.kept.clone().freeze(), captured.dropped)
    }

    fn push(&self, bytes: &[u8]) {
        let mut captured = self.inner.lock().expect("output lock");
        let room = captured.kept.capacity() - captured.kept.len();
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        self.push(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let output = CappedOutput::new(8);
        let mut stream = output.p2_stream();
        stream.write(Bytes::from_static(b"hello, ")).unwrap();
        stream.write(Bytes::from_static(b"world")).unwrap();
        assert_eq!(stream.check_write().unwrap(), WRITE_PERMIT, "a full buffer never refuses a write");
        let (kept, dropped) = output.contents();
        assert_eq!(&kept[..], b"hello, w");
        assert_eq!(dropped, 4);
    }
}
