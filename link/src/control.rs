//! The control channel's I/O: a writer task that frames outgoing messages
//! and a reader task that applies credits at once (they must never wait
//! behind anything) and hands every other message to the session's owner.
//!
//! Both directions are bounded against a peer that stops reading: incoming
//! messages wait in [`EVENT_QUEUE`], outgoing ones in [`CONTROL_QUEUE`]
//! (beyond it they are dropped and counted), and outgoing credits are summed
//! per stream, so they cost one entry per open stream however many pile up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dwa_proto::control::{encode, ControlMsg, Decoder};
use dwa_proto::stream::StreamId;
use dwa_proto::ProtoError;
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

use crate::flow::CreditTable;

/// Outgoing messages (credits aside) not yet written. A peer that leaves
/// the control channel unread fills it; later messages are dropped, as a
/// datagram would be, instead of growing memory without end.
pub const CONTROL_QUEUE: usize = 1024;

/// Credits granted but not yet written, summed per stream.
#[derive(Debug, Default)]
struct Credits {
    pending: Mutex<HashMap<StreamId, u64>>,
    ready: Notify,
}

/// Cheap, cloneable handle to send control messages. Sending never blocks.
#[derive(Clone, Debug)]
pub struct ControlSender {
    queue: mpsc::Sender<ControlMsg>,
    credits: Arc<Credits>,
    dropped: Arc<AtomicU64>,
}

impl ControlSender {
    /// Queues `msg`. Returns false when the control channel is gone or its
    /// queue is full (the message is dropped and counted).
    pub fn send(&self, msg: ControlMsg) -> bool {
        if let ControlMsg::Credit { stream, bytes } = msg {
            if self.queue.is_closed() {
                return false;
            }
            let mut p = self
                .credits
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *p.entry(stream).or_default() += u64::from(bytes);
            drop(p);
            self.credits.ready.notify_one();
            return true;
        }
        match self.queue.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped = n + 1,
                        "control channel: the peer is not reading; message dropped"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Messages dropped because the outgoing queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer's side of [`ControlSender`]: yields what to write next,
/// pending credits first.
#[derive(Debug)]
pub struct ControlQueue {
    queue: mpsc::Receiver<ControlMsg>,
    credits: Arc<Credits>,
}

/// A sender and the queue it feeds.
pub fn control_queue() -> (ControlSender, ControlQueue) {
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let credits = Arc::new(Credits::default());
    (
        ControlSender {
            queue: tx,
            credits: credits.clone(),
            dropped: Arc::default(),
        },
        ControlQueue { queue: rx, credits },
    )
}

impl ControlQueue {
    /// The next message to write; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<ControlMsg> {
        loop {
            if let Some(m) = self.take_credit() {
                return Some(m);
            }
            tokio::select! {
                biased;
                () = self.credits.ready.notified() => {}
                m = self.queue.recv() => return m,
            }
        }
    }

    fn take_credit(&self) -> Option<ControlMsg> {
        let mut p = self
            .credits
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (&stream, left) = p.iter_mut().next()?;
        let bytes = u32::try_from(*left).unwrap_or(u32::MAX);
        *left -= u64::from(bytes);
        if *left == 0 {
            p.remove(&stream);
        }
        Some(ControlMsg::Credit { stream, bytes })
    }
}

/// What the reader task reports to the session's owner.
#[derive(Debug)]
pub enum ControlEvent {
    Msg(ControlMsg),
    /// Malformed or oversized frame: the peer is broken; close the session.
    Error(ProtoError),
}

/// Messages read from the peer and not yet handled by the session's
/// owner. When they pile up, the reader stops reading: the SSH window then
/// holds the peer back, and a flooding peer costs bounded memory.
pub const EVENT_QUEUE: usize = 256;

/// Starts the reader and writer tasks of an open control channel.
pub fn spawn_control<S>(
    channel: Channel<S>,
    credits: Arc<CreditTable>,
) -> (ControlSender, mpsc::Receiver<ControlEvent>)
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (mut read, write) = channel.split();
    let (sender, mut out) = control_queue();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);

    tokio::spawn(
        async move {
            while let Some(msg) = out.next().await {
                if write.data_bytes(encode(&msg)).await.is_err() {
                    break;
                }
            }
            let _ = write.close().await;
        }
        .instrument(tracing::debug_span!("control_writer")),
    );

    tokio::spawn(
        async move {
            let mut dec = Decoder::new();
            while let Some(m) = read.wait().await {
                let ChannelMsg::Data { data } = m else {
                    if matches!(m, ChannelMsg::Eof | ChannelMsg::Close) {
                        break;
                    }
                    continue;
                };
                dec.push(&data);
                loop {
                    match dec.next_msg() {
                        Ok(Some(ControlMsg::Credit { stream, bytes })) => {
                            credits.grant(stream, bytes)
                        }
                        Ok(Some(other)) => {
                            if ev_tx.send(ControlEvent::Msg(other)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = ev_tx.send(ControlEvent::Error(e)).await;
                            return;
                        }
                    }
                }
            }
        }
        .instrument(tracing::debug_span!("control_reader")),
    );

    (sender, ev_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong(seq: u64) -> ControlMsg {
        ControlMsg::Pong { seq }
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_costs_a_bounded_queue() {
        let (tx, mut rx) = control_queue();
        let sent = (0..3 * CONTROL_QUEUE as u64)
            .filter(|&i| tx.send(pong(i)))
            .count();
        assert_eq!(sent, CONTROL_QUEUE);
        assert_eq!(tx.dropped(), 2 * CONTROL_QUEUE as u64);
        // What was queued is written in order.
        for i in 0..CONTROL_QUEUE as u64 {
            assert_eq!(rx.next().await, Some(pong(i)));
        }
        // Room again once the writer caught up.
        assert!(tx.send(pong(99)));
        assert_eq!(rx.next().await, Some(pong(99)));
    }

    #[tokio::test]
    async fn credits_are_summed_per_stream_and_go_first() {
        let (tx, mut rx) = control_queue();
        assert!(tx.send(pong(1)));
        for _ in 0..100_000 {
            assert!(tx.send(ControlMsg::Credit {
                stream: 7,
                bytes: 100,
            }));
        }
        assert_eq!(
            rx.next().await,
            Some(ControlMsg::Credit {
                stream: 7,
                bytes: 10_000_000
            })
        );
        assert_eq!(rx.next().await, Some(pong(1)));
    }

    #[tokio::test]
    async fn a_sum_beyond_u32_is_written_in_several_frames() {
        let (tx, mut rx) = control_queue();
        for _ in 0..3 {
            tx.send(ControlMsg::Credit {
                stream: 1,
                bytes: u32::MAX,
            });
        }
        let mut total = 0u64;
        for _ in 0..3 {
            match rx.next().await {
                Some(ControlMsg::Credit { stream: 1, bytes }) => total += u64::from(bytes),
                other => panic!("expected a credit, got {other:?}"),
            }
        }
        assert_eq!(total, 3 * u64::from(u32::MAX));
    }

    #[tokio::test]
    async fn the_queue_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = control_queue();
        let tx2 = tx.clone();
        drop(tx);
        assert!(tx2.send(pong(5)));
        drop(tx2);
        assert_eq!(rx.next().await, Some(pong(5)));
        assert_eq!(rx.next().await, None);
    }
}
