//! Client side of the measurements; each works against any path (direct,
//! DWA forward, OpenSSH `-L`) given the address a client connects to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::target::{payload, BUF};

/// Size of one round-trip message.
pub const MSG: usize = 1024;

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes `size` bytes of the payload.
async fn write_payload<W: AsyncWriteExt + Unpin>(w: &mut W, size: u64) -> Result<()> {
    let p = payload();
    let mut left = size;
    while left > 0 {
        let k = left.min(BUF as u64) as usize;
        let off = (left as usize) % (p.len() - BUF);
        w.write_all(&p[off..off + k]).await?;
        left -= k as u64;
    }
    Ok(())
}

/// Reads to EOF (or `limit` bytes, when given) and returns the count.
async fn read_count<R: AsyncReadExt + Unpin>(r: &mut R, limit: Option<u64>) -> Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut n: u64 = 0;
    loop {
        if limit.is_some_and(|l| n >= l) {
            return Ok(n);
        }
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

/// `G` mode: time to receive `size` bytes, from connect to EOF.
pub async fn download(addr: SocketAddr, size: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut s = connect(addr).await?;
    let mut req = vec![b'G'];
    req.extend_from_slice(&size.to_be_bytes());
    s.write_all(&req).await?;
    let n = read_count(&mut s, None).await?;
    let t = start.elapsed();
    if n != size {
        bail!("download: got {n} of {size} bytes");
    }
    Ok(t)
}

/// `S` mode: time to send `size` bytes until the sink confirms the count.
pub async fn upload(addr: SocketAddr, size: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut s = connect(addr).await?;
    s.write_all(b"S").await?;
    write_payload(&mut s, size).await?;
    s.shutdown().await?;
    let n = s
        .read_u64()
        .await
        .context("upload: no count from the sink")?;
    let t = start.elapsed();
    if n != size {
        bail!("upload: sink counted {n} of {size} bytes");
    }
    Ok(t)
}

/// `E` mode: send `size` bytes while concurrently reading them back; time
/// until the last byte has come back.
pub async fn echo(addr: SocketAddr, size: u64) -> Result<Duration> {
    let start = Instant::now();
    let s = connect(addr).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(b"E").await?;
        write_payload(&mut w, size).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let n = read_count(&mut r, Some(size)).await?;
    let t = start.elapsed();
    writer.await.context("echo writer")??;
    if n != size {
        bail!("echo: got back {n} of {size} bytes");
    }
    Ok(t)
}

/// One 1 KiB round trip on an echo connection, in nanoseconds.
async fn round_trip(s: &mut TcpStream, msg: &[u8], back: &mut [u8]) -> Result<u64> {
    let t = Instant::now();
    s.write_all(msg).await?;
    s.read_exact(back).await.context("echo closed early")?;
    Ok(t.elapsed().as_nanos() as u64)
}

async fn echo_conn(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = connect(addr).await?;
    s.write_all(b"E").await?;
    Ok(s)
}

/// `count` sequential 1 KiB round trips on one connection (after `warmup`
/// unrecorded ones); latencies in nanoseconds.
pub async fn rtt(addr: SocketAddr, count: usize, warmup: usize) -> Result<Vec<u64>> {
    let mut s = echo_conn(addr).await?;
    let msg = &payload()[..MSG];
    let mut back = vec![0u8; MSG];
    let mut out = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let ns = round_trip(&mut s, msg, &mut back).await?;
        if i >= warmup {
            out.push(ns);
        }
    }
    if back != msg {
        bail!("echo returned different bytes");
    }
    Ok(out)
}

/// `conns` connections in parallel, each doing `per` round trips once all
/// are connected; all latencies in nanoseconds, and the wall time of the
/// round-trip phase.
pub async fn rtt_concurrent(
    addr: SocketAddr,
    conns: usize,
    per: usize,
) -> Result<(Vec<u64>, Duration)> {
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = echo_conn(addr).await?;
        // One unrecorded round trip: the stream is open end to end.
        let mut back = vec![0u8; MSG];
        round_trip(&mut s, &payload()[..MSG], &mut back).await?;
        socks.push(s);
    }
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for mut s in socks {
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let msg = &payload()[..MSG];
            let mut back = vec![0u8; MSG];
            let mut v = Vec::with_capacity(per);
            b.wait().await;
            for _ in 0..per {
                v.push(round_trip(&mut s, msg, &mut back).await?);
            }
            anyhow::Ok(v)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Vec::with_capacity(conns * per);
    for t in tasks {
        all.extend(t.await.context("round-trip task")??);
    }
    Ok((all, start.elapsed()))
}

/// `n` sequential fresh connections, each timed from connect until its
/// first 1 KiB round trip is back (what a browser's new connection costs).
pub async fn connects(addr: SocketAddr, n: usize) -> Result<Vec<u64>> {
    let msg = &payload()[..MSG];
    let mut back = vec![0u8; MSG];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = connect(addr).await?;
        s.write_all(b"E").await?;
        s.write_all(msg).await?;
        s.read_exact(&mut back).await.context("echo closed early")?;
        out.push(t.elapsed().as_nanos() as u64);
        s.shutdown().await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
    }
    Ok(out)
}

/// Percentile `q` (0..=1) of unsorted nanoseconds, in microseconds.
pub fn percentile_us(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx] as f64 / 1000.0
}
