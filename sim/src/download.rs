//! Deterministic download content, streamed without ever holding it whole.
//!
//! Byte `i` of every download is `BLOCK[i % BLOCK_LEN]`, where BLOCK is 64 KiB
//! from a fixed-seed xorshift generator, built once. Serving is then only
//! cheap `Bytes` slices of one shared buffer, which keeps the simulator out of
//! the way of > 1 GB/s throughput benchmarks; the hash stays reproducible.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Size of the repeating pattern.
pub const BLOCK_LEN: usize = 64 * 1024;
/// Bytes per body frame: four blocks, so every frame but the last starts at
/// a block boundary and can be a slice of the same buffer.
const FRAME_LEN: usize = 4 * BLOCK_LEN;
/// `/download` without `size=`.
pub const DEFAULT_DOWNLOAD: u64 = 64 * 1024 * 1024;
/// Largest `/download` served.
pub const MAX_DOWNLOAD: u64 = 4 * 1024 * 1024 * 1024;

/// FRAME_LEN bytes: the block repeated.
fn frame_buf() -> &'static Bytes {
    static BUF: OnceLock<Bytes> = OnceLock::new();
    BUF.get_or_init(|| {
        // xorshift64*: fast, fixed seed, good enough not to compress away.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = Vec::with_capacity(BLOCK_LEN);
        while block.len() < BLOCK_LEN {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            block.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Bytes::from(block.repeat(FRAME_LEN / BLOCK_LEN))
    })
}

/// The chunks of a `size`-byte download, in order.
fn chunks(size: u64) -> impl Iterator<Item = Bytes> {
    let buf = frame_buf();
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(FRAME_LEN as u64) as usize;
        left -= n as u64;
        Some(buf.slice(..n))
    })
}

/// SHA-256 (lowercase hex) of the body `GET /download?size=<size>` returns.
pub fn download_sha256(size: u64) -> String {
    let mut h = Sha256::new();
    for c in chunks(size) {
        h.update(&c);
    }
    hex::encode(h.finalize())
}

/// A streaming body of exactly `left` deterministic bytes.
#[derive(Debug)]
pub(crate) struct DownloadBody {
    left: u64,
}

impl DownloadBody {
    pub(crate) fn new(size: u64) -> Self {
        DownloadBody { left: size }
    }
}

impl Body for DownloadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(FRAME_LEN as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(frame_buf().slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Exact, so hyper sends Content-Length rather than chunked encoding.
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn block_repeats_and_is_not_trivial() {
        let buf = frame_buf();
        assert_eq!(buf.len(), FRAME_LEN);
        assert_eq!(buf[..BLOCK_LEN], buf[BLOCK_LEN..2 * BLOCK_LEN]);
        // Not all one byte value: a constant block would hide reordering bugs.
        let distinct: std::collections::HashSet<u8> = buf[..BLOCK_LEN].iter().copied().collect();
        assert!(distinct.len() > 200);
    }

    #[tokio::test]
    async fn body_matches_hash_and_length() {
        for size in [0u64, 1, 65_535, 65_536, 300_001, 3 * 1024 * 1024] {
            let body = DownloadBody::new(size);
            assert_eq!(body.size_hint().exact(), Some(size));
            let all = body.collect().await.expect("infallible").to_bytes();
            assert_eq!(all.len() as u64, size);
            assert_eq!(hex::encode(Sha256::digest(&all)), download_sha256(size));
            // Byte i is BLOCK[i % BLOCK_LEN] across frame boundaries.
            if size > FRAME_LEN as u64 {
                assert_eq!(all[FRAME_LEN + 7], all[7]);
            }
        }
        assert_ne!(download_sha256(1), download_sha256(2));
    }
}
