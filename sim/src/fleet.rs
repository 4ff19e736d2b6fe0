//! Starting and stopping a fleet: binding each printer's listeners, accepting
//! connections, and serving HTTP/1.1 (over TLS on the HTTPS port).
//!
//! Ports: a non-zero `http_port`/`https_port` is used as is on every address
//! (as a real fleet: every printer on 80 and 443). Port 0 asks the OS for a
//! free port, separately for each printer and listener, and the chosen port
//! is recorded in [`Printer`] — what tests use, since several test processes
//! can run at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::{self, PrinterState, Site};
use crate::snmp::{self, SnmpDevice, SnmpOptions, SnmpStats};
use crate::stats::{CountingIo, Stats};
use crate::{tls, SimError};

/// A client has this long to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start. `Default` is a real fleet's habits: HTTP on 80, HTTPS on
/// 443, admin/admin — with no addresses, which must be filled in.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// One printer per address.
    pub addresses: Vec<IpAddr>,
    /// 0: a free port per printer (see the module docs).
    pub http_port: u16,
    /// `None`: no HTTPS listener. `Some(0)`: a free port per printer.
    pub https_port: Option<u16>,
    pub username: String,
    pub password: String,
    /// `None`: no SNMP. `Some(0)`: one free port, shared by every printer
    /// (a collector scans one port). Otherwise this port on every address.
    pub snmp_port: Option<u16>,
    /// Community, profiles, faults, black hole (see [`SnmpOptions`]).
    pub snmp: SnmpOptions,
    /// `None`: no IPP. `Some(0)`: a free port per printer. Otherwise this
    /// port on every address (a real printer: 631). Answers
    /// Get-Printer-Attributes (see `ipp`).
    pub ipp_port: Option<u16>,
    /// `None`: no raw port. `Some(0)`: a free port per printer; a real
    /// printer: 9100. Answers PJL `INFO ID` and `INFO STATUS`.
    pub pjl_port: Option<u16>,
    /// `None`: no NetBIOS. `Some(0)`: one free UDP port shared by every
    /// printer (as for SNMP); a real printer: 137. Answers node status
    /// requests with its SNMP sysName (or `PRN<address>` without SNMP).
    pub netbios_port: Option<u16>,
}

impl FleetConfig {
    /// Printers for SNMP tests: every address on one free UDP port, web on
    /// free ports, no HTTPS.
    pub fn snmp(addresses: Vec<IpAddr>, snmp: SnmpOptions) -> FleetConfig {
        FleetConfig {
            addresses,
            http_port: 0,
            https_port: None,
            snmp_port: Some(0),
            snmp,
            ..FleetConfig::default()
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            addresses: Vec::new(),
            http_port: 80,
            https_port: Some(443),
            username: "admin".to_string(),
            password: "admin".to_string(),
            snmp_port: None,
            snmp: SnmpOptions::default(),
            ipp_port: None,
            pjl_port: None,
            netbios_port: None,
        }
    }
}

/// One running printer, as seen from outside.
#[derive(Debug, Clone)]
pub struct Printer {
    pub addr: IpAddr,
    /// The port actually bound (the chosen one when the config said 0).
    pub http_port: u16,
    pub https_port: Option<u16>,
    pub stats: Arc<Stats>,
    /// SHA-256 of the HTTPS certificate's DER, lowercase hex; `None` without HTTPS.
    pub cert_sha256: Option<String>,
    /// The SNMP agent and who it says it is; `None` without SNMP.
    pub snmp: Option<SnmpDevice>,
    /// IPP (HTTP) and raw/PJL ports actually bound, when configured.
    pub ipp_port: Option<u16>,
    pub pjl_port: Option<u16>,
    /// What IPP and PJL say about the printer.
    pub identity: Arc<crate::ipp::Identity>,
    /// The NetBIOS name it answers node status requests with, when NetBIOS runs.
    pub netbios_name: Option<String>,
}

impl Printer {
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.http_port)
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_port.map(|p| SocketAddr::new(self.addr, p))
    }

    /// What this printer calls itself on its HTTP port: `http://addr[:port]`.
    pub fn http_origin(&self) -> String {
        origin("http", self.addr, self.http_port, 80)
    }

    /// `https://addr[:port]`, if it has HTTPS.
    pub fn https_origin(&self) -> Option<String> {
        self.https_port.map(|p| origin("https", self.addr, p, 443))
    }
}

