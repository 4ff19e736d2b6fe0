//! SNMP traps from printers (`[traps]`, off by default): the agent listens
//! on UDP (default 0.0.0.0:162) for v1 and v2c traps and v2c informs, and
//! turns a Printer-MIB alert trap (printerV2Alert, or v1 printerV1Alert:
//! RFC 3805) into an immediate scan of that one printer, spooled and
//! uploaded like any other, so the relay sees the new reading and its
//! alerts without waiting for the next scheduled scan.
//!
//! - Senders outside the agent's policy (the address decision that scans
//!   and connections use), and traps whose community is not one of
//!   `traps.communities`, are ignored; informs are acknowledged only when
//!   accepted.
//! - One triggered scan per device per `traps.min_interval`; at most
//!   [`MAX_RUNNING`] triggered scans at once; the table of devices is
//!   bounded ([`MAX_DEVICES`]). Everything else is counted and dropped.
//! - SNMPv3 traps are not accepted: receiving them needs USM with the
//!   sender's engine id and keys, which neither `snmp2` nor `rasn-snmp`
//!   provides for a receiver; they are dropped and counted.
//!
//! Messages are decoded and informs answered with `rasn-snmp`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dwa_proto::telemetry::{Alert, TrapEvent};
use rasn::types::Integer;
use rasn_snmp::{v1, v2, v2c};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::collector::Collector;
use super::decode::alert_code_name;
use crate::policy::LivePolicy;

/// Triggered scans running at once.
pub const MAX_RUNNING: usize = 8;
/// Devices whose last trap time is remembered.
pub const MAX_DEVICES: usize = 4096;
/// snmpTrapOID.0 (RFC 3416).
const SNMP_TRAP_OID: [u32; 11] = [1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];
/// printerV2Alert (RFC 3805); printerV1Alert maps to it (RFC 3584).
pub const PRINTER_ALERT: [u32; 11] = [1, 3, 6, 1, 2, 1, 43, 18, 2, 0, 1];
/// prtAlertEntry: severity .2, group .4, group index .5, location .6,
/// code .7 (each `.<hrDeviceIndex>.<alert index>`).
const PRT_ALERT_ENTRY: [u32; 10] = [1, 3, 6, 1, 2, 1, 43, 18, 1, 1];

/// Counters of the listener, for logs and tests.
#[derive(Debug, Default)]
pub struct TrapStats {
    pub received: AtomicU64,
    /// Printer alerts that triggered a scan.
    pub triggered: AtomicU64,
    /// Dropped: sender outside the policy.
    pub outside_policy: AtomicU64,
    /// Dropped: unknown community, undecodable, SNMPv3.
    pub refused: AtomicU64,
    /// Dropped: within the device's interval, or too many scans running.
    pub rate_limited: AtomicU64,
    /// Traps that are no printer alert (logged only).
    pub other: AtomicU64,
}

/// What a datagram said.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    version: &'static str,
    community: Vec<u8>,
    trap_oid: Vec<u32>,
    alert: Option<Alert>,
    /// For an inform: the answer to send.
    reply: Option<Vec<u8>>,
}

