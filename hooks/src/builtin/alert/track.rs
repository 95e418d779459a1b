//! One rule's state for one subject (a client, a network, an endpoint):
//! over its threshold since when, firing or not, and when it last told
//! its targets so. Pure: the caller says what time it is.

use std::time::{Duration, Instant};

/// What a step tells the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The value stayed above the threshold for the rule's `for` time.
    Firing,
    /// A firing that was told is over.
    Resolved,
}

/// A rule's timing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// How long the value must stay above before the rule fires.
    pub(super) held: Duration,
    /// After a firing is told, further firings are not, for this long.
    pub(super) cooldown: Duration,
}

/// The state of one (rule, subject).
#[derive(Debug, Default)]
pub(super) struct Track {
    over_since: Option<Instant>,
    firing: bool,
    /// Whether this firing was told (it is not within a cooldown).
    told: bool,
    last_told: Option<Instant>,
}

impl Track {
    /// The value is (`over`) or is not above the threshold at `now`.
    pub(super) fn step(&mut self, over: bool, now: Instant, timing: Timing) -> Option<Turn> {
        if !over {
            self.over_since = None;
            let was = std::mem::take(&mut self.firing);
            return (was && std::mem::take(&mut self.told)).then_some(Turn::Resolved);
        }
        let since = *self.over_since.get_or_insert(now);
        if self.firing || now.saturating_duration_since(since) < timing.held {
            return None;
        }
        self.firing = true;
        let cooled = self
            .last_told
            .is_none_or(|t| now.saturating_duration_since(t) >= timing.cooldown);
        self.told = cooled;
        if cooled {
            self.last_told = Some(now);
        }
        cooled.then_some(Turn::Firing)
    }

    /// Whether forgetting it changes nothing: not over, not firing, and
    /// out of its cooldown.
    pub(super) fn idle(&self, now: Instant, timing: Timing) -> bool {
        self.over_since.is_none()
            && !self.firing
            && self
                .last_told
                .is_none_or(|t| now.saturating_duration_since(t) >= timing.cooldown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        held: Duration::from_secs(30),
        cooldown: Duration::from_secs(300),
    };

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn fires_once_after_the_held_time_and_resolves() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.step(true, at(t0, 0), TIMING), None);
        assert_eq!(
            track.step(true, at(t0, 29), TIMING),
            None,
            "not held long enough"
        );
        assert_eq!(track.step(true, at(t0, 30), TIMING), Some(Turn::Firing));
        assert_eq!(track.step(true, at(t0, 31), TIMING), None, "fires once");
        assert_eq!(track.step(false, at(t0, 40), TIMING), Some(Turn::Resolved));
        assert_eq!(track.step(false, at(t0, 41), TIMING), None);
    }

    #[test]
    fn a_dip_below_starts_the_held_time_again() {
        let t0 = Instant::now();
        let mut track = Track::default();
        track.step(true, at(t0, 0), TIMING);
        track.step(false, at(t0, 20), TIMING);
        assert_eq!(track.step(true, at(t0, 21), TIMING), None);
        assert_eq!(track.step(true, at(t0, 50), TIMING), None);
        assert_eq!(track.step(true, at(t0, 51), TIMING), Some(Turn::Firing));
    }

    #[test]
    fn stays_quiet_within_the_cooldown_and_fires_after_it() {
        let t0 = Instant::now();
        let mut track = Track::default();
        track.step(true, at(t0, 0), TIMING);
        assert_eq!(track.step(true, at(t0, 30), TIMING), Some(Turn::Firing));
        assert_eq!(track.step(false, at(t0, 40), TIMING), Some(Turn::Resolved));
        assert!(!track.idle(at(t0, 40), TIMING), "cooling down");
        // Over again within the cooldown: neither the firing nor its end is told.
        track.step(true, at(t0, 100), TIMING);
        assert_eq!(track.step(true, at(t0, 130), TIMING), None);
        assert_eq!(track.step(false, at(t0, 140), TIMING), None);
        // After the cooldown it is told again.
        track.step(true, at(t0, 400), TIMING);
        assert_eq!(track.step(true, at(t0, 430), TIMING), Some(Turn::Firing));
        assert!(track.step(false, at(t0, 431), TIMING).is_some());
        assert!(track.idle(at(t0, 730), TIMING));
    }
}
