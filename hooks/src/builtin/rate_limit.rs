//! Rate limits on bytes (per client, per tunnel, each direction) and on new
//! connections (visitor streams per client, visitors per source IP, logins
//! per source IP), on governor's GCRA token buckets.
//!
//! Bytes are slowed, never dropped: a chunk over the limit gets
//! `Throttle(wait)` and the relay holds it back. Byte buckets *reserve*:
//! each chunk is charged when it is offered and told how long to wait, so a
//! sleep that wakes late (timer ticks, a busy CPU) is banked up to the burst
//! instead of lost. governor only tests and updates, which lost every
//! overshoot: a 1 MiB/s limit moved 0.73 MiB/s through a real tunnel on a
//! busy 2-core machine. So byte rates use [`Reservoir`], a GCRA on one
//! atomic; governor keeps the connection rates, where test-and-update is
//! exactly right. A chunk larger than the burst passes with a proportional
//! wait: nothing is ever refused or deadlocked.
//!
//! Connection rates return `Refuse` past the limit: a refused visitor or
//! login costs nothing more. Per-IP rates count an IPv6 source by its /64
//! ([`crate::keyed::ip_key`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{
    ClientId, ClientInfo, DataEvent, Direction, Login, Rejection, Scope, StreamInfo, Totals,
    TunnelId, TunnelInfo,
};
use crate::keyed::{ip_key, KeyedLimiter};
use crate::verdict::{CloseReason, Gate, Reason, Verdict};

/// A byte rate: sustained bytes per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRate {
    /// Sustained rate.
    pub bytes_per_sec: NonZeroU32,
    /// Bytes that may pass at once after an idle period.
    pub burst: NonZeroU32,
}

impl ByteRate {
    /// `bytes_per_sec` with a burst of a tenth of a second's worth (at least 64 KiB,
    /// one relay chunk), so a limit holds within a few percent from the start.
    pub fn per_sec(bytes_per_sec: NonZeroU32) -> Self {
        let burst = (bytes_per_sec.get() / 10).max(64 * 1024);
        ByteRate {
            bytes_per_sec,
            burst: NonZeroU32::new(burst).expect("positive"),
        }
    }
}

/// A rate of events: so many per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRate {
    /// Sustained events per second.
    pub per_sec: NonZeroU32,
    /// Events allowed at once.
    pub burst: NonZeroU32,
}

/// Which limits apply; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Bytes per client session, each direction separately.
    pub per_client: Option<ByteRate>,
    /// Bytes per tunnel, each direction separately.
    pub per_tunnel: Option<ByteRate>,
    /// New visitor streams per client session.
    pub streams_per_client: Option<EventRate>,
    /// New visitor connections per visitor source IP (all tunnels).
    pub visitors_per_ip: Option<EventRate>,
    /// Client logins per source IP.
    pub logins_per_ip: Option<EventRate>,
}

/// A GCRA token bucket that charges at once and returns the wait: the
/// "reserve" that governor lacks. Lock-free (one CAS loop on the
/// theoretical arrival time, in nanoseconds since the limiter's epoch). The
/// time comes from the chunk's shared stamp and a chunk's cost is a
/// multiplication by a fixed-point nanoseconds-per-byte: no clock read and
/// no division of its own.
struct Reservoir {
    tat: AtomicU64,
    /// Nanoseconds per byte, as a 32.32 fixed-point number.
    ns_per_byte: u64,
    burst_ns: u64,
}

/// Fraction bits of [`Reservoir::ns_per_byte`].
const FRACTION_BITS: u32 = 32;

impl Reservoir {
    fn new(rate: ByteRate) -> Self {
        let bytes_per_sec = u128::from(rate.bytes_per_sec.get());
        // At most 1e9 << 32 (one byte a second), which fits in 64 bits.
        let ns_per_byte = ((1_000_000_000u128 << FRACTION_BITS) / bytes_per_sec) as u64;
        Reservoir {
            tat: AtomicU64::new(0),
            burst_ns: (u128::from(rate.burst.get()) * 1_000_000_000 / bytes_per_sec) as u64,
            ns_per_byte,
        }
    }

    /// Charges `n` bytes at `now` (nanoseconds since the epoch); returns how
    /// long they must wait to keep the rate.
    fn reserve(&self, n: u64, now: u64) -> Duration {
        let cost = (u128::from(n) * u128::from(self.ns_per_byte)) >> FRACTION_BITS;
        let cost = u64::try_from(cost).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(next.saturating_sub(self.burst_ns + now)),
                Err(current) => tat = current,
            }
        }
    }
}

/// One bucket per direction, and how many chunks they held back.
struct Buckets {
    ingress: Reservoir,
    egress: Reservoir,
    throttled: AtomicU64,
}

