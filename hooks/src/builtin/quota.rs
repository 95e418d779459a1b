//! Total bytes per client name per period (e.g. a day), both directions
//! together. Past the quota the stream carrying the crossing chunk is
//! closed (that chunk is not forwarded, so no byte past the quota ever
//! leaves), new streams are refused with the reason, and one
//! `quota.exceeded` event is emitted per client and period. Usage resets at
//! the period boundary, aligned to the Unix epoch (a 1-day period resets at
//! 00:00 UTC).
//!
//! Usage is an atomic per client name, looked up once per stream: the data
//! path takes no lock. It is kept by name, not by session, so reconnecting
//! does not reset it.
//!
//! The wall clock is read at most once a second, not per chunk: the current
//! period is cached with its end on the monotonic clock (checked against
//! the chunk's shared stamp). Periods only move forward, so a wall clock
//! stepped back across a boundary does not hand out a second quota.
//!
//! Shared by several servers ([`Quota::share`]), each keeps counting its
//! own bytes here and something outside (a fleet's store) adds them to a
//! shared total: [`Quota::unshared`] hands out what was not added yet and
//! [`Quota::settle`] takes back the total, from which the bytes used
//! elsewhere count against the limit too. The data path still takes no
//! lock: it asks for a flush (the `due` callback) once a client's bytes not
//! yet added reach the flush size, so each server overshoots the shared
//! limit by at most that much.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portable_atomic::AtomicU128;

use crate::events::{Event, EventBus};
use crate::hook::{Hook, StreamState};
use crate::info::{DataEvent, StreamInfo};
use crate::verdict::{Gate, Reason, Verdict};

/// One client's usage in the current period.
/// One client's usage: (period, bytes used in it) in one 128-bit atomic,
/// so moving into a new period and counting a chunk are a single step (two
/// atomics would lose bytes counted between "new period" and "reset to 0").
#[derive(Debug, Default)]
struct Usage {
    state: AtomicU128,
    /// The last period a `quota.exceeded` went out for, plus one (0: never).
    reported: AtomicU64,
    /// Shared: (period, bytes of it other servers used, as last told).
    others: AtomicU128,
    /// Shared: (period, bytes of this server's already in the shared total).
    shared: AtomicU128,
    /// Shared: a flush was asked for and has not run yet.
    due: AtomicBool,
}

fn pack(period: u64, bytes: u64) -> u128 {
    (u128::from(period) << 64) | u128::from(bytes)
}

fn unpack(state: u128) -> (u64, u64) {
    ((state >> 64) as u64, state as u64)
}

impl Usage {
    /// (period, bytes) as of `period`: a state from an earlier period counts as empty.
    fn at(state: u128, period: u64) -> (u64, u64) {
        match unpack(state) {
            (p, _) if p < period => (period, 0),
            seen => seen,
        }
    }

    /// Bytes used in `period` (or in a later one, if another caller already moved on).
    fn used(&self, period: u64) -> u64 {
        Usage::at(self.state.load(Ordering::Relaxed), period).1
    }

    /// Counts `n` bytes in `period` if the total stays within `limit`;
    /// returns the new total, or `None` if it would not.
    fn charge(&self, period: u64, n: u64, limit: u64) -> Option<u64> {
        self.state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |state| {
                let (p, used) = Usage::at(state, period);
                let total = used.checked_add(n).filter(|&t| t <= limit)?;
                Some(pack(p, total))
            })
            .ok()
            .map(|before| Usage::at(before, period).1 + n)
    }

    /// What a (period, bytes) atomic says of `period`: 0 if it is of an earlier one.
    fn of(pair: &AtomicU128, period: u64) -> u64 {
        Usage::at(pair.load(Ordering::Relaxed), period).1
    }

    /// Marks the quota of `period` used up.
    fn use_up(&self, period: u64, limit: u64) {
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |state| {
                let (p, used) = Usage::at(state, period);
                Some(pack(p, used.max(limit)))
            });
    }

    /// True exactly once per period: whether to send its `quota.exceeded`.
    fn first_report(&self, period: u64) -> bool {
        self.reported.fetch_max(period + 1, Ordering::Relaxed) <= period
    }
}

