//! Refusals before authentication — an unknown SSH key, an unsigned
//! upload, a failed single-sign-on callback — can be caused by anyone, as
//! often as they like, so they must not grow the append-only audit log at
//! will. Per kind and source address, the first refusal of an interval is
//! written as it is; the rest of that interval are only counted, and the
//! count is written as one `audit.refusals_counted` record when the
//! interval ends (or the relay stops). Sources are bounded: beyond
//! [`MAX_SOURCES`], refusals from new sources are counted together, per
//! kind, as "many sources". Pure: the time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use dwa_proto::audit::Event;
use tracing::Instrument;

use crate::services::{clock, Services, Svc};

/// One interval: at most one record per kind and source, plus the count.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// (kind, source) pairs tracked at once.
pub const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    /// Unix seconds of the refusal that opened the window.
    started: i64,
    last: i64,
    /// Refusals after the written first one.
    counted: u64,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    /// The first of its interval: write the record.
    Write,
    /// Counted; the interval's summary will say so.
    Counted,
}

/// Refusals not written one by one, as one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: &'static str,
    /// `None`: many sources (the table was full).
    pub source: Option<IpAddr>,
    pub count: u64,
    pub since: i64,
    pub until: i64,
}

#[derive(Debug, Default)]
pub struct RefusalDigest {
    open: HashMap<(&'static str, Option<IpAddr>), Window>,
    /// Summaries of windows that ended, not yet written.
    ready: Vec<Summary>,
}

fn summary(key: (&'static str, Option<IpAddr>), w: &Window) -> Summary {
    Summary {
        kind: key.0,
        source: key.1,
        count: w.counted,
        since: w.started,
        until: w.last,
    }
}

impl RefusalDigest {
    /// One refusal of `kind` from `source` at `now` (unix seconds).
    pub fn note(&mut self, kind: &'static str, source: IpAddr, now: i64) -> Note {
        let interval = INTERVAL.as_secs() as i64;
        let mut key = (kind, Some(source));
        if !self.open.contains_key(&key) && self.open.len() >= MAX_SOURCES {
            key = (kind, None);
        }
        match self.open.get_mut(&key) {
            Some(w) if now < w.started + interval => {
                w.counted += 1;
                w.last = w.last.max(now);
                return Note::Counted;
            }
            Some(w) if w.counted > 0 => self.ready.push(summary(key, w)),
            _ => {}
        }
        let window = Window {
            started: now,
            last: now,
            counted: 0,
        };
        if key.1.is_none() {
            // Many sources: nothing is written one by one.
            self.open.insert(
                key,
                Window {
                    counted: 1,
                    ..window
                },
            );
            return Note::Counted;
        }
        self.open.insert(key, window);
        Note::Write
    }

    /// Summaries of the windows that ended by `now`; ended windows are
    /// forgotten. `all`: end every window (the relay stops).
    pub fn due(&mut self, now: i64, all: bool) -> Vec<Summary> {
        let interval = INTERVAL.as_secs() as i64;
        let mut out = std::mem::take(&mut self.ready);
        self.open.retain(|key, w| {
            let ended = all || now >= w.started + interval;
            if ended && w.counted > 0 {
                out.push(summary(*key, w));
            }
            !ended
        });
        out.sort_by(|a, b| (a.since, a.kind, a.source).cmp(&(b.since, b.kind, b.source)));
        out
    }
}

/// The address part of a peer written as `ip:port` or `ip`.
pub fn source_of(peer: &str) -> Option<IpAddr> {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse())
        .ok()
}

/// Audits a refusal before authentication, digested (see the module).
/// Without a source address it is written as it is.
pub async fn record(
    svc: &Services,
    source: Option<IpAddr>,
    event: Event,
    actor: &str,
    agent: Option<&str>,
) {
    let note = match source {
        Some(ip) => svc.refusals.lock().unwrap_or_else(|e| e.into_inner()).note(
            event.kind(),
            ip,
            svc.time.unix(),
        ),
        None => Note::Write,
    };
    if note == Note::Write {
        svc.audit.record(event, actor, agent).await;
    }
}

/// Writes the summaries due at `now` (all of them when `all`).
pub async fn flush(svc: &Services, all: bool) {
    let due = svc
        .refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .due(svc.time.unix(), all);
    for s in due {
        let at =
            |t: i64| clock::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64));
        let event = Event::AuditRefusalsCounted {
            refused: s.kind.to_string(),
            source: s.source.map(|ip| ip.to_string()),
            count: s.count,
            since: at(s.since),
            until: at(s.until),
        };
        svc.audit.record(event, "relay", None).await;
    }
}

/// Writes due summaries every 10 s, and the rest at shutdown.
pub fn spawn(svc: &Svc) {
    let r = svc.clone();
    svc.tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => flush(&r, false).await,
                    _ = r.shutdown.cancelled() => break,
                }
            }
            flush(&r, true).await;
        }
        .instrument(tracing::info_span!("refusal_digest")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: &str = "telemetry.auth_refused";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_record_per_source_and_interval_then_the_count() {
        let mut d = RefusalDigest::default();
        let a = ip("192.0.2.1");
        assert_eq!(d.note(KIND, a, 1000), Note::Write);
        for t in 1001..2000 {
            let n = d.note(KIND, a, 1000 + (t - 1000) % 60);
            assert_eq!(n, Note::Counted);
        }
        // Another source and another kind each get their own first record.
        assert_eq!(d.note(KIND, ip("192.0.2.2"), 1010), Note::Write);
        assert_eq!(d.note("ssh.auth_refused", a, 1010), Note::Write);
        assert!(d.due(1059, false).is_empty(), "nothing has ended yet");
        let due = d.due(1060, false);
        assert_eq!(
            due,
            [Summary {
                kind: KIND,
                source: Some(a),
                count: 999,
                since: 1000,
                until: 1059,
            }]
        );
        // Windows without extra refusals end silently.
        assert!(d.due(1100, false).is_empty());
        // After its interval, a source gets a record again.
        assert_eq!(d.note(KIND, a, 1200), Note::Write);
    }

    #[test]
    fn a_refusal_after_the_interval_closes_the_old_window() {
        let mut d = RefusalDigest::default();
        let a = ip("192.0.2.1");
        d.note(KIND, a, 0);
        d.note(KIND, a, 10);
        d.note(KIND, a, 20);
        // The flush did not run in between: the old count is kept.
        assert_eq!(d.note(KIND, a, 70), Note::Write);
        let due = d.due(71, true);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].count, 2);
        assert_eq!((due[0].since, due[0].until), (0, 20));
    }

    #[test]
    fn sources_are_bounded() {
        let mut d = RefusalDigest::default();
        for i in 0..MAX_SOURCES as u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(d.note(KIND, source, 5), Note::Write);
        }
        let more = IpAddr::from(std::net::Ipv4Addr::new(11, 0, 0, 1));
        assert_eq!(d.note(KIND, more, 6), Note::Counted);
        let other = IpAddr::from(std::net::Ipv4Addr::new(11, 0, 0, 2));
        assert_eq!(d.note(KIND, other, 7), Note::Counted);
        assert!(d.open.len() <= MAX_SOURCES + 1);
        let due = d.due(0, true);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].source, None);
        assert_eq!(due[0].count, 2);
    }

    #[test]
    fn peers_name_their_source() {
        assert_eq!(source_of("192.0.2.1:4022"), Some(ip("192.0.2.1")));
        assert_eq!(source_of("[2001:db8::1]:22"), Some(ip("2001:db8::1")));
        assert_eq!(source_of("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(source_of("unix"), None);
    }
}
