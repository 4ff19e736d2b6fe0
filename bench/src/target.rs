//! The in-process target server. The first byte a client sends picks the
//! mode: `S` sink (read to EOF, reply with the 8-byte big-endian count),
//! `G` generator (read an 8-byte big-endian length, write that many bytes,
//! close), `E` echo (echo everything back until EOF).

use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of the read/write buffers on both ends.
pub const BUF: usize = 256 * 1024;

/// 1 MiB of incompressible bytes (xorshift), shared by the generator and the
/// clients, so that a compressing tunnel gains nothing.
pub fn payload() -> Arc<Vec<u8>> {
    static P: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(1 << 20);
        while v.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        Arc::new(v)
    })
    .clone()
}

/// Accepts connections forever (the task is dropped at the end of the run).
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let _ = handle(sock).await;
        });
    }
}

async fn handle(mut s: TcpStream) -> std::io::Result<()> {
    let mut mode = [0u8; 1];
    if s.read(&mut mode).await? == 0 {
        return Ok(()); // readiness probes connect and close
    }
    match mode[0] {
        b'S' => {
            let mut buf = vec![0u8; BUF];
            let mut n: u64 = 0;
            loop {
                let k = s.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            s.write_all(&n.to_be_bytes()).await?;
        }
        b'G' => {
            let mut left = s.read_u64().await?;
            let p = payload();
            while left > 0 {
                let k = left.min(BUF as u64) as usize;
                let off = (left as usize) % (p.len() - BUF);
                s.write_all(&p[off..off + k]).await?;
                left -= k as u64;
            }
        }
        b'E' => {
            let mut buf = vec![0u8; BUF];
            loop {
                let k = s.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                s.write_all(&buf[..k]).await?;
            }
        }
        _ => return Ok(()),
    }
    s.shutdown().await
}
