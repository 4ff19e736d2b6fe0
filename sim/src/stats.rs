//! Per-printer counters, and the socket wrapper that feeds the byte count.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a printer saw of its most recent request; header values that are not
/// valid UTF-8 are recorded lossily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub referer: Option<String>,
    pub origin: Option<String>,
    pub cookie: Option<String>,
}

/// Counters shared by a printer's HTTP and HTTPS listeners.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_received: AtomicU64,
    last_request: Mutex<Option<RequestLog>>,
}

impl Stats {
    /// TCP connections accepted (HTTP and HTTPS).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// HTTP requests received (HTTP and HTTPS, every path).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Raw bytes read from accepted sockets: headers, bodies, WebSocket
    /// frames and, on the HTTPS port, TLS records as they came off the wire.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    pub fn last_request(&self) -> Option<RequestLog> {
        self.last_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, log: RequestLog) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
    }
}

/// Wraps an accepted socket and adds every byte read to the printer's
/// `bytes_received`; writes pass through untouched.
pub(crate) struct CountingIo<S> {
    inner: S,
    stats: Arc<Stats>,
}

impl<S> CountingIo<S> {
    pub(crate) fn new(inner: S, stats: Arc<Stats>) -> Self {
        CountingIo { inner, stats }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.stats
                .bytes_received
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counting_io_counts_reads_not_writes() {
        let stats = Arc::new(Stats::default());
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = CountingIo::new(a, stats.clone());
        b.write_all(b"hello world").await.expect("write");
        let mut buf = [0u8; 11];
        io.read_exact(&mut buf).await.expect("read");
        io.write_all(b"not counted").await.expect("write back");
        assert_eq!(&buf, b"hello world");
        assert_eq!(stats.bytes_received(), 11);
    }
}
