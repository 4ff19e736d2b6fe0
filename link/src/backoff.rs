//! Reconnect delays: exponential growth from `base`, capped, with full
//! jitter so a relay restart is not met by every agent in the same second.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Next delay: uniform in [ceiling/2, ceiling] (half jitter keeps a floor
    /// so a dead relay is not hammered).
    pub fn next_delay(&mut self) -> Duration {
        let c = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = c / 2;
        let jitter = rand::random::<f64>();
        half + half.mul_f64(jitter)
    }

    /// Called after a session that worked for a while.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut prev_ceiling = Duration::ZERO;
        for _ in 0..30 {
            let c = b.ceiling();
            assert!(c >= prev_ceiling && c <= Duration::from_secs(60));
            let d = b.next_delay();
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
            prev_ceiling = c;
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }
}