impl Buckets {
    fn new(rate: ByteRate) -> Arc<Self> {
        Arc::new(Buckets {
            ingress: Reservoir::new(rate),
            egress: Reservoir::new(rate),
            throttled: AtomicU64::new(0),
        })
    }

    /// Charges `n` bytes moving `dir` at `now`; returns how long to hold them.
    fn charge(&self, dir: Direction, n: u64, now: u64) -> Duration {
        match dir {
            Direction::Ingress => self.ingress.reserve(n, now),
            Direction::Egress => self.egress.reserve(n, now),
        }
    }
}

/// A connection rate per key (client, IP), or none. Checked per
/// connection, never per chunk; keys gone idle are swept (see
/// [`KeyedLimiter`]), so a scan from many addresses neither grows memory
/// without bound nor resets anyone's bucket.
struct Keyed<K: Hash + Eq + Clone>(Option<KeyedLimiter<K>>);

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Option<EventRate>) -> Self {
        Keyed(rate.map(|r| KeyedLimiter::per_second(r.per_sec, r.burst)))
    }

    /// Whether one more event for `key` conforms (always, when unlimited).
    fn allow(&self, key: K) -> bool {
        self.0.as_ref().is_none_or(|l| l.check(&key).is_ok())
    }
}

/// The byte and connection rate limiter. See the module docs.
///
/// # Example
///
/// 1000 bytes/s per client, with a 1000-byte burst: the burst passes, the
/// next chunk is held back (the relay sleeps, the hook never does).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{ByteRate, RateLimit, RateLimitConfig};
/// use reitunnel_hooks::{Direction, HookChain, Login, Verdict};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// let limit = Arc::new(RateLimit::new(RateLimitConfig {
///     per_client: Some(ByteRate {
///         bytes_per_sec: NonZeroU32::new(1000).unwrap(),
///         burst: NonZeroU32::new(1000).unwrap(),
///     }),
///     ..RateLimitConfig::default()
/// }));
/// let chain = HookChain::builder().shared(limit.clone()).build();
///
/// # let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// # let nonce = [0u8; 32];
/// # let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// # let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice.clone(), TunnelKind::Reverse,
/// #     "0.0.0.0:8080".parse()?, "127.0.0.1:3000"));
/// # let stream = Arc::new(StreamInfo::new(StreamId(1), tunnel.clone(), "127.0.0.1:40000".parse()?));
/// let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap();
/// let tunnel = chain.open_tunnel(tunnel).unwrap();
/// let stream = chain.open_stream(stream).unwrap();
///
/// assert_eq!(stream.on_data(Direction::Ingress, &[0u8; 1000]), Verdict::Continue);
/// match stream.on_data(Direction::Ingress, &[0u8; 500]) {
///     // About half a second: 500 bytes at 1000 bytes/s.
///     Verdict::Throttle(wait) => assert!(wait.as_millis() > 0 && wait.as_millis() <= 500),
///     other => panic!("expected a throttle, got {other:?}"),
/// }
/// // Each direction has its own bucket.
/// assert_eq!(stream.on_data(Direction::Egress, &[0u8; 1000]), Verdict::Continue);
/// assert_eq!(limit.throttled_chunks(), 1);
/// # drop((stream, tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimit {
    cfg: RateLimitConfig,
    clients: Mutex<HashMap<ClientId, Arc<Buckets>>>,
    tunnels: Mutex<HashMap<TunnelId, Arc<Buckets>>>,
    streams_per_client: Keyed<ClientId>,
    visitors_per_ip: Keyed<IpAddr>,
    logins_per_ip: Keyed<IpAddr>,
    throttled: AtomicU64,
    /// Where every byte bucket's clock counts from.
    epoch: Instant,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("cfg", &self.cfg).finish()
    }
}

/// What a stream carries into the data path: its client's and tunnel's
/// buckets, and the throttle counter (resolved once, not per chunk).
struct StreamLimits {
    client: Option<Arc<Buckets>>,
    tunnel: Option<Arc<Buckets>>,
    throttles: metrics::Counter,
}

impl RateLimit {
    /// A limiter with the given limits.
    pub fn new(cfg: RateLimitConfig) -> Self {
        RateLimit {
            streams_per_client: Keyed::new(cfg.streams_per_client),
            visitors_per_ip: Keyed::new(cfg.visitors_per_ip),
            logins_per_ip: Keyed::new(cfg.logins_per_ip),
            clients: Mutex::default(),
            tunnels: Mutex::default(),
            throttled: AtomicU64::new(0),
            epoch: Instant::now(),
            cfg,
        }
    }

