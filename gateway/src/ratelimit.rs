//! Per-socket rate limiting: a token bucket that every client event draws from, and an abuse
//! tracker that turns repeated violations into a disconnect decision.
//!
//! Pure: no clock, no I/O, no locks. Time comes in as an [`Instant`] argument, so tests drive it
//! by hand. Arithmetic is in integer micro-tokens and saturates; no input (a zero rate, a clock
//! that goes backwards, a huge gap) can make it panic. The caller (the policy layer) owns one
//! [`Limiter`] per socket and decides what a [`Verdict`] means on the wire.

use std::time::{Duration, Instant};

/// Micro-tokens per token: the bucket counts in millionths so that refills need no floats.
const MICROS_PER_TOKEN: u64 = 1_000_000;

/// Default number of violations within [`DEFAULT_VIOLATION_WINDOW`] that disconnect a socket.
pub const DEFAULT_MAX_VIOLATIONS: u32 = 10;

/// Default window in which violations are counted.
pub const DEFAULT_VIOLATION_WINDOW: Duration = Duration::from_secs(10);

/// Why rate-limit settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// The refill rate is zero: the bucket would never refill.
    #[error("per_second must be at least 1")]
    ZeroRate,
    /// The bucket holds no token: every event would be rejected.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// Violations are counted over an empty window.
    #[error("the violation window must be longer than zero")]
    ZeroWindow,
}

/// Rate-limit settings of one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Tokens added per second (sustained events per second).
    pub per_second: u32,
    /// Bucket capacity (events allowed in a burst after a quiet period).
    pub burst: u32,
    /// Violations within `violation_window` that disconnect the socket; 0 = never disconnect.
    pub max_violations: u32,
    /// The window in which violations are counted, starting at the first one.
    pub violation_window: Duration,
}

impl Settings {
    /// Settings with `burst = per_second` and the default abuse thresholds.
    pub fn per_second(per_second: u32) -> Self {
        Self {
            per_second,
            burst: per_second,
            max_violations: DEFAULT_MAX_VIOLATIONS,
            violation_window: DEFAULT_VIOLATION_WINDOW,
        }
    }

    /// Checks that the settings describe a usable limiter.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        if self.per_second == 0 {
            return Err(RateLimitError::ZeroRate);
        }
        if self.burst == 0 {
            return Err(RateLimitError::ZeroBurst);
        }
        if self.violation_window.is_zero() {
            return Err(RateLimitError::ZeroWindow);
        }
        Ok(())
    }
}

/// A token bucket: holds up to `burst` tokens, refills at `per_second`, starts full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Capacity in micro-tokens.
    capacity: u64,
    /// Refill rate in micro-tokens per microsecond (numerically equal to tokens per second).
    rate: u64,
    /// Current content in micro-tokens.
    tokens: u64,
    /// The instant up to which refills have been credited.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let capacity = u64::from(burst).saturating_mul(MICROS_PER_TOKEN);
        Self {
            capacity,
            rate: u64::from(per_second),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one; false means the event is over the limit.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= MICROS_PER_TOKEN {
            self.tokens -= MICROS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens / MICROS_PER_TOKEN
    }

    /// How long until one token is available (zero if one is available now).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= MICROS_PER_TOKEN {
            return Duration::ZERO;
        }
        if self.rate == 0 {
            return Duration::MAX;
        }
        let missing = MICROS_PER_TOKEN - self.tokens;
        Duration::from_micros(missing.div_ceil(self.rate))
    }

    fn refill(&mut self, now: Instant) {
        // A clock that went backwards gives zero elapsed time, not a panic.
        let elapsed = now.saturating_duration_since(self.last);
        if self.tokens >= self.capacity {
            self.last = now;
            return;
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let gained = micros.saturating_mul(self.rate);
        self.tokens = self.tokens.saturating_add(gained).min(self.capacity);
        if self.tokens >= self.capacity {
            self.last = now;
        } else {
            // Credit only whole microseconds so that sub-microsecond remainders are not lost
            // when events arrive in quick succession.
            self.last = self
                .last
                .checked_add(Duration::from_micros(micros))
                .unwrap_or(now);
        }
    }
}

/// Counts violations in a window that opens at the first violation; decides when a client is
/// abusive enough to be disconnected.
#[derive(Clone, Debug)]
pub struct AbuseTracker {
    max_violations: u32,
    window: Duration,
    count: u32,
    window_start: Option<Instant>,
}

impl AbuseTracker {
    /// A tracker that trips at `max_violations` violations within `window` (0 = never trips).
    pub fn new(max_violations: u32, window: Duration) -> Self {
        Self {
            max_violations,
            window,
            count: 0,
            window_start: None,
        }
    }

    /// Records a violation; true once the socket should be disconnected.
    pub fn record_violation(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            self.window_start = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.max_violations != 0 && self.count >= self.max_violations
    }

    /// Violations counted in the current window (as of the last recorded one).
    pub fn violations(&self) -> u32 {
        self.count
    }
}

/// What to do with one client event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle the event.
    Allow,
    /// Over the limit: reject the event, keep the socket.
    Reject,
    /// Over the limit too often: reject the event and disconnect the socket.
    Disconnect,
}

/// The per-socket limiter: a bucket plus an abuse tracker.
#[derive(Clone, Debug)]
pub struct Limiter {
    bucket: TokenBucket,
    abuse: AbuseTracker,
}