fn oid_text(o: &[u32]) -> String {
    o.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

fn int(i: &Integer) -> Option<i64> {
    i64::try_from(i).ok()
}

/// Fills `alert` from one varbind of the prtAlertTable.
fn alert_varbind(alert: &mut Option<Alert>, name: &[u32], value: Option<i64>) {
    let Some(rest) = name.strip_prefix(&PRT_ALERT_ENTRY[..]) else {
        return;
    };
    let [col, _device, index] = rest else { return };
    let a = alert.get_or_insert_with(|| Alert {
        index: *index,
        severity: None,
        code: None,
        code_name: None,
        description: None,
        group: None,
        group_index: None,
        location: None,
    });
    match col {
        2 => {
            a.severity = value.map(|s| {
                match s {
                    1 => "other",
                    3 => "critical",
                    4 => "warning",
                    5 => "warning_binary_change_event",
                    _ => return format!("code_{s}"),
                }
                .to_string()
            })
        }
        4 => a.group = value,
        5 => a.group_index = value,
        6 => a.location = value,
        7 => {
            a.code = value;
            a.code_name = value.and_then(alert_code_name).map(str::to_string);
        }
        _ => {}
    }
}

fn parse(datagram: &[u8]) -> Option<Parsed> {
    if let Ok(m) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(datagram) {
        if int(&m.version) != Some(1) {
            return None;
        }
        let (pdu, inform) = match &m.data {
            v2::Pdus::Trap(t) => (&t.0, false),
            v2::Pdus::InformRequest(i) => (&i.0, true),
            _ => return None,
        };
        let mut trap_oid = Vec::new();
        let mut alert = None;
        for vb in &pdu.variable_bindings {
            let name: &[u32] = &vb.name;
            let value = match &vb.value {
                v2::VarBindValue::Value(rasn_smi::v2::ObjectSyntax::Simple(s)) => Some(s),
                _ => None,
            };
            if name == SNMP_TRAP_OID {
                if let Some(rasn_smi::v2::SimpleSyntax::ObjectId(o)) = value {
                    trap_oid = o.to_vec();
                }
                continue;
            }
            let n = match value {
                Some(rasn_smi::v2::SimpleSyntax::Integer(i)) => int(i),
                _ => None,
            };
            alert_varbind(&mut alert, name, n);
        }
        let reply = inform.then(|| {
            rasn::ber::encode(&v2c::Message {
                version: Integer::from(1),
                community: m.community.clone(),
                data: v2::Pdus::Response(v2::Response(v2::Pdu {
                    request_id: pdu.request_id,
                    error_status: 0,
                    error_index: 0,
                    variable_bindings: pdu.variable_bindings.clone(),
                })),
            })
            .ok()
        });
        return Some(Parsed {
            version: if inform { "v2c-inform" } else { "v2c" },
            community: m.community.to_vec(),
            trap_oid,
            alert,
            reply: reply.flatten(),
        });
    }
    let m = rasn::ber::decode::<v1::Message<v1::Pdus>>(datagram).ok()?;
    if int(&m.version) != Some(0) {
        return None;
    }
    let v1::Pdus::Trap(t) = &m.data else {
        return None;
    };
    // RFC 3584 3.1: enterprise-specific → enterprise.0.specific; the
    // generic ones → snmpTraps.(generic + 1).
    let generic = int(&t.generic_trap)?;
    let trap_oid = if generic == 6 {
        let mut o = t.enterprise.to_vec();
        o.push(0);
        o.push(u32::try_from(int(&t.specific_trap)?).ok()?);
        o
    } else {
        let g = u32::try_from(generic).ok()?;
        vec![1, 3, 6, 1, 6, 3, 1, 1, 5, g + 1]
    };
    let mut alert = None;
    for vb in &t.variable_bindings {
        let n = match &vb.value {
            rasn_smi::v1::ObjectSyntax::Simple(rasn_smi::v1::SimpleSyntax::Number(i)) => int(i),
            _ => None,
        };
        alert_varbind(&mut alert, &vb.name, n);
    }
    Some(Parsed {
        version: "v1",
        community: m.community.to_vec(),
        trap_oid,
        alert,
        reply: None,
    })
}

/// Whether the datagram is an SNMPv3 message (counted, not accepted).
fn is_v3(datagram: &[u8]) -> bool {
    rasn::ber::decode::<rasn_snmp::v3::Message>(datagram).is_ok()
}

/// The trap listener of `dwa-agent run`.
pub struct TrapListener {
    pub policy: Arc<LivePolicy>,
    pub collector: Arc<Collector>,
    /// Accepted communities.
    pub communities: Vec<String>,
    /// One triggered scan per device per this interval.
    pub min_interval: Duration,
    pub stats: Arc<TrapStats>,
}

impl TrapListener {
    /// Serves `socket` until `shutdown`.
    pub async fn run(self, socket: UdpSocket, shutdown: CancellationToken) {
        let socket = Arc::new(socket);
        let running = Arc::new(Semaphore::new(MAX_RUNNING));
        let mut last: HashMap<IpAddr, Instant> = HashMap::new();
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, from) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "trap socket");
                        continue;
                    }
                },
            };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let data = &buf[..n];
            // Also decides the inform's answer: at most MAX_AGE stale, the
            // scan it may trigger decides again.
            if !self.policy.recent().decide_icmp(from.ip()).allowed {
                self.stats.outside_policy.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "trap from outside the policy ignored");
                continue;
            }
            let Some(p) = parse(data) else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                if is_v3(data) {
                    tracing::debug!(%from, "SNMPv3 trap ignored: not supported");
                } else {
                    tracing::debug!(%from, "undecodable trap ignored");
                }
                continue;
            };
            if !self.communities.iter().any(|c| c.as_bytes() == p.community) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "trap with an unknown community ignored");
                continue;
            }
            if let Some(reply) = &p.reply {
                if let Err(e) = socket.send_to(reply, from).await {
                    tracing::debug!(error = %e, %from, "inform answer");
                }
            }
            self.handle(from, p, &running, &mut last);
        }
    }

    fn handle(
        &self,
        from: SocketAddr,
        p: Parsed,
        running: &Arc<Semaphore>,
        last: &mut HashMap<IpAddr, Instant>,
    ) {
        let ip = from.ip();
        if p.trap_oid != PRINTER_ALERT {
            self.stats.other.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%ip, trap = %oid_text(&p.trap_oid), "trap (no printer alert): logged only");
            return;
        }
        let now = Instant::now();
        if last
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < self.min_interval)
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%ip, "printer alert trap within the device's interval: no new scan");
            return;
        }
        if last.len() >= MAX_DEVICES {
            let horizon = self.min_interval;
            last.retain(|_, t| now.duration_since(*t) < horizon);
        }
        let Ok(permit) = running.clone().try_acquire_owned() else {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%ip, "too many trap-triggered scans running: trap dropped");
            return;
        };
        if last.len() >= MAX_DEVICES {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return;
        }
        last.insert(ip, now);
        self.stats.triggered.fetch_add(1, Ordering::Relaxed);
        let event = TrapEvent {
            received_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            version: p.version.to_string(),
            trap_oid: oid_text(&p.trap_oid),
            alert: p.alert,
        };
        tracing::info!(%ip, code = ?event.alert.as_ref().and_then(|a| a.code), "printer alert trap: scanning it now");
        let collector = self.collector.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                if let Err(e) = collector.scan_trap(ip, event).await {
                    tracing::error!(error = %e, "trap-triggered scan could not be spooled");
                }
            }
            .instrument(tracing::info_span!("trap_scan", %ip)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_trap() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert!(!is_v3(b"\x30\x00"));
    }
}
