//! A hostile relay: a russh server holding the real relay's SSH host key
//! (read from the data dir `dwa-relay init` made), so an enrolled agent,
//! which pins that key, takes it for its relay. It behaves as a fully
//! compromised relay would: it accepts the agent's key, and lets a test
//! open any channel type toward any target, send any control message or
//! raw bytes on the control channel, and read what the agent answers.
//!
//! It speaks the real protocol through the crates' own code: control
//! frames with `dwa_link::control` / `dwa_proto::control`, streams with
//! `dwa_link::flow::FlowStream` and the originators of `dwa_proto::stream`,
//! SSH settings from `dwa_link::ssh`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dwa_link::control::{spawn_control, ControlEvent, ControlSender};
use dwa_link::flow::{CreditTable, Flow, FlowStream};
use dwa_proto::control::{ControlMsg, Denial, Hello};
use dwa_proto::stream::{StreamId, DEFAULT_WINDOW, ORIGINATOR, ORIGINATOR_TLS};
use dwa_proto::CONTROL_SUBSYSTEM;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for one answer of the agent (a channel open, a control
/// message): the agent's own stream-open budget is 8 s.
pub const WAIT: Duration = Duration::from_secs(10);

/// The relay's host key file in its data dir (`relay::config::HOST_KEY_FILE`).
const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Accepts agent connections; each one that opens its control channel
/// becomes a [`HostileSession`].
pub struct HostileRelay {
    pub addr: SocketAddr,
    sessions: mpsc::Receiver<HostileSession>,
    task: JoinHandle<()>,
}

impl HostileRelay {
    /// Listens on `addr` (the real relay's SSH address, once it stopped)
    /// with the host key found in the relay data dir `data`.
    pub async fn listen(addr: &str, data: &Path) -> HostileRelay {
        let key = russh::keys::load_secret_key(data.join(HOST_KEY_FILE), None)
            .expect("the real relay's SSH host key");
        let config = Arc::new(dwa_link::ssh::server_config(
            dwa_link::ssh::Keepalive::default(),
            vec![key],
        ));
        // The real relay may have let go of the port a moment ago.
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("bind {addr}"));
        let addr = listener.local_addr().expect("local addr");
        let (tx, sessions) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                let handler = HostileHandler {
                    sessions: tx.clone(),
                    session_channel: None,
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(running) = russh::server::run_stream(config, sock, handler).await {
                        let _ = running.await;
                    }
                });
            }
        });
        HostileRelay {
            addr,
            sessions,
            task,
        }
    }

    /// The next agent session with its control channel open, its hello
    /// read and answered with a welcome (as the real relay does).
    pub async fn session(&mut self, timeout: Duration) -> HostileSession {
        let mut s = tokio::time::timeout(timeout, self.sessions.recv())
            .await
            .unwrap_or_else(|_| panic!("no agent session within {timeout:?}"))
            .expect("hostile relay listener gone");
        s.welcome().await;
        s
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// russh callbacks: any key is welcome, one session channel becomes the
/// control channel. Everything else keeps russh's default (refused).
struct HostileHandler {
    sessions: mpsc::Sender<HostileSession>,
    session_channel: Option<Channel<Msg>>,
}

impl russh::server::Handler for HostileHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.session_channel = Some(channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ch = match self.session_channel.take() {
            Some(ch) if ch.id() == channel && name == CONTROL_SUBSYSTEM => ch,
            other => {
                self.session_channel = other;
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        let credits = Arc::new(CreditTable::default());
        let (control, mut bounded) = spawn_control(ch, credits.clone());
        // Drained at once: a test that floods the agent and reads the
        // answers later must not stall this side's SSH session.
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = bounded.recv().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let s = HostileSession {
            handle: session.handle(),
            control_id: channel,
            control,
            events,
            backlog: VecDeque::new(),
            credits,
            next_stream: 1,
            hello: None,
            closed: false,
        };
        let _ = self.sessions.try_send(s);
        Ok(())
    }
}

/// Why a stream open failed: the SSH error and the agent's `Denied`
/// message for it, if one came.
#[derive(Debug)]
pub struct Refusal {
    pub error: String,
    pub denial: Option<Denial>,
}

impl Refusal {
    /// The agent's rule code, or `""` when it sent no `Denied`.
    pub fn rule(&self) -> &str {
        self.denial.as_ref().map_or("", |d| d.rule.as_str())
    }
}

/// Channel types a relay can open toward the agent besides its streams.
#[derive(Debug, Clone)]
pub enum OtherChannel {
    /// `direct-tcpip` with an originator address of the relay's choosing.
    DirectTcpip {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    ForwardedTcpip {
        address: String,
        port: u32,
    },
    Session,
    X11,
    AgentForward,
    DirectStreamlocal(String),
    ForwardedStreamlocal(String),
}

/// One agent session as the hostile relay holds it.
pub struct HostileSession {
    pub handle: russh::server::Handle,
    control_id: ChannelId,
    control: ControlSender,
    events: mpsc::UnboundedReceiver<ControlEvent>,
    /// Messages read while waiting for another one.
    backlog: VecDeque<ControlMsg>,
    credits: Arc<CreditTable>,
    next_stream: StreamId,
    pub hello: Option<Hello>,
    closed: bool,
}

impl HostileSession {
    async fn welcome(&mut self) {
        let hello = self
            .wait_for(
                |m| match m {
                    ControlMsg::Hello(h) => Some(h.clone()),
                    _ => None,
                },
                WAIT,
            )
            .await
            .expect("the agent's hello");
        self.send(ControlMsg::Welcome {
            relay_version: "hostile".into(),
            window: DEFAULT_WINDOW,
        });
        self.hello = Some(hello);
    }

    /// The control channel's id (for raw SSH messages on it).
    pub fn control_channel(&self) -> ChannelId {
        self.control_id
    }

    /// Queues a well-formed control message.
    pub fn send(&self, msg: ControlMsg) -> bool {
        self.control.send(msg)
    }

    /// Writes raw bytes on the control channel, outside the framing.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> bool {
        self.handle.data(self.control_id, bytes).await.is_ok()
    }

    /// The next control message within `timeout` (backlog first); `None`
    /// on timeout or when the session ended.
    pub async fn recv(&mut self, timeout: Duration) -> Option<ControlMsg> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        self.read(timeout).await
    }

    async fn read(&mut self, timeout: Duration) -> Option<ControlMsg> {
        if self.closed {
            return None;
        }
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(ControlEvent::Msg(m))) => Some(m),
            // The agent never sends a bad frame; if it did, the session is
            // as good as gone.
            Ok(Some(ControlEvent::Error(_))) | Ok(None) => {
                self.closed = true;
                None
            }
            Err(_) => None,
        }
    }

    /// The first message `pick` takes, within `timeout`; the others stay
    /// in the backlog for later waits.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&ControlMsg) -> Option<T>,
        timeout: Duration,
    ) -> Option<T> {
        if let Some(i) = self.backlog.iter().position(|m| pick(m).is_some()) {
            return self.backlog.remove(i).as_ref().and_then(&mut pick);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.read(left).await?;
            if let Some(t) = pick(&m) {
                return Some(t);
            }
            // Bounded: a chatty agent must not grow a test's memory.
            if self.backlog.len() >= 10_000 {
                self.backlog.pop_front();
            }
            self.backlog.push_back(m);
        }
    }

    /// Whether the agent ended the session within `timeout`.
    pub async fn ended(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.closed {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(m) = self.read(left).await {
                self.backlog.push_back(m);
            }
        }
        true
    }

    /// Opens a stream as the real relay does (`direct-tcpip`, originator
    /// `dwa-relay` or `dwa-relay+tls`, the stream id as originator port),
    /// toward whatever `host` and `port` the test likes.
    pub async fn stream(
        &mut self,
        host: &str,
        port: u32,
        tls: bool,
    ) -> Result<FlowStream, Refusal> {
        let id = self.next_stream;
        self.next_stream += 1;
        let originator = if tls { ORIGINATOR_TLS } else { ORIGINATOR };
        let open = self
            .handle
            .channel_open_direct_tcpip(host, port, originator, id);
        let error = match tokio::time::timeout(WAIT, open).await {
            Ok(Ok(ch)) => {
                let peer_window = self.hello.as_ref().map_or(DEFAULT_WINDOW, |h| h.window);
                return Ok(FlowStream::new(
                    ch,
                    id,
                    Flow::Credit {
                        table: self.credits.clone(),
                        control: self.control.clone(),
                        peer_window,
                        own_window: DEFAULT_WINDOW,
                    },
                ));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer to the channel open within {WAIT:?}"),
        };
        // The agent sends its reason before the open failure; give it a
        // moment on the other channel.
        let denial = self
            .wait_for(
                |m| match m {
                    ControlMsg::Denied(d) if d.stream == id => Some(d.clone()),
                    _ => None,
                },
                Duration::from_secs(2),
            )
            .await;
        Err(Refusal { error, denial })
    }

    /// Opens a channel of another type; `Ok` means the agent accepted it.
    pub async fn open_other(&self, kind: OtherChannel) -> Result<Channel<Msg>, String> {
        let h = &self.handle;
        let open = async {
            match kind {
                OtherChannel::DirectTcpip {
                    host,
                    port,
                    originator,
                    originator_port,
                } => {
                    h.channel_open_direct_tcpip(host, port, originator, originator_port)
                        .await
                }
                OtherChannel::ForwardedTcpip { address, port } => {
                    h.channel_open_forwarded_tcpip(address, port, "127.0.0.1", 0)
                        .await
                }
                OtherChannel::Session => h.channel_open_session().await,
                OtherChannel::X11 => h.channel_open_x11("127.0.0.1", 6000).await,
                OtherChannel::AgentForward => h.channel_open_agent().await,
                OtherChannel::DirectStreamlocal(p) => h.channel_open_direct_streamlocal(p).await,
                OtherChannel::ForwardedStreamlocal(p) => {
                    h.channel_open_forwarded_streamlocal(p).await
                }
            }
        };
        match tokio::time::timeout(WAIT, open).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {WAIT:?}")),
        }
    }
}

