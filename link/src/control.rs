//! The control channel's I/O: a writer task that frames outgoing messages
//! and a reader task that applies credits at once (they must never wait
//! behind anything) and hands every other message to the session's owner.

use std::sync::Arc;

use dwa_proto::control::{encode, ControlMsg, Decoder};
use dwa_proto::ProtoError;
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::flow::CreditTable;

/// Cheap, cloneable handle to send control messages. Sending never blocks;
/// messages are small and their number follows the data they pace.
#[derive(Clone, Debug)]
pub struct ControlSender(mpsc::UnboundedSender<ControlMsg>);

impl ControlSender {
    /// Returns false when the control channel is gone.
    pub fn send(&self, msg: ControlMsg) -> bool {
        self.0.send(msg).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
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
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ControlMsg>();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);

    tokio::spawn(
        async move {
            while let Some(msg) = out_rx.recv().await {
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

    (ControlSender(out_tx), ev_rx)
}