/// The per-client byte quota. See the module docs.
///
/// # Example
///
/// 1000 bytes a day for each client: the chunk that would cross the limit
/// closes its stream, and later streams are refused.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use reitunnel_hooks::builtin::Quota;
/// use reitunnel_hooks::events::EventBus;
/// use reitunnel_hooks::{Direction, HookChain, Login, RefuseCode, Verdict};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// // Give the bus a sink (audit log, webhook) to hear `quota.exceeded`.
/// let day = Duration::from_secs(24 * 60 * 60);
/// let quota = Arc::new(Quota::new(1000, day, EventBus::new()));
/// let chain = HookChain::builder().shared(quota.clone()).build();
///
/// # let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// # let nonce = [0u8; 32];
/// # let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// # let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice.clone(), TunnelKind::Reverse,
/// #     "0.0.0.0:8080".parse()?, "127.0.0.1:3000"));
/// # let stream_info = |id| Arc::new(StreamInfo::new(StreamId(id), tunnel.clone(), "127.0.0.1:40000".parse().unwrap()));
/// let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap();
/// let tunnel = chain.open_tunnel(tunnel.clone()).unwrap();
/// let stream = chain.open_stream(stream_info(1)).unwrap();
///
/// assert_eq!(stream.on_data(Direction::Ingress, &[0u8; 600]), Verdict::Continue);
/// let Verdict::Close(reason) = stream.on_data(Direction::Egress, &[0u8; 600]) else {
///     panic!("the chunk past the quota must close the stream");
/// };
/// assert_eq!(reason.code, RefuseCode::LimitReached);
/// assert_eq!(quota.used("alice"), 1000);
/// drop(stream);
///
/// let refusal = chain.open_stream(stream_info(2)).unwrap_err();
/// assert_eq!(refusal.by, "quota");
/// # drop((tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    period: Duration,
    usage: Mutex<HashMap<Arc<str>, Arc<Usage>>>,
    events: EventBus,
    clock: PeriodClock,
    /// Set once by [`Quota::share`].
    sharing: OnceLock<Sharing>,
}

/// How a shared quota asks for its bytes to be added to the shared total.
struct Sharing {
    /// Called (from the data path: it must be cheap) when a client's bytes
    /// not yet added reach `flush_bytes`, or its shared total is unknown.
    due: Box<dyn Fn() + Send + Sync>,
    flush_bytes: u64,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("flush_bytes", &self.flush_bytes)
            .finish_non_exhaustive()
    }
}

/// A client's bytes of a period that the shared total does not hold yet
/// (see [`Quota::unshared`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unshared {
    /// The client's name.
    pub client: Arc<str>,
    /// The period (Unix seconds / period length).
    pub period: u64,
    /// Bytes to add (0: only the total is wanted).
    pub bytes: u64,
}

/// The current period number, cached until a monotonic deadline so the
/// data path compares two integers instead of reading the wall clock.
#[derive(Debug)]
struct PeriodClock {
    /// Where the monotonic deadlines count from.
    base: Instant,
    /// The period in force (Unix seconds / period seconds); never decreases.
    current: AtomicU64,
    /// Nanoseconds after `base` at which to consult the wall clock again.
    recheck_at: AtomicU64,
}

/// How long a chunk waits when its client moved a flush size on this server
/// while the shared total is still unknown (a round trip to the store).
const UNKNOWN_TOTAL_WAIT: Duration = Duration::from_millis(10);

/// The longest the cached period is trusted, so a wall clock set forward
/// (or a suspended machine waking up) is noticed within this much.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

impl PeriodClock {
    fn new() -> Self {
        PeriodClock {
            base: Instant::now(),
            current: AtomicU64::new(0),
            recheck_at: AtomicU64::new(0),
        }
    }

    /// The period in force at `now`, for periods of `secs` seconds.
    #[inline]
    fn period_at(&self, now: Instant, secs: u64) -> u64 {
        let t = now.saturating_duration_since(self.base).as_nanos() as u64;
        if t < self.recheck_at.load(Ordering::Relaxed) {
            return self.current.load(Ordering::Relaxed);
        }
        self.recheck(t, secs)
    }

    /// Reads the wall clock: see [`PeriodClock::advance`].
    #[cold]
    fn recheck(&self, t: u64, secs: u64) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.advance(t, secs, wall)
    }

    /// With the wall clock at `wall` (since the Unix epoch) and the monotonic
    /// clock at `t`: moves the period forward (never back) and sets the next
    /// check at the period's end or [`RECHECK_EVERY`], whichever is sooner.
    fn advance(&self, t: u64, secs: u64, wall: Duration) -> u64 {
        let seen = wall.as_secs() / secs;
        let period = self.current.fetch_max(seen, Ordering::Relaxed).max(seen);
        let ends = Duration::from_secs((period + 1) * secs).saturating_sub(wall);
        let wait = ends.min(RECHECK_EVERY).as_nanos() as u64;
        self.recheck_at.store(t + wait, Ordering::Relaxed);
        period
    }
}

impl Quota {
    /// `limit` bytes per client per `period` (at least one second).
    pub fn new(limit: u64, period: Duration, events: EventBus) -> Self {
        Quota {
            limit,
            period: period.max(Duration::from_secs(1)),
            usage: Mutex::default(),
            events,
            clock: PeriodClock::new(),
            sharing: OnceLock::new(),
        }
    }

