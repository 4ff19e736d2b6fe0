//! Flow-controlled streams over russh channels.
//!
//! russh's session loop hands each channel's data to a bounded queue and
//! *awaits* room in it; it tops the SSH window up when data arrives, not
//! when the application reads it. A consumer that stops reading therefore
//! stalls the whole SSH session: every other stream, keepalives included.
//!
//! The fix is end to end, between our own agent and relay:
//! - a pump task per stream drains russh's queue at once into our buffer,
//!   so the session loop never waits on an application;
//! - a sender may have at most the receiver's window (bytes) unconsumed;
//!   the receiver grants more on the control channel as its application
//!   reads ([`ControlMsg::Credit`]). So our buffer is bounded by the window,
//!   and a slow reader slows only its own sender.
//!
//! With a peer that does not speak credits (OpenSSH `-R`), [`Flow::Plain`]
//! falls back to standard SSH behaviour: a bounded queue, whose backpressure
//! reaches that peer's session only.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use dwa_proto::control::ControlMsg;
use dwa_proto::stream::{ReceiveWindow, StreamId};
use futures_util::task::AtomicWaker;
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::control::ControlSender;

/// How much the sender may still send on one stream.
#[derive(Debug, Default)]
pub struct SendCredit {
    avail: AtomicU64,
    unlimited: bool,
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl SendCredit {
    fn new(initial: u32) -> Self {
        Self {
            avail: AtomicU64::new(u64::from(initial)),
            ..Default::default()
        }
    }

    fn unlimited() -> Self {
        Self {
            unlimited: true,
            ..Default::default()
        }
    }

    pub fn grant(&self, n: u32) {
        self.avail.fetch_add(u64::from(n), Ordering::AcqRel);
        self.waker.wake();
    }

    /// The channel is gone: writers fail instead of waiting forever.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll_avail(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        for attempt in 0..2 {
            if self.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "stream closed by peer",
                )));
            }
            if self.unlimited {
                return Poll::Ready(Ok(usize::MAX));
            }
            let a = self.avail.load(Ordering::Acquire);
            if a > 0 {
                return Poll::Ready(Ok(a.min(usize::MAX as u64) as usize));
            }
            if attempt == 0 {
                // Register, then look again so a grant racing with us is seen.
                self.waker.register(cx.waker());
            }
        }
        Poll::Pending
    }

    fn consume(&self, n: usize) {
        if !self.unlimited {
            self.avail.fetch_sub(n as u64, Ordering::AcqRel);
        }
    }

    pub fn available(&self) -> u64 {
        self.avail.load(Ordering::Acquire)
    }
}

/// Send credits of every stream of one SSH session, by stream id.
#[derive(Debug, Default)]
pub struct CreditTable {
    map: Mutex<HashMap<StreamId, Arc<SendCredit>>>,
}

impl CreditTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<SendCredit>>> {
        // A panic elsewhere must not take the session's bookkeeping with it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, id: StreamId, initial: u32) -> Arc<SendCredit> {
        let c = Arc::new(SendCredit::new(initial));
        self.lock().insert(id, c.clone());
        c
    }

    /// A credit for an unknown stream is ignored: it may have just closed.
    pub fn grant(&self, id: StreamId, n: u32) {
        if let Some(c) = self.lock().get(&id) {
            c.grant(n);
        }
    }

    pub fn remove(&self, id: StreamId) {
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session ended: wake and fail every writer.
    pub fn close_all(&self) {
        for c in self.lock().drain().map(|(_, c)| c) {
            c.close();
        }
    }
}

/// Byte counts of one stream, readable while it runs and after.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Bytes written into the stream (toward the peer).
    pub sent: AtomicU64,
    /// Bytes read out of the stream (from the peer).
    pub received: AtomicU64,
}

/// How a stream's sender is paced.
#[derive(Clone)]
pub enum Flow {
    /// Our own peer: credits on the control channel.
    Credit {
        table: Arc<CreditTable>,
        control: ControlSender,
        /// What we may send before the first grant (the peer's window).
        peer_window: u32,
        /// What we let the peer send before we grant (our window).
        own_window: u32,
    },
    /// A standard SSH peer (OpenSSH): SSH windows only.
    Plain,
}

type Item = Result<Bytes, io::Error>;

enum Rx {
    Unbounded(mpsc::UnboundedReceiver<Item>),
    Bounded(mpsc::Receiver<Item>),
}

enum Tx {
    Unbounded(mpsc::UnboundedSender<Item>),
    Bounded(mpsc::Sender<Item>),
}

impl Tx {
    async fn send(&self, item: Item) -> bool {
        match self {
            Tx::Unbounded(t) => t.send(item).is_ok(),
            Tx::Bounded(t) => t.send(item).await.is_ok(),
        }
    }
}

