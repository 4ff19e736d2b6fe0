//! Meter reads of one device over one billing period: pure (no I/O, no
//! clock; times are unix seconds passed in).
//!
//! For each counter any reading has, the value at the period's start and
//! at its end is
//! - **measured**: the reading nearest the boundary, when one lies within
//!   [`Bounds::measured_within`] of it;
//! - else **interpolated** linearly in time between the last reading before
//!   and the first after the boundary (when the counter did not go down
//!   between them);
//! - else **nearest**: the one reading on the only side that has any (or
//!   the one before, when the counter went down across the boundary);
//! - else missing (no reading has the counter).
//!
//! Pages are the sum of the steps from the start value through the
//! readings in between to the end value; a step down is counted as zero,
//! except a reset (down to below [`Bounds::reset_below`]), which counts the
//! new value as pages printed since the reset. Steps between readings whose
//! later reading is in the period are flagged: a drop, a reset, or a jump
//! of more than [`Bounds::max_pages_per_day`] (a gap under a day counts as a
//! day).

use dwa_proto::telemetry::Counters;
use serde::Serialize;

const DAY: i64 = 86_400;

/// The counters a billing report shows, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Counter {
    Total,
    Mono,
    Colour,
    Print,
    Copy,
    Scan,
    Fax,
}

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::Total,
        Counter::Mono,
        Counter::Colour,
        Counter::Print,
        Counter::Copy,
        Counter::Scan,
        Counter::Fax,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Total => "total",
            Counter::Mono => "mono",
            Counter::Colour => "colour",
            Counter::Print => "print",
            Counter::Copy => "copy",
            Counter::Scan => "scan",
            Counter::Fax => "fax",
        }
    }

    pub fn of(self, c: &Counters) -> Option<u64> {
        match self {
            Counter::Total => c.total,
            Counter::Mono => c.mono,
            Counter::Colour => c.colour,
            Counter::Print => c.print,
            Counter::Copy => c.copy,
            Counter::Scan => c.scan,
            Counter::Fax => c.fax,
        }
    }
}

/// The limits a period's reads are judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// A reading this close to a boundary (seconds) is its measured value.
    pub measured_within: i64,
    /// More pages a day than this is an implausible jump.
    pub max_pages_per_day: u64,
    /// A drop to below this is a reset (the counter started over).
    pub reset_below: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            measured_within: DAY,
            // Above what the fastest production devices print in a day.
            max_pages_per_day: 50_000,
            reset_below: 1_000,
        }
    }
}

/// One reading: when it was taken and its counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at: i64,
    pub counters: Counters,
}

/// How a boundary value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "basis", content = "taken_at")]
pub enum Basis {
    /// A reading within `measured_within` of the boundary, taken then.
    Measured(i64),
    /// Between the readings around the boundary.
    Interpolated,
    /// The reading taken then, the nearest one on the only usable side.
    Nearest(i64),
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Measured(_) => "measured",
            Basis::Interpolated => "interpolated",
            Basis::Nearest(_) => "nearest",
        }
    }

    pub fn estimated(self) -> bool {
        !matches!(self, Basis::Measured(_))
    }

    /// When the reading behind the value was taken (None: interpolated).
    pub fn taken_at(self) -> Option<i64> {
        match self {
            Basis::Measured(t) | Basis::Nearest(t) => Some(t),
            Basis::Interpolated => None,
        }
    }
}

/// A counter's value at a boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Value {
    pub value: u64,
    #[serde(flatten)]
    pub basis: Basis,
}

/// What a step between two readings looked wrong for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagKind {
    Drop,
    Reset,
    Jump,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Drop => "drop",
            FlagKind::Reset => "reset",
            FlagKind::Jump => "jump",
        }
    }
}

/// A flagged step: from one reading's value to the next one's, taken `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub kind: FlagKind,
    pub counter: Counter,
    pub at: i64,
    pub from: u64,
    pub to: u64,
}

