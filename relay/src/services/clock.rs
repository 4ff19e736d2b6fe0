//! The one clock. Services ask it for the time instead of reading the
//! system clock themselves, so every time-dependent rule (expiry, idle,
//! inactivity, lockout windows) can be tested with a clock set by hand.
//! Timers and deadlines still use `tokio::time`, which tests pause and
//! advance.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn at_unix(secs: u64) -> Self {
        Self(Mutex::new(UNIX_EPOCH + Duration::from_secs(secs)))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The clock services hold: cheap to clone, with the formats the relay
/// stores.
#[derive(Clone)]
pub struct Time(Arc<dyn Clock>);

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Time({})", self.rfc3339())
    }
}

impl Default for Time {
    fn default() -> Self {
        Self::system()
    }
}

impl Time {
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    pub fn from_clock(c: Arc<dyn Clock>) -> Self {
        Self(c)
    }

    pub fn now(&self) -> SystemTime {
        self.0.now()
    }

    /// Unix seconds.
    pub fn unix(&self) -> i64 {
        unix(self.now())
    }

    /// RFC 3339 UTC with milliseconds: the text timestamps of the store.
    pub fn rfc3339(&self) -> String {
        rfc3339(self.now())
    }
}

/// Unix seconds of `t` (0 before the epoch).
/// Parses an RFC 3339 time and writes it back in the relay's one format
/// (UTC, milliseconds, `Z`), so stored times compare as text. The error
/// names `field`.
pub fn normalize_time(field: &str, s: &str) -> Result<String, String> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .map_err(|e| format!("{field}: not an RFC 3339 UTC time ({e})"))?;
    Ok(humantime::format_rfc3339_millis(t).to_string())
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `t` as RFC 3339 UTC, whole seconds (API answers).
pub fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
