//! Refusals summed per interval. A flood of refused visitors or streams
//! (thousands a second, from one scanner or one misbehaving client) must
//! not become thousands of log lines and events: each would cost a write,
//! and in a sink's queue it would push out the events that matter. So the
//! first refusal of a reason is reported at once, and the rest of that
//! second are counted and reported as one summary when the second is over
//! (by a timer, so a flood that stops is still told), or when its owner
//! closes and flushes it.
//!
//! The server sums its own reports of refused visitors this way (its log
//! line and the `on_error` event), per tunnel, and the log hook its
//! `rejected` lines about streams. Hooks still see every refusal through
//! `on_rejected`: counters and metrics count each one.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use reitunnel_hooks::tally::Tally;
//!
//! let told = Arc::new(Mutex::new(Vec::new()));
//! let sink = told.clone();
//! let tally = Tally::new(Duration::from_secs(1), move |s| sink.lock().unwrap().push(s.to_string()));
//! for _ in 0..1000 {
//!     tally.refused("visitor turned away: limit max_visitors_per_ip = 16 reached");
//! }
//! tally.flush();
//! let told = told.lock().unwrap();
//! assert_eq!(told[0], "visitor turned away: limit max_visitors_per_ip = 16 reached");
//! assert!(told[1].starts_with("visitor turned away: limit max_visitors_per_ip = 16 reached (999 times in the last"));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// How long refusals of one reason are summed before they are told, by default.
pub const SUM_OVER: Duration = Duration::from_secs(1);

/// `count` refusals for one reason over `over`: what a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summed {
    /// The refusal, as its single report would say it.
    pub reason: String,
    /// How many it stands for.
    pub count: u64,
    /// The interval they came in; zero for a refusal reported at once.
    pub over: Duration,
}

impl fmt::Display for Summed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 1 && self.over.is_zero() {
            return f.write_str(&self.reason);
        }
        write!(
            f,
            "{} ({} times in the last {:.1}s)",
            self.reason,
            self.count,
            self.over.as_secs_f64()
        )
    }
}

impl std::error::Error for Summed {}

/// Where a tally's reports go.
type Report = Box<dyn Fn(&Summed) + Send + Sync>;

/// Refusals of one owner (a tunnel, a session), summed by reason.
pub struct Tally {
    report: Report,
    every: Duration,
    state: Mutex<State>,
    /// Itself, for the timer task, which must not keep it alive.
    this: Weak<Tally>,
}

#[derive(Default)]
struct State {
    /// Reasons reported within the current interval, with what came since.
    open: HashMap<String, Window>,
    /// Whether a timer task is waiting to report the held-back counts.
    timer: bool,
}

struct Window {
    started: Instant,
    held_back: u64,
}

impl Tally {
    /// A tally that reports through `report`, summing over `every`.
    pub fn new(every: Duration, report: impl Fn(&Summed) + Send + Sync + 'static) -> Arc<Tally> {
        Arc::new_cyclic(|this| Tally {
            report: Box::new(report),
            every,
            state: Mutex::default(),
            this: this.clone(),
        })
    }

    /// Notes one refusal: reported now if it is the first of its reason in
    /// this interval, otherwise counted for the interval's summary.
    pub fn refused(&self, reason: impl fmt::Display) {
        let reason = reason.to_string();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(window) = state.open.get_mut(&reason) {
            window.held_back += 1;
            if !state.timer {
                state.timer = true;
                drop(state);
                self.arm();
            }
            return;
        }
        let started = Instant::now();
        let window = Window {
            started,
            held_back: 0,
        };
        state.open.insert(reason.clone(), window);
        (self.report)(&Summed {
            reason,
            count: 1,
            over: Duration::ZERO,
        });
    }

    /// Reports what is held back and forgets every reason: for the close
    /// of the tunnel or session, so its summary comes before its close.
    /// Reports are made under the tally's lock, so once this returns every
    /// refusal noted before it has been told (a timer's report included).
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (reason, window) in std::mem::take(&mut state.open) {
            self.tell(reason, &window);
        }
    }

    /// Starts the task that reports held-back counts once their interval
    /// is over (at most one runs per tally). Outside a runtime (unit
    /// tests of other modules), the counts wait for the next flush.
    fn arm(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.this.clone();
        let every = self.every;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tally) = this.upgrade() else { return };
                if !tally.tell_expired() {
                    return;
                }
            }
        });
    }

    /// Reports the reasons whose interval is over and had refusals held
    /// back; those without any are forgotten, so the next refusal of that
    /// reason is reported at once. Returns whether any interval is still
    /// running with refusals held back (the timer then goes on).
    fn tell_expired(&self) -> bool {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open.retain(|reason, window| {
            if now.duration_since(window.started) < self.every {
                return true;
            }
            if window.held_back == 0 {
                return false;
            }
            due.push((reason.clone(), window.held_back, window.started));
            // A new interval starts: what comes in it is summed again.
            *window = Window {
                started: now,
                held_back: 0,
            };
            true
        });
        // Reasons told now may see more in their new interval.
        state.timer = !due.is_empty() || state.open.values().any(|w| w.held_back > 0);
        for (reason, held_back, started) in due {
            let window = Window { started, held_back };
            self.tell(reason, &window);
        }
        state.timer
    }

    fn tell(&self, reason: String, window: &Window) {
        if window.held_back == 0 {
            return;
        }
        (self.report)(&Summed {
            reason,
            count: window.held_back,
            over: window.started.elapsed(),
        });
    }
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally").field("every", &self.every).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tally whose reports are collected.
    fn collecting(every: Duration) -> (Arc<Tally>, Arc<Mutex<Vec<Summed>>>) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let tally = Tally::new(every, move |s| sink.lock().unwrap().push(s.clone()));
        (tally, told)
    }

    #[test]
    fn the_first_refusal_is_told_at_once_and_the_rest_at_the_flush() {
        let (tally, told) = collecting(Duration::from_secs(3600));
        for _ in 0..2000 {
            tally.refused("visitor turned away: limit x = 1 reached");
        }
        tally.refused("another reason");
        {
            let told = told.lock().unwrap();
            assert_eq!(told.len(), 2, "{told:?}");
            assert_eq!(told[0].count, 1);
            assert_eq!(
                told[0].to_string(),
                "visitor turned away: limit x = 1 reached"
            );
        }
        tally.flush();
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 3, "{told:?}");
        assert_eq!(told[2].count, 1999);
        assert!(
            told[2].to_string().contains("(1999 times in the last"),
            "{}",
            told[2]
        );
        let total: u64 = told.iter().map(|s| s.count).sum();
        assert_eq!(total, 2001, "every refusal is counted once");
    }

    #[tokio::test(start_paused = true)]
    async fn held_back_refusals_are_told_when_their_interval_ends() {
        let (tally, told) = collecting(SUM_OVER);
        for _ in 0..5 {
            tally.refused("r");
        }
        assert_eq!(told.lock().unwrap().len(), 1);
        // The paused clock runs ahead to the timer: no real second passes.
        tokio::time::sleep(SUM_OVER * 2).await;
        let counts: Vec<u64> = told.lock().unwrap().iter().map(|s| s.count).collect();
        assert_eq!(counts, [1, 4]);
        // Quiet for an interval: the next one is told at once again.
        tokio::time::sleep(SUM_OVER * 2).await;
        tally.refused("r");
        let counts: Vec<u64> = told.lock().unwrap().iter().map(|s| s.count).collect();
        assert_eq!(counts, [1, 4, 1]);
        tally.flush();
        assert_eq!(told.lock().unwrap().len(), 3, "nothing held back");
    }
}