/// One counter of one device over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub counter: Counter,
    pub start: Option<Value>,
    pub end: Option<Value>,
    /// None when a boundary value is missing.
    pub pages: Option<u64>,
    pub flags: Vec<Flag>,
}

impl Line {
    pub fn estimated(&self) -> bool {
        [self.start, self.end]
            .iter()
            .any(|v| v.is_none_or(|v| v.basis.estimated()))
    }
}

/// Judges one step from `from` (taken `t0`) to `to` (taken `t1`).
pub fn judge(from: u64, to: u64, t0: i64, t1: i64, b: &Bounds) -> Option<FlagKind> {
    if to < from {
        return Some(if to < b.reset_below {
            FlagKind::Reset
        } else {
            FlagKind::Drop
        });
    }
    let days = u64::try_from((t1 - t0).max(DAY)).unwrap_or(u64::MAX) as f64 / DAY as f64;
    ((to - from) as f64 > b.max_pages_per_day as f64 * days).then_some(FlagKind::Jump)
}

/// Pages of one step: a reset counts its new value, another drop nothing.
fn step_pages(from: u64, to: u64, b: &Bounds) -> u64 {
    match to.checked_sub(from) {
        Some(d) => d,
        None if to < b.reset_below => to,
        None => 0,
    }
}

/// The counter's value at boundary `t` from its readings `pts` (sorted by
/// time).
fn at_boundary(pts: &[(i64, u64)], t: i64, b: &Bounds) -> Option<Value> {
    let nearest = pts.iter().min_by_key(|(at, _)| (at - t).abs())?;
    if (nearest.0 - t).abs() <= b.measured_within {
        return Some(Value {
            value: nearest.1,
            basis: Basis::Measured(nearest.0),
        });
    }
    let before = pts.iter().rev().find(|(at, _)| *at <= t);
    let after = pts.iter().find(|(at, _)| *at > t);
    Some(match (before, after) {
        (Some(&(t0, v0)), Some(&(t1, v1))) if v1 >= v0 => {
            let share = (t - t0) as f64 / (t1 - t0) as f64;
            Value {
                value: v0 + ((v1 - v0) as f64 * share).round() as u64,
                basis: Basis::Interpolated,
            }
        }
        (Some(&(t0, v0)), _) => Value {
            value: v0,
            basis: Basis::Nearest(t0),
        },
        (None, Some(&(t1, v1))) => Value {
            value: v1,
            basis: Basis::Nearest(t1),
        },
        (None, None) => return None,
    })
}

/// Where a boundary value sits in time, for ordering it among readings.
fn anchor(v: &Value, t: i64) -> i64 {
    v.basis.taken_at().unwrap_or(t)
}