fn origin(scheme: &str, addr: IpAddr, port: u16, default: u16) -> String {
    let host = match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// A running fleet. Dropping it stops every printer (without waiting);
/// [`Fleet::shutdown`] also waits until every task has ended.
#[derive(Debug)]
pub struct Fleet {
    pub printers: Vec<Printer>,
    /// The UDP port of every printer's SNMP agent, when SNMP runs.
    pub snmp_port: Option<u16>,
    /// Datagrams the black hole swallowed, when there is one.
    pub black_hole: Option<Arc<SnmpStats>>,
    /// The UDP port of every printer's NetBIOS name service, when it runs.
    pub netbios_port: Option<u16>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

struct Bound {
    state: Arc<PrinterState>,
    http: (TcpListener, u16),
    https: Option<(TcpListener, u16, TlsAcceptor)>,
    ipp: Option<TcpListener>,
    pjl: Option<TcpListener>,
}

async fn bind(addr: IpAddr, port: u16) -> Result<TcpListener, SimError> {
    let sa = SocketAddr::new(addr, port);
    TcpListener::bind(sa)
        .await
        .map_err(|source| SimError::Bind { addr: sa, source })
}

fn local_port(l: &TcpListener, addr: IpAddr) -> Result<u16, SimError> {
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| SimError::Bind {
            addr: SocketAddr::new(addr, 0),
            source,
        })
}

impl Fleet {
    /// Binds every listener first, then starts serving: an error (say, a port
    /// in use) leaves nothing running.
    pub async fn start(cfg: FleetConfig) -> Result<Fleet, SimError> {
        if cfg.addresses.is_empty() {
            return Err(SimError::NoAddresses);
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut bound = Vec::with_capacity(cfg.addresses.len());
        let mut printers = Vec::with_capacity(cfg.addresses.len());
        for &addr in &cfg.addresses {
            let state = Arc::new(PrinterState::new(
                addr,
                cfg.username.clone(),
                cfg.password.clone(),
                cancel.clone(),
                tracker.clone(),
            ));
            let http = bind(addr, cfg.http_port).await?;
            let http_port = local_port(&http, addr)?;
            let (https, https_port, cert_sha256) = match cfg.https_port {
                Some(p) => {
                    let l = bind(addr, p).await?;
                    let port = local_port(&l, addr)?;
                    let (acceptor, fp) = tls::acceptor_for(addr)?;
                    (Some((l, port, acceptor)), Some(port), Some(fp))
                }
                None => (None, None, None),
            };
            let (ipp, ipp_port) = match cfg.ipp_port {
                Some(p) => {
                    let l = bind(addr, p).await?;
                    let port = local_port(&l, addr)?;
                    (Some(l), Some(port))
                }
                None => (None, None),
            };
            let (pjl, pjl_port) = match cfg.pjl_port {
                Some(p) => {
                    let l = bind(addr, p).await?;
                    let port = local_port(&l, addr)?;
                    (Some(l), Some(port))
                }
                None => (None, None),
            };
            printers.push(Printer {
                addr,
                http_port,
                https_port,
                stats: state.stats.clone(),
                cert_sha256,
                snmp: None,
                ipp_port,
                pjl_port,
                identity: Arc::new(crate::ipp::Identity::new(None, None)),
                netbios_name: None,
            });
            bound.push(Bound {
                state,
                http: (http, http_port),
                https,
                ipp,
                pjl,
            });
        }
        // SNMP: bound before anything serves, like the TCP listeners.
        let mut snmp_port = None;
        let mut black_hole = None;
        let mut snmp_sockets = Vec::new();
        let mut hole_sockets = Vec::new();
        if let Some(port) = cfg.snmp_port {
            let sockets = snmp::bind_all(&cfg.addresses, port)?;
            let devices = snmp::devices(&cfg.snmp, &sockets)?;
            let chosen = sockets.first().map(|s| s.port()).unwrap_or(port);
            if let Some(hole) = &cfg.snmp.black_hole {
                hole_sockets = snmp::bind_black_hole(hole, chosen)?;
                black_hole = Some(Arc::new(SnmpStats::default()));
            }
            for (p, d) in printers.iter_mut().zip(devices) {
                // IPP and PJL tell the SNMP profile's story.
                p.identity = Arc::new(crate::ipp::Identity::new(
                    d.identity.vendor,
                    d.identity.model,
                ));
                p.snmp = Some(d);
            }
            snmp_sockets = sockets;
            snmp_port = Some(chosen);
        }
        let mut netbios_port = None;
        let mut netbios_sockets = Vec::new();
        if let Some(port) = cfg.netbios_port {
            let sockets = snmp::bind_all(&cfg.addresses, port)?;
            netbios_port = sockets.first().map(|s| s.port());
            for p in printers.iter_mut() {
                let (host, mac) = match &p.snmp {
                    Some(d) => (d.identity.sys_name.clone(), mac_bytes(&d.identity.mac)),
                    None => (format!("PRN{}", p.addr).replace(['.', ':'], ""), [0; 6]),
                };
                let st = crate::netbios::NodeStatus::new(&host, mac);
                p.netbios_name = Some(st.name.clone());
                netbios_sockets.push(Arc::new(st));
            }
            for (st, s) in netbios_sockets.drain(..).zip(sockets) {
                crate::netbios::spawn(st, s, cancel.clone(), &tracker);
            }
        }
        for (p, s) in printers.iter().zip(snmp_sockets) {
            if let Some(d) = &p.snmp {
                snmp::spawn_device(d, s, cancel.clone(), &tracker);
            }
        }
        if let Some(stats) = &black_hole {
            snmp::spawn_black_hole(hole_sockets, stats.clone(), cancel.clone(), &tracker);
        }
        for (b, p) in bound.iter_mut().zip(&printers) {
            if let Some(l) = b.ipp.take() {
                let id = p.identity.clone();
                crate::ipp::spawn(crate::ipp::Kind::Ipp, id, l, cancel.clone(), &tracker);
            }
            if let Some(l) = b.pjl.take() {
                let id = p.identity.clone();
                crate::ipp::spawn(crate::ipp::Kind::Pjl, id, l, cancel.clone(), &tracker);
            }
        }
        for b in bound {
            let (http, port) = b.http;
            spawn_listener(
                Arc::new(Site::new(b.state.clone(), false, port)),
                http,
                None,
            );
            if let Some((l, port, acceptor)) = b.https {
                let site = Arc::new(Site::new(b.state, true, port));
                spawn_listener(site, l, Some(acceptor));
            }
        }
        tracing::info!(printers = printers.len(), "fleet started");
        Ok(Fleet {
            printers,
            snmp_port,
            black_hole,
            netbios_port,
            cancel,
            tracker,
        })
    }

    /// Stops every printer and waits for all their tasks (listeners,
    /// connections, WebSockets) to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        tracing::info!("fleet stopped");
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `aa:bb:..` → bytes (zeros when malformed: only the statistics carry it).
fn mac_bytes(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}

fn spawn_listener(site: Arc<Site>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let p = site.printer.clone();
    let span = tracing::info_span!(
        "printer",
        addr = %p.addr,
        scheme = if tls.is_some() { "https" } else { "http" },
    );
    p.tracker
        .spawn(accept_loop(site, listener, tls).instrument(span));
}

async fn accept_loop(site: Arc<Site>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let p = site.printer.clone();
    loop {
        let accepted = tokio::select! {
            _ = p.cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        p.stats.count_connection();
        // Small responses (the latency benchmark's /small) go out at once.
        let _ = sock.set_nodelay(true);
        let io = CountingIo::new(sock, p.stats.clone());
        let site = site.clone();
        let tls = tls.clone();
        p.tracker.spawn(
            async move {
                match tls {
                    None => serve(site, io).await,
                    Some(acceptor) => {
                        let cancel = site.printer.cancel.clone();
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io));
                        let stream = tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = handshake => r,
                        };
                        match stream {
                            Ok(Ok(s)) => serve(site, s).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
}

/// HTTP/1.1 with keep-alive until the client leaves or the fleet stops; an
/// upgraded connection (WebSocket) leaves this future and lives in its own task.
async fn serve<I>(site: Arc<Site>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cancel = site.printer.cancel.clone();
    let svc = service_fn(move |req| app::handle(site.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        // A powered-off printer does not finish its answers.
        _ = cancel.cancelled() => {}
    }
}

/// One JSON line per printer: `{"address", "http", "https", "cert_sha256",
/// "snmp"}` (`https` and `cert_sha256` null without HTTPS; `snmp` null
/// without SNMP, else address, community, profile, serial, mac, vendor,
/// model) — what `dwa-sim` prints.
pub fn describe(fleet: &Fleet) -> Vec<String> {
    fleet
        .printers
        .iter()
        .map(|p| {
            serde_json::json!({
                "address": p.addr.to_string(),
                "http": p.http_addr().to_string(),
                "https": p.https_addr().map(|a| a.to_string()),
                "cert_sha256": p.cert_sha256,
                "ipp_port": p.ipp_port,
                "pjl_port": p.pjl_port,
                "snmp": p.snmp.as_ref().map(|s| serde_json::json!({
                    "address": s.addr.to_string(),
                    "community": s.community,
                    "profile": s.identity.profile,
                    "serial": s.identity.serial,
                    "mac": s.identity.mac,
                    "vendor": s.identity.vendor,
                    "model": s.identity.model,
                    "fault": s.fault.map(|f| format!("{f:?}")),
                })),
            })
            .to_string()
        })
        .collect()
}