    /// Makes this quota one of several servers' sharing a total: bytes used
    /// elsewhere (told through [`Quota::settle`]) count against the limit
    /// too. `due` is called when a client has `flush_bytes` not yet added,
    /// or opens a stream with its shared total unknown; whoever shares the
    /// quota then calls [`Quota::unshared`] soon (and also every so often).
    /// A second call changes nothing.
    pub fn share(&self, flush_bytes: u64, due: impl Fn() + Send + Sync + 'static) {
        let _ = self.sharing.set(Sharing {
            due: Box::new(due),
            flush_bytes: flush_bytes.max(1),
        });
    }

    /// The length of a period, in seconds.
    pub fn period_secs(&self) -> u64 {
        self.period.as_secs()
    }

    /// Each client's bytes of the current period not yet in the shared
    /// total, and the clients whose total is wanted (bytes 0). Pass each,
    /// once added, to [`Quota::settle`]; one not settled is handed out
    /// again next time, so nothing is lost while the total cannot be reached.
    pub fn unshared(&self) -> Vec<Unshared> {
        let period = self.current_period(Instant::now());
        let usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage
            .iter()
            .filter_map(|(client, u)| {
                let bytes = u.used(period).saturating_sub(Usage::of(&u.shared, period));
                let due = u.due.swap(false, Ordering::Relaxed);
                (bytes > 0 || due).then(|| Unshared {
                    client: client.clone(),
                    period,
                    bytes,
                })
            })
            .collect()
    }

    /// `added` (an [`Unshared`]'s bytes) is in the shared total of
    /// `client`'s `period`, which is now `total`: the rest of the total was
    /// used elsewhere. A total smaller than what this server added says the
    /// shared store lost it (restarted empty): the rest is added again.
    pub fn settle(&self, client: &str, period: u64, added: u64, total: u64) {
        let Some(u) = self
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client)
            .cloned()
        else {
            return;
        };
        let mine = Usage::of(&u.shared, period) + added;
        // Lost: of this server's bytes the total holds just those added now.
        let lost = total < mine;
        let mine = if lost { added.min(total) } else { mine };
        u.shared.store(pack(period, mine), Ordering::Relaxed);
        u.others
            .store(pack(period, total - mine), Ordering::Relaxed);
        if lost {
            u.due.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the period's shared total of `u` was never told.
    fn total_unknown(&self, u: &Usage, period: u64) -> bool {
        self.sharing.get().is_some() && unpack(u.others.load(Ordering::Relaxed)).0 < period
    }

    /// The bytes each client may move per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `client` used in the current period (shared: here and, as
    /// last told, elsewhere).
    pub fn used(&self, client: &str) -> u64 {
        let usage = self
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client)
            .cloned();
        let period = self.current_period(Instant::now());
        usage.map_or(0, |u| u.used(period) + Usage::of(&u.others, period))
    }

    fn current_period(&self, now: Instant) -> u64 {
        self.clock.period_at(now, self.period.as_secs())
    }

    fn usage(&self, client: &Arc<str>) -> Arc<Usage> {
        let mut map = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(client.clone()).or_default().clone()
    }

    fn exceeded(&self, client: &str, u: &Usage, period: u64) -> Reason {
        if u.first_report(period) && !self.events.is_empty() {
            self.events.emit(
                &Event::now("quota.exceeded")
                    .with("client", client)
                    .with("limit_bytes", self.limit)
                    .with("period_secs", self.period.as_secs()),
            );
        }
        Reason::limit_reached(format!(
            "client '{client}' used its quota of {} bytes per {}s",
            self.limit,
            self.period.as_secs()
        ))
    }
}

