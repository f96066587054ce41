//! A lock-free log-linear histogram of `u64` values (latencies in nanoseconds), in the spirit of
//! HdrHistogram with two significant binary digits' worth of precision per power of two.
//!
//! Invariants:
//! - Values below [`LINEAR`] are counted exactly; above, a bucket spans `2^shift` values and the
//!   reported value (the bucket's highest value) is at most 1/64 (1.6 %) above the true one.
//! - Recording is one relaxed `fetch_add` (plus the min/max updates), so any number of tasks may
//!   record concurrently; readers see a consistent total only once the writers have stopped.
//! - The whole `u64` range is covered: [`BUCKETS`] buckets, 30 KiB.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two above [`LINEAR`].
const HALF: u64 = 64;
/// Values below this have a bucket each.
const LINEAR: u64 = 2 * HALF;
/// Number of buckets covering `0..=u64::MAX`.
pub(crate) const BUCKETS: usize = (LINEAR + 57 * HALF) as usize;

/// A histogram shared by the tasks that record into it.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket `value` falls in.
pub(crate) fn index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - u64::from(value.leading_zeros());
    let shift = exponent - 6;
    let mantissa = value >> shift;
    (LINEAR + (shift - 1) * HALF + (mantissa - HALF)) as usize
}

/// The highest value that falls in bucket `index`.
pub(crate) fn highest(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = (index - LINEAR) / HALF + 1;
    let mantissa = (index - LINEAR) % HALF + HALF;
    // For the very last bucket this is u64::MAX exactly (the shifted value wraps to 0).
    ((mantissa + 1) << shift).wrapping_sub(1)
}

impl Histogram {
    /// Counts one value.
    pub(crate) fn record(&self, value: u64) {
        self.buckets[index(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.min.fetch_min(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The smallest value recorded (exact), 0 when empty.
    pub(crate) fn min(&self) -> u64 {
        match self.count() {
            0 => 0,
            _ => self.min.load(Ordering::Relaxed),
        }
    }

    /// The largest value recorded (exact).
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The arithmetic mean, 0 when empty.
    pub(crate) fn mean(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum.load(Ordering::Relaxed) as f64 / n as f64,
        }
    }

    /// The value at quantile `q` (0..=1): the highest value of the bucket holding the
    /// `ceil(q * count)`-th smallest value, capped at the exact maximum. 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return highest(i).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_vectors() {
        let table: &[(u64, usize)] = &[
            (0, 0),
            (1, 1),
            (127, 127),
            (128, 128),
            (129, 128),
            (130, 129),
            (255, 191),
            (256, 192),
            (259, 192),
            (260, 193),
            (u64::MAX, BUCKETS - 1),
        ];
        for &(value, want) in table {
            assert_eq!(index(value), want, "value {value}");
        }
    }

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(highest(0), 0);
        assert_eq!(highest(BUCKETS - 1), u64::MAX);
        for i in 1..BUCKETS {
            let low = highest(i - 1) + 1;
            assert_eq!(index(low), i, "lowest value of bucket {i}");
            assert_eq!(index(highest(i)), i, "highest value of bucket {i}");
        }
    }

    #[test]
    fn relative_error_is_bounded() {
        let mut v: u64 = 1;
        while v < u64::MAX / 3 {
            let reported = highest(index(v));
            assert!(reported >= v);
            assert!(
                (reported - v) as f64 <= v as f64 / 64.0,
                "value {v} reported {reported}"
            );
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 1000);
        assert!((h.mean() - 500.5).abs() < 1e-9);
        let table: &[(f64, u64)] = &[
            (0.0, 1),
            (0.05, 50),
            (0.5, 500),
            (0.9, 900),
            (0.99, 990),
            (1.0, 1000),
        ];
        for &(q, exact) in table {
            let got = h.quantile(q);
            assert!(
                got >= exact && got as f64 <= exact as f64 * (1.0 + 1.0 / 64.0),
                "q {q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn quantile_is_capped_at_max() {
        let h = Histogram::default();
        h.record(1_000_001);
        assert_eq!(h.quantile(0.999), 1_000_001);
    }
}
