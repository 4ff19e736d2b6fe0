//! ICMP echo with `surge-ping`: an unprivileged datagram ICMP socket
//! first (Linux `net.ipv4.ping_group_range`), a raw socket otherwise
//! (root or CAP_NET_RAW), and an error naming both when neither opens.

use std::net::IpAddr;
use std::time::Duration;

use dwa_proto::diag::{DiagRequest, PingResult, PingStats};
use surge_ping::{Client, Config, PingIdentifier, PingSequence, ICMP};

fn client(addr: IpAddr) -> Result<(Client, &'static str), String> {
    let kind = if addr.is_ipv4() { ICMP::V4 } else { ICMP::V6 };
    let open = |t: socket2::Type| {
        Client::new(&Config::builder().kind(kind).sock_type_hint(t).build()).map(|c| {
            let name = if c.get_socket().get_type() == socket2::Type::DGRAM {
                "datagram"
            } else {
                "raw"
            };
            (c, name)
        })
    };
    // surge-ping falls back from DGRAM to RAW by itself; its error is
    // replaced by one that says what to change on this host.
    open(socket2::Type::DGRAM).map_err(|e| {
        let v = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        format!(
            "cannot open an ICMP socket: an unprivileged datagram socket needs this \
             process's group inside net.{v}.ping_group_range, and a raw socket needs \
             root or CAP_NET_RAW ({e})"
        )
    })
}

pub async fn ping(addr: IpAddr, req: &DiagRequest) -> Result<PingResult, String> {
    let (client, socket) = client(addr)?;
    let mut pinger = client
        .pinger(addr, PingIdentifier(rand::random::<u16>()))
        .await;
    pinger.timeout(Duration::from_millis(req.timeout_ms));
    let payload = vec![0x5a_u8; req.size];
    let interval = Duration::from_millis(req.interval_ms);
    let start = tokio::time::Instant::now();
    let mut rtts = Vec::with_capacity(req.count as usize);
    for seq in 0..req.count {
        // Echo n goes out at start + n·interval, whatever the replies do.
        tokio::time::sleep_until(start + interval * seq).await;
        let seq = PingSequence(u16::try_from(seq).unwrap_or(u16::MAX));
        match pinger.ping(seq, &payload).await {
            Ok((_, d)) => rtts.push(Some(d.as_secs_f64() * 1000.0)),
            Err(surge_ping::SurgeError::Timeout { .. }) => rtts.push(None),
            Err(surge_ping::SurgeError::IOError(e)) => {
                return Err(format!("sending an echo request to {addr}: {e}"))
            }
            Err(e) => {
                tracing::debug!(error = %e, "echo failed");
                rtts.push(None)
            }
        }
    }
    Ok(PingResult {
        address: addr.to_string(),
        socket: socket.into(),
        size: req.size,
        stats: PingStats::from_rtts(&rtts),
        rtts_ms: rtts,
    })
}
