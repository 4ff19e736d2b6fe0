//! The stream service: what the agent does when the relay asks for a byte
//! stream to `host:port`. Resolve, decide with the local policy, connect to
//! exactly the address that was checked, then carry bytes. A refusal is
//! reported on the control channel (for the relay's audit) and answered
//! with its reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dwa_link::control::ControlSender;
use dwa_link::flow::{CreditTable, Flow, FlowStream};
use dwa_link::transport::BoxIo;
use dwa_proto::control::{ControlMsg, Denial, TlsInfo};
use dwa_proto::stream::{StreamId, DEFAULT_WINDOW};
use russh::client::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::policy::LivePolicy;

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolve + connect must finish before the relay stops waiting (10 s by
/// default), or the reason for a refusal would never reach it.
const OPEN_BUDGET: Duration = Duration::from_secs(8);

/// After the relay closed a stream, how long its last bytes may take to
/// reach the target before the target connection is dropped.
const LINGER: Duration = Duration::from_secs(30);

/// Per-session stream state (credits and control are per SSH session).
pub struct StreamService {
    pub policy: Arc<LivePolicy>,
    pub credits: Arc<CreditTable>,
    pub control: OnceLock<ControlSender>,
    pub limit: Arc<Semaphore>,
    pub connect_timeout: Duration,
    /// Built on first use: most sites never reach an HTTPS printer.
    pub printer_tls: OnceLock<Option<Arc<rustls::ClientConfig>>>,
    /// The agent's own record of every stream opened or refused.
    pub audit: crate::local_audit::LocalAudit,
}

/// Why a stream was refused: a rule code and one human line.
struct Refusal {
    rule: String,
    reason: String,
}

impl StreamService {
    async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
        // A literal (v4, v6, bracketed v6) is used as is: no DNS involved.
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
            Ok(Err(e)) => Err(Refusal {
                rule: "resolve_failed".into(),
                reason: format!("cannot resolve {host:?}: {e}"),
            }),
            Err(_) => Err(Refusal {
                rule: "resolve_failed".into(),
                reason: format!("resolving {host:?} timed out"),
            }),
        }
    }

    async fn connect(&self, host: &str, port: u32) -> Result<(TcpStream, SocketAddr), Refusal> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(Refusal {
                rule: "invalid_port".into(),
                reason: format!("port {port} is not a TCP port"),
            })?;
        let addrs = Self::resolve(host, port).await?;
        if addrs.is_empty() {
            return Err(Refusal {
                rule: "resolve_failed".into(),
                reason: format!("{host:?} resolved to no address"),
            });
        }
        let allowed = self
            .policy
            .now()
            .filter_resolved(&addrs, port)
            .map_err(|d| Refusal {
                rule: d.rule.name().to_string(),
                reason: d.reason(),
            })?;
        let mut last = String::new();
        for ip in allowed {
            // Connect to the checked address itself, never re-resolve.
            let sa = SocketAddr::new(ip, port);
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(sa)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, sa));
                }
                Ok(Err(e)) => last = format!("{sa}: {e}"),
                Err(_) => last = format!("{sa}: no answer within {:?}", self.connect_timeout),
            }
        }
        Err(Refusal {
            rule: "connect_failed".into(),
            reason: format!("allowed by policy but the connection failed: {last}"),
        })
    }

    /// TLS toward an HTTPS printer, any certificate (see
    /// `dwa_link::tls::AnyCert`); returns the stream and what the relay
    /// records about the certificate. With `legacy-tls`, a printer that
    /// refuses TLS 1.2+ is reached again on the same checked address `addr`
    /// through OpenSSL allowing TLS 1.0+ ([`legacy`]).
    async fn tls(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        host: &str,
        id: StreamId,
    ) -> Result<(BoxIo, TlsInfo), Refusal> {
        #[cfg(not(feature = "legacy-tls"))]
        let _ = addr;
        let fail = |reason: String| Refusal {
            rule: "tls_failed".into(),
            reason,
        };
        let name = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| fail(format!("{host:?} is not a TLS server name: {e}")))?,
        };
        let cfg = self
            .printer_tls
            .get_or_init(|| dwa_link::tls::any_cert_client_config().map(Arc::new).ok())
            .clone()
            .ok_or_else(|| fail("TLS client configuration unavailable".into()))?;
        let tls = match tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
        {
            Ok(t) => t,
            #[cfg(feature = "legacy-tls")]
            Err(e) if legacy::worth_retrying(&e) => {
                tracing::info!(%host, error = %e, "TLS 1.2+ refused; retrying with the legacy connector");
                return legacy::connect(addr, host, id, self.connect_timeout)
                    .await
                    .map_err(|le| {
                        fail(format!(
                            "TLS handshake with {host} failed: {e}; legacy TLS (1.0+) also failed: {le}"
                        ))
                    });
            }
            Err(e) => return Err(fail(format!("TLS handshake with {host} failed: {e}"))),
        };
        let (_, conn) = tls.get_ref();
        let info = TlsInfo {
            stream: id,
            cert_sha256: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| dwa_link::tls::fingerprint(c))
                .unwrap_or_default(),
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
        };
        Ok((Box::new(tls), info))
    }

    /// Handles one relay-opened channel; runs until the stream ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve(
        self: Arc<Self>,
        channel: Channel<Msg>,
        host: String,
        port: u32,
        tls: bool,
        id: StreamId,
        reply: ChannelOpenHandle,
    ) {
        let Some(control) = self.control.get().cloned() else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        let refuse = |r: Refusal, reply: ChannelOpenHandle| {
            let control = control.clone();
            let host = host.clone();
            let audit = self.audit.clone();
            async move {
                tracing::info!(%host, port, rule = %r.rule, reason = %r.reason, "stream refused");
                audit.record(
                    "stream.denied",
                    serde_json::json!({"stream": id, "host": host, "port": port, "tls": tls,
                                       "rule": r.rule, "reason": r.reason}),
                );
                control.send(ControlMsg::Denied(Denial {
                    stream: id,
                    host,
                    port: u16::try_from(port).unwrap_or(0),
                    rule: r.rule,
                    reason: r.reason.clone(),
                }));
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1, // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                        reason: r.reason,
                    })
                    .await;
            }
        };
        let Ok(_permit) = self.limit.clone().try_acquire_owned() else {
            let r = Refusal {
                rule: "too_many_streams".into(),
                reason: "the agent is carrying its maximum number of streams".into(),
            };
            return refuse(r, reply).await;
        };
        let open = async {
            let (tcp, addr) = self.connect(&host, port).await?;
            if !tls {
                return Ok((Box::new(tcp) as BoxIo, addr, None));
            }
            let (io, info) = self.tls(tcp, addr, &host, id).await?;
            Ok((io, addr, Some(info)))
        };
        let connected = match tokio::time::timeout(OPEN_BUDGET, open).await {
            Ok(r) => r,
            Err(_) => Err(Refusal {
                rule: "connect_failed".into(),
                reason: format!("no connection to {host}:{port} within {OPEN_BUDGET:?}"),
            }),
        };
        let (mut tcp, addr, info) = match connected {
            Ok(x) => x,
            Err(r) => return refuse(r, reply).await,
        };
        if let Some(info) = info {
            // Before the accept: the relay waits for it with the channel.
            control.send(ControlMsg::TlsInfo(info));
        }
        reply.accept().await;
        tracing::debug!(%addr, stream = id, "stream open");
        self.audit.record(
            "stream.open",
            serde_json::json!({"stream": id, "host": host, "port": port, "tls": tls,
                               "address": addr.to_string()}),
        );
        let mut flow = FlowStream::new(
            channel,
            id,
            Flow::Credit {
                table: self.credits.clone(),
                control: control.clone(),
                peer_window: DEFAULT_WINDOW,
                own_window: DEFAULT_WINDOW,
            },
        );
        let gone = flow.gone();
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut flow, 64 * 1024, 64 * 1024);
        tokio::pin!(copy);
        let r = tokio::select! {
            r = &mut copy => r,
            // The relay closed the stream or the session died: finish what
            // is buffered, but do not wait forever on a target that never
            // closes its side.
            _ = gone.cancelled() => match tokio::time::timeout(LINGER, &mut copy).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::other("channel closed; target connection dropped")),
            },
        };
        tracing::debug!(%addr, stream = id, result = ?r, "stream closed");
    }
}

