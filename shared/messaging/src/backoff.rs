//! Exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter: attempt `n` waits a random time in `[c/2, c]` where
/// `c = min(max, base * 2^n)`, so that many clients retrying at once spread out while each still
/// waits at least half the nominal delay.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(10), "{first:?}");
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(100));
        }
        assert_eq!(b.attempts(), 11);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
