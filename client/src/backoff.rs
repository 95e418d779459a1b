//! Reconnect delays: exponential from a quarter second, capped, with jitter
//! so a fleet of clients cut off by one server restart does not come back
//! in lockstep. The sequence is backon's; this keeps the count of attempts
//! and starts over after a connection that worked.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first delay, before jitter.
const FIRST: Duration = Duration::from_millis(250);

/// Delays for successive reconnect attempts.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The first delay is 0.25–0.5 s; each attempt doubles it, up to `cap`.
    pub fn new(cap: Duration) -> Backoff {
        // backon's jitter adds up to the delay again, so a step of d waits
        // between d and 2d: steps run from a quarter second to half the cap.
        let half = cap / 2;
        let builder = ExponentialBuilder::default()
            .with_min_delay(FIRST.min(half))
            .with_max_delay(half)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        // Without a limit on attempts or total time the sequence never ends.
        self.delays.next().unwrap_or(self.cap).min(self.cap)
    }

    /// Attempts made since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
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
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        assert!(
            delays.windows(2).any(|w| w[0] * 2 != w[1]),
            "no jitter: {delays:?}"
        );
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn a_cap_below_the_first_step_is_kept() {
        let mut b = Backoff::new(Duration::from_millis(100));
        for _ in 0..5 {
            assert!(b.next_delay() <= Duration::from_millis(100));
        }
    }
}
