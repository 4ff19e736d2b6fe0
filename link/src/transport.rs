//! Transports: what the agent's SSH session runs over. Both give a plain
//! byte stream; russh neither knows nor cares which one it got.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::ws::{ws_config, WsStream, WS_PATH};
use crate::LinkError;

/// A byte pipe an SSH session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Something that can open a fresh pipe to the relay.
pub trait Transport: Send + Sync {
    /// `ssh` or `websocket`, for logs and the relay's agent list.
    fn name(&self) -> &'static str;
    fn connect(&self) -> impl std::future::Future<Output = Result<BoxIo, LinkError>> + Send;
}

/// `addr` is HOST:PORT; `localhost` names are loopback without the system
/// resolver (see [`crate::resolve`]), other names are resolved by it.
async fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, LinkError> {
    let loopback = crate::cli::split_host_port(addr)
        .ok()
        .and_then(|(host, port)| crate::resolve::localhost_addrs(&host, port));
    let connect = async {
        match loopback {
            Some(addrs) => TcpStream::connect(&addrs[..]).await,
            None => TcpStream::connect(addr).await,
        }
    };
    let s = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| LinkError::Timeout(timeout, "connecting"))??;
    // Interactive page loads care about latency more than packet count.
    s.set_nodelay(true)?;
    Ok(s)
}

/// SSH straight to the relay's SSH port.
pub struct TcpTransport {
    pub addr: String,
    pub timeout: Duration,
}

impl Transport for TcpTransport {
    fn name(&self) -> &'static str {
        "ssh"
    }
    async fn connect(&self) -> Result<BoxIo, LinkError> {
        Ok(Box::new(tcp_connect(&self.addr, self.timeout).await?))
    }
}

/// SSH inside a WebSocket on the relay's HTTPS port, for sites where only
/// 443 may leave the network. TLS is pinned to the relay's certificate.
pub struct WsTransport {
    /// host:port of the relay's HTTPS listener.
    pub addr: String,
    /// Host name for SNI and the Host header.
    pub host: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

/// TLS to the relay with the pinned config; shared by enrollment and the
/// WebSocket transport.
pub async fn tls_connect(
    addr: &str,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, LinkError> {
    let tcp = tcp_connect(addr, timeout).await?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| LinkError::Tls(format!("bad server name {host:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| LinkError::Timeout(timeout, "in the TLS handshake"))?
        .map_err(|e| LinkError::Tls(describe_tls_error(&e)))
}

/// The pin mismatch explains itself; other rustls errors by their Display.
fn describe_tls_error(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            o.to_string()
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

impl Transport for WsTransport {
    fn name(&self) -> &'static str {
        "websocket"
    }
    async fn connect(&self) -> Result<BoxIo, LinkError> {
        let tls = tls_connect(&self.addr, &self.host, self.tls.clone(), self.timeout).await?;
        let port = self.addr.rsplit(':').next().unwrap_or("443");
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let url = format!("wss://{host}:{port}{WS_PATH}");
        let (ws, _resp) = tokio::time::timeout(
            self.timeout,
            tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config())),
        )
        .await
        .map_err(|_| LinkError::Timeout(self.timeout, "in the WebSocket handshake"))?
        .map_err(|e| LinkError::WebSocket(e.to_string()))?;
        Ok(Box::new(WsStream::new(ws)))
    }
}

/// A pipe that can be cut from outside: once the token is cancelled, reads
/// and writes fail, so whatever runs on it (a russh session stuck in key
/// exchange, or writing to a frozen peer) ends promptly.
pub struct Killable {
    inner: BoxIo,
    cut: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Killable {
    pub fn new(inner: BoxIo, token: tokio_util::sync::CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(token.cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        if std::future::Future::poll(self.cut.as_mut(), cx).is_ready() {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection cut",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Longest SSH identification line, CR LF included (RFC 4253 §4.2).
pub const MAX_VERSION_LINE: usize = 255;

/// Reads a client's SSH identification line (`SSH-2.0-…`, ending in LF)
/// and whatever arrived with it, so the server can decide before it spends
/// anything on the connection; the bytes go back in front of the session
/// with [`read_ahead_after`]. Anything else, or more than
/// [`MAX_VERSION_LINE`] bytes without a line end, is an error.
pub async fn read_ssh_version(io: &mut BoxIo) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
        let probe = got.len().min(4);
        if !b"SSH-".starts_with(&got[..probe]) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an SSH client (no SSH- version line)",
            ));
        }
        match got.iter().position(|&b| b == b'\n') {
            Some(end) if end < MAX_VERSION_LINE => return Ok(got),
            _ if got.len() >= MAX_VERSION_LINE => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "SSH version line longer than 255 bytes",
                ))
            }
            _ => {}
        }
    }
}