impl Limiter {
    /// A limiter with a full bucket.
    pub fn new(settings: &Settings, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(settings.per_second, settings.burst, now),
            abuse: AbuseTracker::new(settings.max_violations, settings.violation_window),
        }
    }

    /// Charges one event.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            Verdict::Allow
        } else if self.abuse.record_violation(now) {
            Verdict::Disconnect
        } else {
            Verdict::Reject
        }
    }

    /// The bucket, for inspection.
    pub fn bucket(&mut self) -> &mut TokenBucket {
        &mut self.bucket
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs events at the given millisecond offsets; returns which were allowed.
    fn run_bucket(per_second: u32, burst: u32, at_ms: &[u64]) -> Vec<bool> {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(per_second, burst, t0);
        at_ms.iter().map(|&t| b.try_take(t0 + ms(t))).collect()
    }

    #[test]
    fn bucket_table() {
        let cases: &[(&str, u32, u32, &[u64], &[bool])] = &[
            (
                "burst then empty",
                1,
                3,
                &[0, 0, 0, 0],
                &[true, true, true, false],
            ),
            (
                "refills one per second",
                1,
                1,
                &[0, 500, 999, 1000],
                &[true, false, false, true],
            ),
            (
                "ten per second",
                10,
                1,
                &[0, 50, 100, 150, 200],
                &[true, false, true, false, true],
            ),
            (
                "capacity caps refill",
                1,
                2,
                &[0, 0, 10_000, 10_000, 10_000],
                &[true, true, true, true, false],
            ),
            (
                "zero burst rejects all",
                5,
                0,
                &[0, 1000, 5000],
                &[false, false, false],
            ),
            (
                "zero rate never refills",
                0,
                1,
                &[0, 1000, 100_000],
                &[true, false, false],
            ),
        ];
        for (name, per_second, burst, at, want) in cases {
            assert_eq!(&run_bucket(*per_second, *burst, at), want, "{name}");
        }
    }

    #[test]
    fn fractional_refill_is_not_lost() {
        // 3 tokens per second, events every ~333.4 ms: each one must find a token.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 1, t0);
        assert!(b.try_take(t0));
        let mut t = t0;
        for i in 0..30 {
            t += Duration::from_micros(333_334);
            assert!(b.try_take(t), "event {i}");
        }
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_refill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn huge_values_saturate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, t0);
        assert!(b.try_take(t0 + Duration::from_secs(1_000_000)));
        assert_eq!(
            b.available(t0 + Duration::from_secs(2_000_000)),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn wait_time_table() {
        let t0 = Instant::now();
        let cases: &[(u32, u32, u32, Duration)] = &[
            // (per_second, burst, tokens taken at t0, expected wait at t0)
            (1, 1, 0, Duration::ZERO),
            (1, 1, 1, Duration::from_secs(1)),
            (4, 2, 2, ms(250)),
            (0, 1, 1, Duration::MAX),
        ];
        for &(per_second, burst, taken, want) in cases {
            let mut b = TokenBucket::new(per_second, burst, t0);
            for _ in 0..taken {
                assert!(b.try_take(t0));
            }
            assert_eq!(
                b.wait_time(t0),
                want,
                "{per_second}/s burst {burst} taken {taken}"
            );
        }
    }

    #[test]
    fn abuse_table() {
        // (max, window ms, violation offsets ms, expected decisions)
        let cases: &[(&str, u32, u64, &[u64], &[bool])] = &[
            (
                "trips at max",
                3,
                1000,
                &[0, 10, 20, 30],
                &[false, false, true, true],
            ),
            (
                "window expiry resets",
                3,
                1000,
                &[0, 10, 1010, 1020, 1030],
                &[false, false, false, false, true],
            ),
            (
                "zero never trips",
                0,
                1000,
                &[0, 1, 2, 3, 4, 5],
                &[false; 6],
            ),
            ("one trips at once", 1, 1000, &[0], &[true]),
        ];
        for (name, max, window, at, want) in cases {
            let t0 = Instant::now();
            let mut a = AbuseTracker::new(*max, ms(*window));
            let got: Vec<bool> = at.iter().map(|&t| a.record_violation(t0 + ms(t))).collect();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn limiter_verdicts() {
        let t0 = Instant::now();
        let settings = Settings {
            per_second: 1,
            burst: 2,
            max_violations: 2,
            violation_window: Duration::from_secs(10),
        };
        let mut l = Limiter::new(&settings, t0);
        let got: Vec<Verdict> = [0, 0, 0, 0, 1000]
            .iter()
            .map(|&t| l.check(t0 + ms(t)))
            .collect();
        assert_eq!(
            got,
            vec![
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Reject,
                Verdict::Disconnect,
                Verdict::Allow
            ]
        );
    }

    #[test]
    fn settings_validation_table() {
        let ok = Settings::per_second(5);
        let cases = [
            (ok, Ok(())),
            (
                Settings {
                    per_second: 0,
                    ..ok
                },
                Err(RateLimitError::ZeroRate),
            ),
            (Settings { burst: 0, ..ok }, Err(RateLimitError::ZeroBurst)),
            (
                Settings {
                    violation_window: Duration::ZERO,
                    ..ok
                },
                Err(RateLimitError::ZeroWindow),
            ),
            (
                Settings {
                    max_violations: 0,
                    ..ok
                },
                Ok(()),
            ),
        ];
        for (settings, want) in cases {
            assert_eq!(settings.validate(), want, "{settings:?}");
        }
    }
}
