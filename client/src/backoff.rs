//! Reconnect delays: exponential from half a second, capped, with jitter so
//! a fleet of clients cut off by one server restart does not come back in
//! lockstep.

use std::time::Duration;

/// Delays for successive reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The first delay is 0.25–0.5 s; each attempt doubles it, up to `cap`.
    pub fn new(cap: Duration) -> Backoff {
        Backoff { cap, attempt: 0 }
    }

    /// The delay before the next attempt: the exponential step times a
    /// random factor in [0.5, 1.0).
    pub fn next_delay(&mut self) -> Duration {
        let step = Duration::from_millis(500).saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        step.min(self.cap).mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Attempts made since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let step = Duration::from_millis(500 << i.min(16)).min(Duration::from_secs(8));
            assert!(
                *d >= step / 2 && *d < step,
                "attempt {i}: {d:?} outside [{:?}, {step:?})",
                step / 2
            );
        }
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(500));
    }
}