/// The period `[start, end)` of one device from its readings (any order;
/// those far outside the period only serve as the readings around it).
pub fn compute(samples: &[Sample], start: i64, end: i64, b: &Bounds) -> Vec<Line> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.at);
    let mut out = Vec::new();
    for counter in Counter::ALL {
        let pts: Vec<(i64, u64)> = sorted
            .iter()
            .filter_map(|s| counter.of(&s.counters).map(|v| (s.at, v)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let flags = pts
            .windows(2)
            .filter(|w| (start..end).contains(&w[1].0))
            .filter_map(|w| {
                judge(w[0].1, w[1].1, w[0].0, w[1].0, b).map(|kind| Flag {
                    kind,
                    counter,
                    at: w[1].0,
                    from: w[0].1,
                    to: w[1].1,
                })
            })
            .collect();
        let s = at_boundary(&pts, start, b);
        let e = at_boundary(&pts, end, b);
        let pages = match (&s, &e) {
            (Some(s), Some(e)) => {
                let (a0, a1) = (anchor(s, start), anchor(e, end));
                let mut seq = vec![s.value];
                seq.extend(
                    pts.iter()
                        .filter(|(at, _)| *at > a0 && *at < a1)
                        .map(|(_, v)| *v),
                );
                seq.push(e.value);
                Some(seq.windows(2).map(|w| step_pages(w[0], w[1], b)).sum())
            }
            _ => None,
        };
        out.push(Line {
            counter,
            start: s,
            end: e,
            pages,
            flags,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_782_864_000; // 2026-07-01T00:00:00Z
    const T1: i64 = T0 + 31 * DAY; // 2026-08-01

    fn total(at: i64, v: u64) -> Sample {
        Sample {
            at,
            counters: Counters {
                total: Some(v),
                ..Counters::default()
            },
        }
    }

    fn run(samples: &[Sample]) -> Vec<Line> {
        compute(samples, T0, T1, &Bounds::default())
    }

    fn one(samples: &[Sample]) -> Line {
        let mut l = run(samples);
        assert_eq!(l.len(), 1, "{l:?}");
        l.remove(0)
    }

    #[test]
    fn no_readings_give_no_lines() {
        assert!(run(&[]).is_empty());
        // A reading without counters: nothing known either.
        let s = Sample {
            at: T0,
            counters: Counters::default(),
        };
        assert!(run(&[s]).is_empty());
    }

    #[test]
    fn readings_near_both_boundaries_are_measured() {
        let l = one(&[
            total(T0 - 3_600, 1_000),
            total(T0 + 10 * DAY, 1_500),
            total(T1 + 7_200, 2_000),
        ]);
        assert_eq!(
            l.start,
            Some(Value {
                value: 1_000,
                basis: Basis::Measured(T0 - 3_600)
            })
        );
        assert_eq!(
            l.end,
            Some(Value {
                value: 2_000,
                basis: Basis::Measured(T1 + 7_200)
            })
        );
        assert_eq!(l.pages, Some(1_000));
        assert!(!l.estimated());
        assert!(l.flags.is_empty());
    }

    #[test]
    fn a_reading_exactly_at_the_end_belongs_to_the_end() {
        let l = one(&[total(T0, 10), total(T1, 40)]);
        assert_eq!(l.end.map(|v| v.value), Some(40));
        assert_eq!(l.pages, Some(30));
    }

    #[test]
    fn far_boundaries_are_interpolated_between_the_readings_around_them() {
        // 10 days before the start and 10 days in: the start is halfway.
        let l = one(&[
            total(T0 - 10 * DAY, 1_000),
            total(T0 + 10 * DAY, 3_000),
            total(T1 - 5 * DAY, 4_000),
            total(T1 + 5 * DAY, 5_000),
        ]);
        assert_eq!(
            l.start,
            Some(Value {
                value: 2_000,
                basis: Basis::Interpolated
            })
        );
        assert_eq!(
            l.end,
            Some(Value {
                value: 4_500,
                basis: Basis::Interpolated
            })
        );
        assert_eq!(l.pages, Some(2_500));
        assert!(l.estimated());
    }

    #[test]
    fn one_side_only_takes_the_nearest_reading() {
        // Installed mid-period, not read since the week before the end.
        let l = one(&[total(T0 + 5 * DAY, 100), total(T1 - 7 * DAY, 900)]);
        assert_eq!(
            l.start,
            Some(Value {
                value: 100,
                basis: Basis::Nearest(T0 + 5 * DAY)
            })
        );
        assert_eq!(
            l.end,
            Some(Value {
                value: 900,
                basis: Basis::Nearest(T1 - 7 * DAY)
            })
        );
        assert_eq!(l.pages, Some(800));
    }

    #[test]
    fn one_reading_is_both_boundaries_and_no_pages() {
        let l = one(&[total(T0 + 15 * DAY, 777)]);
        assert_eq!(
            l.start.map(|v| v.basis),
            Some(Basis::Nearest(T0 + 15 * DAY))
        );
        assert_eq!(l.end.map(|v| v.value), Some(777));
        assert_eq!(l.pages, Some(0));
        assert!(l.estimated());
    }

    #[test]
    fn absent_counters_have_no_line_and_present_ones_do() {
        let mut a = total(T0, 100);
        a.counters.colour = Some(10);
        let mut b = total(T1, 300);
        b.counters.colour = Some(60);
        let l = run(&[a, b]);
        let names: Vec<&str> = l.iter().map(|l| l.counter.as_str()).collect();
        assert_eq!(names, ["total", "colour"]);
        assert_eq!(l[1].pages, Some(50));
    }

    #[test]
    fn a_drop_is_flagged_and_counts_nothing() {
        let l = one(&[
            total(T0, 10_000),
            total(T0 + 10 * DAY, 12_000),
            total(T0 + 11 * DAY, 11_000),
            total(T1, 11_500),
        ]);
        assert_eq!(
            l.flags,
            [Flag {
                kind: FlagKind::Drop,
                counter: Counter::Total,
                at: T0 + 11 * DAY,
                from: 12_000,
                to: 11_000
            }]
        );
        assert_eq!(l.pages, Some(2_000 + 500));
    }

    #[test]
    fn a_reset_is_flagged_and_counts_from_zero() {
        let l = one(&[
            total(T0, 50_000),
            total(T0 + 10 * DAY, 52_000),
            total(T0 + 11 * DAY, 30),
            total(T1, 530),
        ]);
        assert_eq!(l.flags.len(), 1);
        assert_eq!(l.flags[0].kind, FlagKind::Reset);
        assert_eq!((l.flags[0].from, l.flags[0].to), (52_000, 30));
        assert_eq!(l.pages, Some(2_000 + 30 + 500));
    }

    #[test]
    fn a_jump_is_flagged_but_still_counted() {
        let b = Bounds {
            max_pages_per_day: 1_000,
            ..Bounds::default()
        };
        // 2 days, 5 000 pages: 2 500 a day. An hour's 900: within a day's.
        let s = [
            total(T0, 0),
            total(T0 + 3_600, 900),
            total(T0 + 2 * DAY + 3_600, 5_900),
            total(T1, 6_000),
        ];
        let l = compute(&s, T0, T1, &b).remove(0);
        assert_eq!(l.flags.len(), 1, "{:?}", l.flags);
        assert_eq!(l.flags[0].kind, FlagKind::Jump);
        assert_eq!(l.flags[0].at, T0 + 2 * DAY + 3_600);
        assert_eq!(l.pages, Some(6_000));
    }

    #[test]
    fn only_steps_ending_in_the_period_are_flagged() {
        let l = one(&[
            total(T0 - 20 * DAY, 5_000),
            total(T0 - 10 * DAY, 4_000), // before: the previous period's
            total(T0 + DAY, 4_100),
            total(T1 + DAY, 3_000), // after: the next period's
        ]);
        assert!(l.flags.is_empty(), "{:?}", l.flags);
    }

    #[test]
    fn interpolation_across_a_drop_takes_the_reading_before() {
        let l = one(&[
            total(T0 - 10 * DAY, 90_000),
            total(T0 + 10 * DAY, 100),
            total(T1, 400),
        ]);
        assert_eq!(
            l.start,
            Some(Value {
                value: 90_000,
                basis: Basis::Nearest(T0 - 10 * DAY)
            })
        );
        assert_eq!(l.flags[0].kind, FlagKind::Reset);
        assert_eq!(l.pages, Some(400));
    }

    #[test]
    fn consecutive_periods_share_their_boundary_value() {
        let s = [
            total(T0 - 10 * DAY, 0),
            total(T0 + 20 * DAY, 3_000),
            total(T1 + 20 * DAY, 6_100),
        ];
        let a = compute(&s, T0 - 31 * DAY, T0, &Bounds::default()).remove(0);
        let b = compute(&s, T0, T1, &Bounds::default()).remove(0);
        assert_eq!(a.end, b.start);
        assert_eq!(b.start.map(|v| v.value), Some(1_000));
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let l = one(&[total(T1, 300), total(T0, 100)]);
        assert_eq!(l.pages, Some(200));
    }
}