/// Bytes read ahead from the peer while the SSH session is busy writing.
pub const READ_AHEAD: usize = 8 * 1024 * 1024;

/// Keeps reading from the pipe while the SSH session writes.
///
/// A russh session loop does not read while it flushes its output. When
/// both ends flush large batches at once (many busy full-duplex streams),
/// each waits for the other to read and neither does: a deadlock that only
/// the inactivity timeout ends. A task that moves incoming bytes into a
/// bounded buffer (larger than any single flush, ≈2 MiB) keeps the peer's
/// writes flowing, so every flush completes.
pub fn read_ahead(io: BoxIo, capacity: usize) -> BoxIo {
    read_ahead_after(io, capacity, Vec::new())
}

/// [`read_ahead`], the session reading `prefix` first: bytes already taken
/// off the socket (the peer's version line, see [`read_ssh_version`]).
pub fn read_ahead_after(io: BoxIo, capacity: usize, prefix: Vec<u8>) -> BoxIo {
    let (socket_r, socket_w) = tokio::io::split(io);
    let (buf_r, mut buf_w) = tokio::io::simplex(capacity.max(prefix.len()));
    let done = tokio_util::sync::CancellationToken::new();
    let stop = done.clone();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if tokio::io::AsyncWriteExt::write_all(&mut buf_w, &prefix)
                .await
                .is_err()
            {
                return;
            }
            // Large reads: one syscall per 256 KiB, not per 8 KiB.
            let mut socket_r = tokio::io::BufReader::with_capacity(256 * 1024, socket_r);
            tokio::select! {
                // EOF or error: the session then sees EOF.
                _ = tokio::io::copy_buf(&mut socket_r, &mut buf_w) => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut buf_w).await;
                }
                // The session let go of the pipe: release the socket's read
                // half so the connection actually closes.
                _ = stop.cancelled() => {}
            }
        },
        tracing::debug_span!("read_ahead"),
    ));
    Box::new(ReadAhead {
        inner: tokio::io::join(buf_r, socket_w),
        _stop: done.drop_guard(),
    })
}

struct ReadAhead<R, W> {
    inner: tokio::io::Join<R, W>,
    _stop: tokio_util::sync::DropGuard,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncRead for ReadAhead<R, W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncWrite for ReadAhead<R, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn version_of(sent: &[u8]) -> std::io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(sent).await?;
        drop(client);
        let mut io: BoxIo = Box::new(server);
        read_ssh_version(&mut io).await
    }

    #[tokio::test]
    async fn the_version_line_and_what_came_with_it_are_kept() {
        let got = version_of(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x00\x01\x2ckexinit")
            .await
            .unwrap();
        assert_eq!(got, b"SSH-2.0-OpenSSH_9.2\r\n\x00\x00\x01\x2ckexinit");
    }

    #[tokio::test]
    async fn anything_but_an_ssh_client_is_refused() {
        assert!(version_of(b"GET / HTTP/1.1\r\n").await.is_err());
        assert!(
            version_of(b"SSH-2.0-").await.is_err(),
            "EOF before the line end"
        );
        let long = [b"SSH-2.0-".as_slice(), &[b'x'; 300]].concat();
        assert!(version_of(&long).await.is_err());
    }

    #[tokio::test]
    async fn the_session_reads_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(4096);
        let io = read_ahead_after(Box::new(server), 1024, b"SSH-2.0-x\r\n".to_vec());
        client.write_all(b"rest").await.unwrap();
        drop(client);
        let mut io = io;
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"SSH-2.0-x\r\nrest");
    }
}
