//! Latency histograms: how long answers take, per main daemon, in fixed buckets (as Prometheus
//! histograms have them), cheap enough for every request (one relaxed add into a bucket and one
//! into the sum). The management daemon keeps a snapshot a second to report percentiles over the
//! last 10 s in `khttpd-ctl status`; `/metrics` exports the cumulative buckets.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the buckets, in microseconds; one more bucket holds everything above.
pub(crate) const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = BOUNDS_US.len() + 1;

/// One histogram, written by one main daemon.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A histogram's counts at one moment (per bucket, not cumulative), summable and subtractable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Snapshot {
    /// Count per bucket: `BOUNDS_US[i]` is bucket `i`'s upper bound; the last has none.
    pub buckets: Vec<u64>,
    /// Sum of all durations, in microseconds.
    pub sum_us: u64,
}

impl Snapshot {
    /// Adds `other` (another daemon's).
    pub(crate) fn add(&mut self, other: &Snapshot) {
        self.buckets.resize(BUCKETS, 0);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// What was counted since `earlier`.
    pub(crate) fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// How many durations.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q` quantile (0-1) in milliseconds, interpolated within its bucket, as Prometheus's
    /// `histogram_quantile` does; `None` without observations. Above the last bound: that bound.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let Some(&upper) = BOUNDS_US.get(i) else {
                    return Some(lower as f64 / 1000.0);
                };
                let within = (rank - seen as f64) / n as f64;
                return Some((lower as f64 + within * (upper - lower) as f64) / 1000.0);
            }
            seen += n;
        }
        Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_micros(200)); // (100, 250]
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40)); // (25 ms, 50 ms]
        }
        h.observe(Duration::from_secs(60)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count(), 101);
        assert_eq!(s.buckets[1], 90);
        assert_eq!(s.buckets[8], 10);
        assert_eq!(s.buckets[16], 1);
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((0.1..=0.25).contains(&p50), "{p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!((25.0..=50.0).contains(&p99), "{p99}");
        assert_eq!(Snapshot::default().quantile_ms(0.5), None);
        let mut sum = Snapshot::default();
        sum.add(&s);
        sum.add(&s);
        assert_eq!(sum.count(), 202);
        assert_eq!(sum.since(&s), s);
    }
}
