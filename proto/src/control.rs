//! The control channel: one SSH `session` channel per agent connection,
//! opened by the agent with subsystem [`crate::CONTROL_SUBSYSTEM`]. Frames are
//! a 4-byte big-endian length followed by a JSON message.

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

use crate::stream::StreamId;
use crate::ProtoError;

/// Largest accepted frame body. Control messages are small; anything larger
/// is a broken or hostile peer.
pub const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMsg {
    /// Agent → relay, first frame: who we are and what the local policy allows
    /// (the relay mirrors it for its own pre-check; the agent still decides).
    Hello(Hello),
    /// Relay → agent, answer to `Hello`.
    Welcome {
        relay_version: String,
        window: u32,
    },
    /// The receiver consumed `bytes` of stream `stream`: the sender may send
    /// that much more.
    Credit {
        stream: StreamId,
        bytes: u32,
    },
    /// Agent → relay: the agent refused a stream; sent before the SSH channel
    /// open failure so the relay can audit the reason.
    Denied(Denial),
    /// Agent → relay: the TLS session the agent opened toward the target of
    /// a TLS stream; sent before the channel is accepted.
    TlsInfo(TlsInfo),
    /// Relay → agent: run a telemetry scan now (`request` is echoed in the
    /// agent's log and in the scan's `trigger`).
    ScanNow {
        request: String,
    },
    /// Relay → agent: scan settings made on the relay; sent after `Welcome`
    /// and whenever they change. `None` keeps the agent's own setting. The
    /// agent never scans outside its local ceiling (`policy.allow`).
    ScanConfig(ScanSettings),
    /// Agent → relay: what the agent made of the last `ScanConfig`.
    ScanConfigApplied(ScanApplied),
    /// Relay → agent: run one diagnostic toward `target` (an address or a
    /// name; the agent's policy decides on what it resolves to).
    Diag {
        request: String,
        target: String,
        diag: crate::diag::DiagRequest,
    },
    /// Agent → relay: the outcome of `Diag` `request`.
    DiagResult {
        request: String,
        outcome: crate::diag::DiagOutcome,
    },
    /// Relay → agent: the audit chain's head, signed with the relay's
    /// host key; the agent checks it against the key it pinned and keeps it
    /// in its own audit log.
    AuditCheckpoint(crate::audit::Checkpoint),
    /// Application heartbeat, either direction.
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub agent_version: String,
    pub hostname: String,
    /// Ports of the agent's policy.
    pub ports: Vec<u16>,
    /// Networks of the agent's policy, as written.
    pub allow: Vec<String>,
    /// Receive window the agent grants per stream.
    pub window: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScanSettings {
    pub ranges: Option<Vec<String>>,
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScanApplied {
    /// The ranges the agent now scans.
    pub ranges: Vec<String>,
    pub interval_secs: u64,
    /// Requested ranges the agent refused, each with one reason line.
    pub refused: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    pub stream: StreamId,
    /// The target as the relay asked for it (address or name).
    pub host: String,
    pub port: u16,
    /// Short rule code (`loopback`, `port_not_allowed`, `connect_failed`...).
    pub rule: String,
    /// One human line.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub stream: StreamId,
    /// SHA-256 of the target's end-entity certificate (DER), lowercase hex.
    pub cert_sha256: String,
    /// Negotiated version, e.g. `TLSv1_3`.
    pub version: String,
    pub cipher: String,
}

/// Encodes one message as a frame.
pub fn encode(msg: &ControlMsg) -> Vec<u8> {
    // Serializing these plain types cannot fail.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Incremental frame decoder: feed bytes as they arrive, take messages out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete message, `Ok(None)` when more bytes are needed. An error
    /// is final: the stream is out of sync and the channel must be closed.
    pub fn next_msg(&mut self) -> Result<Option<ControlMsg>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len);
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ProtoError::BadFrame(e.to_string()))
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ControlMsg {
        ControlMsg::Hello(Hello {
            protocol: 1,
            agent_version: "0.1.0".into(),
            hostname: "pc-01".into(),
            ports: vec![80, 443],
            allow: vec!["192.168.1.0/24".into()],
            window: 1 << 20,
        })
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let msgs = vec![
            hello(),
            ControlMsg::Credit {
                stream: 7,
                bytes: 4096,
            },
            ControlMsg::Denied(Denial {
                stream: 9,
                host: "127.0.0.1".into(),
                port: 22,
                rule: "port_not_allowed".into(),
                reason: "port 22 is not allowed".into(),
            }),
            ControlMsg::Ping { seq: 3 },
        ];
        let wire: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut d = Decoder::new();
        let mut out = vec![];
        for b in wire {
            d.push(&[b]);
            while let Some(m) = d.next_msg().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut d = Decoder::new();
        d.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(d.next_msg(), Err(ProtoError::FrameTooLarge(MAX_FRAME + 1)));

        let mut d = Decoder::new();
        d.push(&3u32.to_be_bytes());
        d.push(b"{x}");
        assert!(matches!(d.next_msg(), Err(ProtoError::BadFrame(_))));

        let mut d = Decoder::new();
        let body = br#"{"type":"launch_missiles"}"#;
        d.push(&(body.len() as u32).to_be_bytes());
        d.push(body);
        assert!(matches!(d.next_msg(), Err(ProtoError::BadFrame(_))));
    }

    #[test]
    fn partial_frame_waits() {
        let f = encode(&ControlMsg::Pong { seq: 1 });
        let mut d = Decoder::new();
        d.push(&f[..f.len() - 1]);
        assert_eq!(d.next_msg(), Ok(None));
        d.push(&f[f.len() - 1..]);
        assert_eq!(d.next_msg(), Ok(Some(ControlMsg::Pong { seq: 1 })));
    }
}
