//! A histogram of `u64` values (latencies in nanoseconds) that any number of tasks record into
//! through `&self`: HdrHistogram (the `hdrhistogram` crate) behind a few sharded locks.
//!
//! Invariants:
//! - Values are kept to [`SIGNIFICANT_DIGITS`] significant decimal digits: a reported quantile is
//!   at most 1/128 (0.8 %) above the true value, and never above the reported maximum.
//! - A task locks the shard of the thread it runs on, so tasks on different worker threads do not
//!   contend; readers merge the shards (a consistent total only once the writers have stopped).
//! - Shards grow to the largest value recorded; the whole `u64` range is accepted.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Precision of the recorded values (HdrHistogram's "significant figures").
const SIGNIFICANT_DIGITS: u8 = 2;
/// Locks per histogram; threads take them in turn.
const SHARDS: usize = 8;

/// A histogram shared by the tasks that record into it.
pub(crate) struct Histogram {
    shards: Box<[Mutex<hdrhistogram::Histogram<u64>>]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(empty())).collect(),
        }
    }
}

fn empty() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits are supported")
}

/// The shard of the calling thread.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Histogram {
    /// Counts one value.
    pub(crate) fn record(&self, value: u64) {
        let mut shard = self.shards[shard()].lock();
        // The shard grows to take the value; one beyond what it can grow to counts as its highest.
        if shard.record(value).is_err() {
            shard.saturating_record(value);
        }
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// All shards in one histogram.
    fn merged(&self) -> hdrhistogram::Histogram<u64> {
        let mut all = empty();
        for shard in &self.shards {
            all.add(&*shard.lock())
                .expect("an auto-resizing histogram takes any other");
        }
        all
    }

    /// The smallest value recorded (to the precision), 0 when empty.
    pub(crate) fn min(&self) -> u64 {
        self.merged().min()
    }

    /// The largest value recorded (to the precision), 0 when empty.
    pub(crate) fn max(&self) -> u64 {
        self.merged().max()
    }

    /// The arithmetic mean (to the precision), 0 when empty.
    pub(crate) fn mean(&self) -> f64 {
        self.merged().mean()
    }

    /// The value at quantile `q` (0..=1), capped at the maximum. 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let all = self.merged();
        all.value_at_quantile(q.clamp(0.0, 1.0)).min(all.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!((h.count(), h.min(), h.max(), h.mean()), (0, 0, 0, 0.0));
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.min(), 1);
        assert!((1000..=1000 + 1000 / 128).contains(&h.max()), "{}", h.max());
        assert!((h.mean() - 500.5).abs() < 500.5 / 128.0, "{}", h.mean());
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
                got >= exact && got as f64 <= exact as f64 * (1.0 + 1.0 / 128.0),
                "q {q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn quantile_is_capped_at_max() {
        let h = Histogram::default();
        h.record(1_000_001);
        assert_eq!(h.quantile(0.999), h.max());
        assert!(h.max() >= 1_000_001 && h.max() as f64 <= 1_000_001.0 * (1.0 + 1.0 / 128.0));
    }

    #[test]
    fn any_value_is_taken_and_threads_add_up() {
        let h = Histogram::default();
        h.record(0);
        h.record(u64::MAX);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|v| h.record(v)));
            }
        });
        assert_eq!(h.count(), 4002);
        assert_eq!(h.min(), 0);
        assert!(h.max() > u64::MAX / 2, "{}", h.max());
    }
}
