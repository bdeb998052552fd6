//! The one retry policy: how long to wait before trying again, for every loop that retries
//! (a remote embedding call, a failing document in the pipeline, a PostgreSQL write that
//! conflicted, a database that is down, the queue's listening connection, opening a
//! database file someone else holds).
//!
//! A [`Backoff`] is exponential and capped, and each delay is jittered with a real random
//! number into [half, whole] of its nominal value, so that many processes or documents
//! failing at once spread out instead of retrying in step. A provider's or server's own
//! "not before" (HTTP `Retry-After`) is a floor the delay never goes under.
//!
//! This module owns only arithmetic on durations: it never sleeps, logs or decides whether
//! an error is worth retrying (each caller knows its errors).

use std::time::Duration;

/// Exponential backoff: the `n`th retry waits about `first * factor^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, factor: u32, max: Duration) -> Backoff {
        Backoff { first, factor, max }
    }

    /// The nominal (unjittered) delay before retry `n` (1: the first retry).
    fn nominal(&self, n: u32) -> Duration {
        let mut delay = self.first;
        for _ in 1..n.max(1) {
            if delay >= self.max {
                break;
            }
            delay = delay.saturating_mul(self.factor);
        }
        delay.min(self.max)
    }

    /// The delay before retry `n`: the nominal one jittered into [half, whole].
    pub fn delay(&self, n: u32) -> Duration {
        jittered(self.nominal(n))
    }

    /// [`Backoff::delay`], but never sooner than what the other side asked for.
    pub fn delay_at_least(&self, n: u32, not_before: Option<Duration>) -> Duration {
        let delay = self.delay(n);
        not_before.map_or(delay, |floor| delay.max(floor))
    }
}

/// Failures in a row under one policy, for a loop that retries until it succeeds.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
}

impl Retry {
    pub fn new(policy: Backoff) -> Retry {
        Retry { policy, failures: 0 }
    }

    /// One more failure: how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures)
    }

    /// It worked: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `nominal` scaled by a uniform random factor in [0.5, 1].
fn jittered(nominal: Duration) -> Duration {
    nominal.mul_f64(0.5 + 0.5 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff::new(Duration::from_millis(200), 2, Duration::from_secs(5));

    #[test]
    fn grows_by_its_factor_up_to_its_cap() {
        let nominal: Vec<u64> = (1..=8).map(|n| POLICY.nominal(n).as_millis() as u64).collect();
        assert_eq!(nominal, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(POLICY.nominal(0), Duration::from_millis(200));
        assert_eq!(POLICY.nominal(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_between_half_and_whole_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for n in 1..=2000u32 {
            let retry = n % 8 + 1;
            let (nominal, delay) = (POLICY.nominal(retry), POLICY.delay(retry));
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} for {nominal:?}"
            );
            seen.insert(delay);
        }
        assert!(seen.len() > 1000, "only {} distinct delays in 2000", seen.len());
    }

    #[test]
    fn a_floor_from_the_other_side_wins() {
        let floor = Some(Duration::from_secs(30));
        assert_eq!(POLICY.delay_at_least(1, floor), Duration::from_secs(30));
        assert!(POLICY.delay_at_least(1, Some(Duration::from_millis(1))) >= Duration::from_millis(100));
    }

    #[test]
    fn a_retry_counts_failures_and_resets() {
        let mut retry = Retry::new(POLICY);
        let first = retry.next_delay();
        assert!(first <= Duration::from_millis(200));
        for _ in 0..10 {
            retry.next_delay();
        }
        // The twelfth failure waits the capped 5 s, jittered.
        assert!(retry.next_delay() >= Duration::from_millis(2500));
        retry.reset();
        assert!(retry.next_delay() <= Duration::from_millis(200));
    }
}