/// A UDP socket counting the datagrams that reach it (where a pushed scan
/// would send SNMP).
pub struct UdpSink {
    pub addr: SocketAddr,
    seen: Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpSink {
    pub async fn bind(addr: &str) -> UdpSink {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind UDP {addr}: {e}"));
        let addr = socket.local_addr().expect("local addr");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while socket.recv_from(&mut buf).await.is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        UdpSink { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Counts ICMP echo requests per IPv4 destination seen on this host while
/// it lives: a raw socket gets a copy of every ICMP packet, and on
/// loopback a request is seen as it arrives. Needs root (the e2e tests
/// run as root); `None` without it.
pub struct EchoCounter {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::Mutex<std::collections::HashMap<std::net::Ipv4Addr, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoCounter {
    pub fn start() -> Option<EchoCounter> {
        use socket2::{Domain, Protocol, Socket, Type};
        use std::sync::atomic::Ordering;
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .ok()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen: Arc<std::sync::Mutex<std::collections::HashMap<_, usize>>> = Arc::default();
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let p: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if p.len() < 20 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() > ihl && p[ihl] == 8 {
                    let dst = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
                    *m.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(dst)
                        .or_default() += 1;
                }
            }
        });
        Some(EchoCounter {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    pub fn count(&self, dst: &str) -> usize {
        let a: std::net::Ipv4Addr = dst.parse().expect("an IPv4 address");
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&a)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for EchoCounter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An extra loopback address (`ip addr add A/32 dev lo`) that makes `A`
/// one of the host's own addresses, removed again when dropped. `None`
/// when the address cannot be added (not root, no `ip`).
pub struct LoopbackAlias(String);

impl LoopbackAlias {
    pub fn add(addr: &str) -> Option<LoopbackAlias> {
        assert!(addr.starts_with("127."), "loopback only: {addr}");
        let ok = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| LoopbackAlias(addr.to_string()))
    }
}

impl Drop for LoopbackAlias {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .status();
    }
}