/// One relay-opened stream as an `AsyncRead + AsyncWrite`.
pub struct FlowStream {
    id: StreamId,
    rx: Rx,
    cur: Bytes,
    window: Option<(Arc<Mutex<ReceiveWindow>>, ControlSender, Arc<CreditTable>)>,
    credit: Arc<SendCredit>,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    stats: Arc<StreamStats>,
    closer: Option<Box<dyn FnOnce() + Send + Sync>>,
    gone: tokio_util::sync::CancellationToken,
}

impl FlowStream {
    /// Wraps an open channel. Spawns the pump task; must run inside tokio.
    pub fn new<S>(channel: Channel<S>, id: StreamId, flow: Flow) -> Self
    where
        S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    {
        let (read, write) = channel.split();
        let writer: Pin<Box<dyn AsyncWrite + Send + Sync>> = Box::pin(write.make_writer());
        let (tx, rx, window, credit) = match flow {
            Flow::Credit {
                table,
                control,
                peer_window,
                own_window,
            } => {
                let (t, r) = mpsc::unbounded_channel();
                let credit = table.register(id, peer_window);
                let w = Arc::new(Mutex::new(ReceiveWindow::new(own_window)));
                (
                    Tx::Unbounded(t),
                    Rx::Unbounded(r),
                    Some((w, control, table)),
                    credit,
                )
            }
            Flow::Plain => {
                let (t, r) = mpsc::channel(64);
                (
                    Tx::Bounded(t),
                    Rx::Bounded(r),
                    None,
                    Arc::new(SendCredit::unlimited()),
                )
            }
        };
        let span = tracing::debug_span!("stream_pump", stream = id);
        let gone = tokio_util::sync::CancellationToken::new();
        let pump_done = gone.clone();
        let w = window.as_ref().map(|w| w.0.clone());
        let c = credit.clone();
        tokio::spawn(
            async move {
                pump(read, tx, w, c).await;
                pump_done.cancel();
            }
            .instrument(span),
        );
        let closer: Box<dyn FnOnce() + Send + Sync> = Box::new(move || {
            tokio::spawn(async move {
                let _ = write.close().await;
            });
        });
        Self {
            id,
            rx,
            cur: Bytes::new(),
            window,
            credit,
            writer,
            stats: Arc::default(),
            closer: Some(closer),
            gone,
        }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    pub fn stats(&self) -> Arc<StreamStats> {
        self.stats.clone()
    }

    /// Cancelled when the SSH channel is closed or the session is gone.
    /// Bytes already received stay readable.
    pub fn gone(&self) -> tokio_util::sync::CancellationToken {
        self.gone.clone()
    }

    fn consumed(&mut self, n: usize) {
        self.stats.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some((w, control, _)) = &self.window {
            let grant = w.lock().unwrap_or_else(|e| e.into_inner()).on_consumed(n);
            if let Some(bytes) = grant {
                control.send(ControlMsg::Credit {
                    stream: self.id,
                    bytes,
                });
            }
        }
    }
}

async fn pump(
    mut read: russh::ChannelReadHalf,
    tx: Tx,
    window: Option<Arc<Mutex<ReceiveWindow>>>,
    credit: Arc<SendCredit>,
) {
    let mut tx = Some(tx);
    loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                let Some(t) = &tx else { continue };
                if let Some(w) = &window {
                    let ok = w
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .on_received(data.len());
                    if !ok {
                        tracing::warn!("peer overran the stream window; closing the stream");
                        t.send(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "peer sent more than its credit",
                        )))
                        .await;
                        break;
                    }
                }
                if !t.send(Ok(data)).await {
                    break; // our reader is gone
                }
            }
            // Peer will send no more: the reader sees end of file.
            Some(ChannelMsg::Eof) => tx = None,
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    credit.close();
}

impl AsyncRead for FlowStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.remaining());
                buf.put_slice(&self.cur[..n]);
                self.cur.advance(n);
                self.consumed(n);
                return Poll::Ready(Ok(()));
            }
            let item = match &mut self.rx {
                Rx::Unbounded(r) => ready!(r.poll_recv(cx)),
                Rx::Bounded(r) => ready!(r.poll_recv(cx)),
            };
            match item {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let avail = ready!(self.credit.poll_avail(cx))?;
        let n = avail.min(buf.len());
        let w = ready!(self.writer.as_mut().poll_write(cx, &buf[..n]))?;
        self.credit.consume(w);
        self.stats.sent.fetch_add(w as u64, Ordering::Relaxed);
        Poll::Ready(Ok(w))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends EOF: the peer's reader ends; we may still read.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

impl Drop for FlowStream {
    fn drop(&mut self) {
        if let Some((_, _, table)) = &self.window {
            table.remove(self.id);
        }
        if let Some(close) = self.closer.take() {
            close();
        }
    }
}