impl Hook for Quota {
    fn name(&self) -> &str {
        "quota"
    }

    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        let client = &stream.tunnel.client.name;
        let u = self.usage(client);
        let period = self.current_period(Instant::now());
        if u.used(period) + Usage::of(&u.others, period) >= self.limit {
            return Gate::Refuse(self.exceeded(client, &u, period));
        }
        if self.total_unknown(&u, period) && !u.due.swap(true, Ordering::Relaxed) {
            if let Some(sharing) = self.sharing.get() {
                (sharing.due)();
            }
        }
        Gate::Allow
    }

    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        Some(Box::new(self.usage(&stream.tunnel.client.name)))
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let Some(u) = ev.state::<Arc<Usage>>() else {
            return Verdict::Continue;
        };
        let period = self.current_period(ev.now());
        let limit = self.limit.saturating_sub(Usage::of(&u.others, period));
        if let Some(used) = u.charge(period, ev.bytes(), limit) {
            if let Some(sharing) = self.sharing.get() {
                let unshared = used.saturating_sub(Usage::of(&u.shared, period));
                if unshared >= sharing.flush_bytes {
                    if !u.due.swap(true, Ordering::Relaxed) {
                        (sharing.due)();
                    }
                    // Not a flush size further before the shared total is known.
                    if self.total_unknown(u, period) {
                        return Verdict::Throttle(UNKNOWN_TOTAL_WAIT);
                    }
                }
            }
            return Verdict::Continue;
        }
        // The chunk does not fit: it is not forwarded, and the quota counts
        // as used up so new streams are refused until the period ends.
        u.use_up(period, limit);
        Verdict::Close(self.exceeded(&ev.stream.tunnel.client.name, u, period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn usage_moves_to_a_new_period_in_one_step_and_reports_once_per_period() {
        let u = Usage::default();
        assert_eq!(u.charge(7, 600, 1000), Some(600));
        assert!(u.charge(7, 600, 1000).is_none(), "past the limit");
        assert_eq!(u.used(7), 600);
        u.use_up(7, 1000);
        assert_eq!(u.used(7), 1000);
        assert!(u.first_report(7));
        assert!(!u.first_report(7), "one quota.exceeded per period");
        // A caller still on period 7 after another moved to 8 counts into 8.
        assert_eq!(u.charge(8, 10, 1000), Some(10));
        assert_eq!(u.used(7), 10);
        assert_eq!(u.used(8), 10);
        assert!(u.first_report(8));
        // An overflowing charge is refused, not wrapped.
        assert!(u.charge(8, u64::MAX, u64::MAX).is_none());
        assert_eq!(u.used(8), 10);
    }

    #[test]
    fn a_shared_quota_counts_what_others_used_and_adds_again_what_the_store_lost() {
        let quota = Quota::new(1000, Duration::from_secs(DAY), EventBus::new());
        let asked = Arc::new(AtomicU64::new(0));
        let counter = asked.clone();
        quota.share(200, move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let u = quota.usage(&Arc::from("alice"));
        let period = quota.current_period(Instant::now());
        assert_eq!(u.charge(period, 300, 1000), Some(300));
        let unshared = quota.unshared();
        assert_eq!(
            unshared,
            [Unshared {
                client: "alice".into(),
                period,
                bytes: 300
            }]
        );
        // The total says others used 400 more: 700 of 1000.
        quota.settle("alice", period, 300, 700);
        assert_eq!(quota.used("alice"), 700);
        assert!(quota.unshared().is_empty(), "nothing new to add");
        let limit = 1000 - Usage::of(&u.others, period);
        assert_eq!(u.charge(period, 300, limit), Some(600));
        assert!(
            u.charge(period, 1, limit).is_none(),
            "the shared total is full"
        );
        // A total below what this server added: the store lost it (it holds
        // only the 300 just added); the other 300 go again.
        quota.settle("alice", period, 300, 300);
        assert_eq!(quota.unshared()[0].bytes, 300);
        assert_eq!(quota.used("alice"), 600);
        assert_eq!(
            asked.load(Ordering::Relaxed),
            0,
            "no chunk went through on_data"
        );
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_reopen_a_period() {
        let clock = PeriodClock::new();
        let second = Duration::from_secs(1).as_nanos() as u64;
        // Just past midnight of day 20,000: period 20,000.
        let after = Duration::from_secs(20_000 * DAY + 5);
        assert_eq!(clock.advance(0, DAY, after), 20_000);
        // The wall clock is set back across midnight: still 20,000.
        let before = Duration::from_secs(20_000 * DAY - 5);
        assert_eq!(clock.advance(second, DAY, before), 20_000);
        assert_eq!(clock.current.load(Ordering::Relaxed), 20_000);
    }

    #[test]
    fn the_cached_period_is_rechecked_within_a_second_and_at_the_boundary() {
        let clock = PeriodClock::new();
        let ns = |d: Duration| d.as_nanos() as u64;
        // Mid-period: trusted for at most RECHECK_EVERY.
        clock.advance(0, DAY, Duration::from_secs(20_000 * DAY + 100));
        assert_eq!(clock.recheck_at.load(Ordering::Relaxed), ns(RECHECK_EVERY));
        // 300 ms before the boundary: rechecked exactly at the boundary.
        let t = ns(Duration::from_secs(7));
        let wall = Duration::from_secs(20_001 * DAY) - Duration::from_millis(300);
        assert_eq!(clock.advance(t, DAY, wall), 20_000);
        assert_eq!(
            clock.recheck_at.load(Ordering::Relaxed),
            t + ns(Duration::from_millis(300))
        );
        // Before the recheck time the cached period answers without the wall clock.
        let soon = clock.base + Duration::from_nanos(t + 1);
        assert_eq!(clock.period_at(soon, DAY), 20_000);
    }
}
