//! Naming of relay-opened streams.
//!
//! The relay opens a `direct-tcpip` channel toward the agent for each stream.
//! The SSH `originator address` is set to [`ORIGINATOR`] and the `originator
//! port` carries the stream id, so that credits on the control channel can
//! refer to the stream without depending on either side's channel numbers.

/// Originator address the relay puts on every stream it opens.
pub const ORIGINATOR: &str = "dwa-relay";

/// Originator address of a stream the agent must wrap in TLS toward the
/// target (an HTTPS printer): TLS is originated on the customer's side, and
/// the agent reports the certificate it saw with [`crate::control::TlsInfo`].
pub const ORIGINATOR_TLS: &str = "dwa-relay+tls";

/// Per-stream receive window (bytes) each side grants at open: the most a
/// sender may have in flight before the receiver's application consumed it.
/// Sized for loopback/LAN bandwidth-delay products; bounds memory per stream.
pub const DEFAULT_WINDOW: u32 = 1024 * 1024;

/// Stream identifier, unique within one SSH session.
pub type StreamId = u32;

/// Bookkeeping for the receiving side of one stream: how much was consumed
/// and when to grant it back. Pure, so the grant policy is unit tested.
#[derive(Debug, Clone)]
pub struct ReceiveWindow {
    window: u32,
    unacked: u32,
    buffered: u64,
}

impl ReceiveWindow {
    pub fn new(window: u32) -> Self {
        Self {
            window,
            unacked: 0,
            buffered: 0,
        }
    }

    /// Data arrived from the peer. Returns `false` when the peer sent more
    /// than the window allows (a protocol violation: the stream is closed).
    #[must_use]
    pub fn on_received(&mut self, n: usize) -> bool {
        self.buffered += n as u64;
        self.buffered <= u64::from(self.window)
    }

    /// The application consumed `n` bytes. Returns a credit to grant back to
    /// the sender once a quarter of the window is consumed (batched so a
    /// credit message costs little next to the data it releases).
    pub fn on_consumed(&mut self, n: usize) -> Option<u32> {
        let n = n as u64;
        self.buffered = self.buffered.saturating_sub(n);
        self.unacked = self.unacked.saturating_add(n as u32);
        if self.unacked >= self.window / 4 {
            let grant = self.unacked;
            self.unacked = 0;
            Some(grant)
        } else {
            None
        }
    }

    pub fn buffered(&self) -> u64 {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_after_a_quarter_and_detects_overrun() {
        let mut w = ReceiveWindow::new(1000);
        assert!(w.on_received(600));
        assert!(w.on_received(400));
        assert!(!w.on_received(1), "one byte past the window is a violation");
        let mut w = ReceiveWindow::new(1000);
        assert!(w.on_received(1000));
        assert_eq!(w.on_consumed(200), None);
        assert_eq!(w.on_consumed(50), Some(250));
        assert_eq!(w.buffered(), 750);
        // After the grant the sender may send 250 more: exactly the window.
        assert!(w.on_received(250));
        assert!(!w.on_received(1));
    }
}