    /// How many chunks were held back so far.
    pub fn throttled_chunks(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// How many chunks of `client`'s session were held back so far, if it
    /// has a per-client rate (and is logged in).
    pub fn throttled_for(&self, client: ClientId) -> Option<u64> {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Some(clients.get(&client)?.throttled.load(Ordering::Relaxed))
    }
}

impl Hook for RateLimit {
    fn name(&self) -> &str {
        "rate_limit"
    }

    fn wants_data(&self) -> bool {
        self.cfg.per_client.is_some() || self.cfg.per_tunnel.is_some()
    }

    fn on_client_connect(&self, client: &ClientInfo, _: &Login<'_>) -> Gate {
        if !self.logins_per_ip.allow(ip_key(client.peer.ip())) {
            return Gate::Refuse(Reason::limit_reached(format!(
                "too many logins from {}; try again later",
                client.peer.ip()
            )));
        }
        if let Some(rate) = self.cfg.per_client {
            self.clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(client.id, Buckets::new(rate));
        }
        Gate::Allow
    }

    fn on_tunnel_open(&self, tunnel: &TunnelInfo) -> Gate {
        if let Some(rate) = self.cfg.per_tunnel {
            self.tunnels
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tunnel.id, Buckets::new(rate));
        }
        Gate::Allow
    }

    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        if !self.visitors_per_ip.allow(ip_key(stream.peer.ip())) {
            return Gate::Refuse(Reason::limit_reached(format!(
                "too many connections from {}",
                stream.peer.ip()
            )));
        }
        if !self.streams_per_client.allow(stream.tunnel.client.id) {
            return Gate::Refuse(Reason::limit_reached(format!(
                "client '{}' is receiving new connections faster than its limit",
                stream.tunnel.client.name
            )));
        }
        Gate::Allow
    }

    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        if !self.wants_data() {
            return None;
        }
        let client = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream.tunnel.client.id)
            .cloned();
        let tunnel = self
            .tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream.tunnel.id)
            .cloned();
        Some(Box::new(StreamLimits {
            client,
            tunnel,
            throttles: metrics::counter!("reitunnel_throttles_total"),
        }))
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let Some(limits) = ev.state::<StreamLimits>() else {
            return Verdict::Continue;
        };
        let n = ev.bytes();
        let now = ev.now().saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut wait = Duration::ZERO;
        for buckets in [&limits.client, &limits.tunnel].into_iter().flatten() {
            wait = wait.max(buckets.charge(ev.direction, n, now));
        }
        if wait.is_zero() {
            Verdict::Continue
        } else {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            if let Some(client) = &limits.client {
                client.throttled.fetch_add(1, Ordering::Relaxed);
            }
            limits.throttles.increment(1);
            Verdict::Throttle(wait)
        }
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        if !r.passed_gate {
            return;
        }
        match r.scope {
            Scope::Client(c) => drop(
                self.clients
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&c.id),
            ),
            Scope::Tunnel(t) => drop(
                self.tunnels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&t.id),
            ),
            Scope::Stream(_) | Scope::Server => {}
        }
    }

    fn on_client_disconnect(&self, c: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&c.id);
        Ok(())
    }

    fn on_tunnel_close(&self, t: &TunnelInfo, _: &CloseReason, _: &Totals) -> HookResult {
        self.tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&t.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservoir(bytes_per_sec: u32, burst: u32) -> Reservoir {
        Reservoir::new(ByteRate {
            bytes_per_sec: NonZeroU32::new(bytes_per_sec).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn fixed_point_costs_match_the_rate() {
        let second = Duration::from_secs(1).as_nanos() as u64;
        // 1000 B/s, burst 1000: the burst passes, 500 more wait half a second.
        let r = reservoir(1000, 1000);
        assert_eq!(r.reserve(1000, second), Duration::ZERO);
        let wait = r.reserve(500, second);
        assert!(
            wait.abs_diff(Duration::from_millis(500)) < Duration::from_micros(1),
            "{wait:?}"
        );
        // 3 B/s (a period that does not divide 1e9): 3 bytes past the burst cost one second.
        let r = reservoir(3, 3);
        assert_eq!(r.reserve(3, second), Duration::ZERO);
        let wait = r.reserve(3, second);
        assert!(
            wait.abs_diff(Duration::from_secs(1)) < Duration::from_micros(1),
            "{wait:?}"
        );
    }

    #[test]
    fn the_fastest_rate_and_the_largest_charge_do_not_overflow() {
        let r = reservoir(u32::MAX, u32::MAX);
        assert_eq!(r.reserve(64 * 1024, 0), Duration::ZERO);
        // One byte a second charged more bytes than fit in nanoseconds: saturates.
        let r = reservoir(1, 1);
        assert!(r.reserve(u64::MAX, 0) >= Duration::from_secs(100 * 365 * 86_400));
    }
}
