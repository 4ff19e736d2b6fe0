//! SSH over WebSocket: a byte-stream view of a WebSocket so that the same
//! russh session runs over it as over TCP. Each write is one binary message;
//! ping/pong are handled by tungstenite; a text frame is garbage.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Path of the agent WebSocket on the relay's HTTPS port.
pub const WS_PATH: &str = "/agent/ws";

/// Largest message we send. russh flushes its whole output buffer (up to a
/// couple of MiB) in one write; it is cut into messages of this size.
pub const MAX_WS_CHUNK: usize = 64 * 1024;

/// Message limits: we send at most [`MAX_WS_CHUNK`]; anything far larger is
/// hostile.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    pending: Bytes,
}

impl<S> WsStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
        }
    }
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on the SSH WebSocket",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(inner.poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(MAX_WS_CHUNK);
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        // russh does not flush after its version line: push each message out
        // now; if the socket is full the next write or flush finishes it.
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.inner).poll_flush(cx) {
            return Poll::Ready(Err(to_io(e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WsStream<tokio::io::DuplexStream>,
        WsStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let a = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
        let b = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
        (WsStream::new(a), WsStream::new(b))
    }

    #[tokio::test]
    async fn a_single_write_larger_than_the_message_limit_arrives_whole() {
        let (mut tx, mut rx) = pair().await;
        // Like russh flushing megabytes of packets with one write_all.
        let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&data).await.expect("write");
            tx.flush().await.expect("flush");
            tx
        });
        let mut got = vec![0u8; expected.len()];
        rx.read_exact(&mut got)
            .await
            .expect("the receiver rejected a message");
        assert!(got == expected);
        let _tx = writer.await.expect("writer");
    }

    #[tokio::test]
    async fn text_frames_are_an_error() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut a = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
        let b = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
        let mut rx = WsStream::new(b);
        futures_util::SinkExt::send(&mut a, Message::text("hello"))
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let e = rx
            .read(&mut buf)
            .await
            .expect_err("text must not read as bytes");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