/// Printers that only speak TLS 1.0/1.1 or old cipher suites: OpenSSL at
/// security level 0, used only after rustls (TLS 1.2+) failed. Such links
/// are weak; the relay records them as `legacy` with their version.
#[cfg(feature = "legacy-tls")]
pub mod legacy {
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::OnceLock;
    use std::time::Duration;

    use dwa_link::transport::BoxIo;
    use dwa_proto::control::TlsInfo;
    use dwa_proto::stream::StreamId;
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    use tokio::net::TcpStream;

    /// Marks the cipher of a legacy session in [`TlsInfo`] (the relay reads
    /// it as the `legacy` flag).
    pub const CIPHER_PREFIX: &str = "openssl:";

    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Whether a rustls failure looks like an old server: it refused our
    /// versions or ciphers, or hung up on our ClientHello (old embedded
    /// stacks do). Certificate problems never get here (any certificate
    /// is accepted and recorded).
    pub fn worth_retrying(e: &std::io::Error) -> bool {
        use rustls::AlertDescription as A;
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return matches!(
                t,
                rustls::Error::AlertReceived(
                    A::ProtocolVersion
                        | A::HandshakeFailure
                        | A::InsufficientSecurity
                        | A::IllegalParameter
                        | A::DecodeError
                ) | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::InvalidMessage(_)
            );
        }
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        )
    }

    fn connector() -> Result<&'static SslConnector, String> {
        static C: OnceLock<Result<SslConnector, String>> = OnceLock::new();
        C.get_or_init(|| {
            let build = || -> Result<SslConnector, openssl::error::ErrorStack> {
                let mut b = SslConnector::builder(SslMethod::tls_client())?;
                b.set_min_proto_version(Some(SslVersion::TLS1))?;
                // Old printers: SHA-1 signatures, small keys, CBC suites.
                b.set_security_level(0);
                b.set_cipher_list("ALL:@SECLEVEL=0")?;
                // Like the rustls path: any certificate, recorded by its
                // SHA-256 (the relay pins and flags changes).
                b.set_verify(SslVerifyMode::NONE);
                Ok(b.build())
            };
            build().map_err(|e| format!("OpenSSL setup: {e}"))
        })
        .as_ref()
        .map_err(|e| e.clone())
    }

    /// OpenSSL's version names in the form rustls reports them.
    fn version_name(v: &str) -> String {
        match v {
            "TLSv1" => "TLSv1_0".into(),
            "TLSv1.1" => "TLSv1_1".into(),
            "TLSv1.2" => "TLSv1_2".into(),
            "TLSv1.3" => "TLSv1_3".into(),
            other => other.to_string(),
        }
    }

    /// A new TCP connection to `addr` (already allowed by the policy) and
    /// an OpenSSL handshake allowing TLS 1.0+.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        id: StreamId,
        connect_timeout: Duration,
    ) -> Result<(BoxIo, TlsInfo), String> {
        let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("reconnect to {addr}: {e}")),
            Err(_) => return Err(format!("reconnect to {addr}: no answer")),
        };
        let _ = tcp.set_nodelay(true);
        let mut cfg = connector()?
            .configure()
            .map_err(|e| format!("OpenSSL: {e}"))?;
        let literal = host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
        cfg.set_verify_hostname(false);
        // SNI only carries DNS names.
        cfg.set_use_server_name_indication(!literal);
        let ssl = cfg
            .into_ssl(host.trim_matches(['[', ']']))
            .map_err(|e| format!("OpenSSL: {e}"))?;
        let mut tls =
            tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| format!("OpenSSL: {e}"))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut tls).connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("handshake: {e}")),
            Err(_) => return Err("handshake timed out".into()),
        }
        let ssl = tls.ssl();
        let info = TlsInfo {
            stream: id,
            cert_sha256: ssl
                .peer_certificate()
                .and_then(|c| c.to_der().ok())
                .map(|d| dwa_link::tls::fingerprint(&d))
                .unwrap_or_default(),
            version: version_name(ssl.version_str()),
            cipher: format!(
                "{CIPHER_PREFIX}{}",
                ssl.current_cipher().map(|c| c.name()).unwrap_or("unknown")
            ),
        };
        tracing::info!(%addr, version = %info.version, cipher = %info.cipher, "legacy TLS session");
        Ok((Box::new(tls), info))
    }
}
