//! Resource limits that keep one client, one visitor flood or one attacker
//! from starving everyone else. Each limit has an internet-safe default, a
//! name that appears in the refusal, and a permit that gives the slot back
//! when dropped, so no path can leak one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reitunnel_hooks::keyed::{ip_key, KeyedLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::windows::WindowShares;

/// The server's limits. Field names are the config file's keys and appear in
/// every refusal, so an operator can tell which one was hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Logged-in clients at once.
    pub max_clients: usize,
    /// Connections still in their TLS handshake or login, in total: bounds
    /// what half-open connections can hold.
    pub max_handshakes: usize,
    /// The same, per source IP, so one address cannot fill the server.
    pub max_handshakes_per_ip: usize,
    /// Tunnels one client session may hold at once.
    pub max_tunnels_per_client: usize,
    /// TCP (or TLS) connections one client session may run over, the
    /// first included: more connections add up their kernel windows across
    /// a long path. 1 = one connection per session.
    pub max_connections_per_client: usize,
    /// Visitor streams one client session may carry at once. Keep it well
    /// below the yamux session's stream limit (`MuxConfig::max_streams`,
    /// 65,536 on both sides by default) so this limit, with its clear
    /// reason, is the one hit.
    pub max_streams_per_client: usize,
    /// Visitor streams on the whole server at once.
    pub max_streams: usize,
    /// Visitors of one tunnel waiting for the client to reach its target.
    /// As many as a client may have streams by default: a burst of new
    /// visitors (10,000 idle visitors arriving within a second in the
    /// benchmark) is not turned away before the client's own limit; what
    /// each holds meanwhile is bounded by `max_buffered_bytes`.
    pub max_pending_visitors: usize,
    /// Visitors connected at once from one source address (an IPv6 source
    /// counts by its /64), over all tunnels; 0 = no limit. Keeps one
    /// address from holding every stream slot.
    pub max_visitors_per_ip: usize,
    /// Bytes of tunnel data the server may hold in memory, over all
    /// sessions: what peers may send ahead of slow readers (each stream's
    /// initial yamux window and relay buffers, each session's window growth).
    /// A visitor that would cross it is refused; sessions' window growth
    /// may use at most half of it. Default: half the machine's memory.
    pub max_buffered_bytes: u64,
    /// UDP flows (visitor addresses) one UDP tunnel carries at once; a
    /// datagram from a new address past it is dropped and the refusal
    /// reported.
    pub max_udp_flows_per_tunnel: usize,
    /// UDP flows at once from one source IP (an IPv6 source counts by its
    /// /64), over all tunnels; 0 = no limit. Counted apart from
    /// `max_visitors_per_ip`: a UDP source address is easily forged, and
    /// forged flows must not use up a real address's TCP visitors.
    pub max_udp_flows_per_ip: usize,
    /// A UDP flow that moved no datagram either way for this long is
    /// closed (UDP has no end of its own).
    pub udp_flow_idle: Duration,
    /// Failed logins per source IP per minute (burst and rate, 0 = no
    /// limit). Past it, every login from that IP is refused, right token or
    /// not, until the rate allows another attempt.
    pub failed_logins_per_minute: u32,
    /// How often each side sends a heartbeat on an idle control stream.
    pub heartbeat_interval: Duration,
    /// Silence after which the peer is taken for dead.
    pub heartbeat_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 1000,
            max_handshakes: 512,
            max_handshakes_per_ip: 16,
            max_tunnels_per_client: 64,
            max_connections_per_client: 8,
            max_streams_per_client: 16_384,
            max_streams: 50_000,
            max_pending_visitors: 16_384,
            max_visitors_per_ip: 1024,
            max_buffered_bytes: half_of_memory(),
            max_udp_flows_per_tunnel: 1024,
            max_udp_flows_per_ip: 256,
            udp_flow_idle: Duration::from_secs(60),
            failed_logins_per_minute: 10,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
        }
    }
}

/// A limit that was hit: which one, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    /// The limit's name as in [`Limits`] and the config file.
    pub name: &'static str,
    /// Its configured value.
    pub max: usize,
}

/// Half of the machine's memory (from `/proc/meminfo`), or 4 GiB where
/// that cannot be read.
fn half_of_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(4 << 30)
}

/// A counted slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) enum Slot {
    /// A limit that is off.
    Unlimited,
    Permit {
        _permit: OwnedSemaphorePermit,
    },
    PerIp {
        _slot: PerIpSlot,
    },
    Bytes {
        _permits: Vec<OwnedSemaphorePermit>,
    },
}

/// What a new stream of a tunnel carries: a TCP visitor's connection or
/// a UDP flow (whose queue of datagrams is its own buffer to reserve).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arrival {
    Connection,
    Flow,
}

impl Arrival {
    /// What refusals call it.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Arrival::Connection => "visitor",
            Arrival::Flow => "flow",
        }
    }
}

/// `max_buffered_bytes`: reservations of memory that peers may make the
/// server fill. Counted in KiB so a semaphore's `u32` request covers 4 TiB.
///
/// yamux lets the peer send a stream's whole receive window ahead of our
/// reader, and a visitor who stops reading leaves exactly that in memory.
/// So a stream reserves its worst case (initial window plus relay buffers)
/// before it opens, and window growth is granted step by step as streams
/// grow (`windows.rs`), from a second pool of half the budget, so sessions
/// never take what visitors need to open at all.
///
/// A UDP flow reserves its framing when it opens and its queue as the
/// queue grows (anyone can send a datagram from a new address, and most
/// flows queue next to nothing). Flows draw on a third pool of a quarter
/// of the budget, so UDP sources, forged ones included, cannot take what
/// TCP visitors need.
#[derive(Debug)]
pub(crate) struct Budget {
    max: u64,
    per_stream_kib: u32,
    per_flow_kib: u32,
    total: Arc<Semaphore>,
    flows: Arc<Semaphore>,
    /// Half the budget, shared fairly by the sessions' windows.
    windows: Arc<WindowShares>,
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Budget {
    /// A budget of `max` bytes, of which each TCP visitor's stream takes
    /// `per_stream` and each UDP flow's `per_flow`.
    pub(crate) fn new(max: u64, per_stream: usize, per_flow: usize) -> Budget {
        let units = (kib(max) as usize).min(Semaphore::MAX_PERMITS);
        let total = Arc::new(Semaphore::new(units));
        Budget {
            max,
            per_stream_kib: kib(per_stream as u64).max(1),
            per_flow_kib: kib(per_flow as u64).max(1),
            windows: WindowShares::new(Arc::new(Semaphore::new(units / 2)), total.clone()),
            total,
            flows: Arc::new(Semaphore::new(units / 4)),
        }
    }

    /// Reserves what one `arrival`'s stream holds when it opens (a TCP
    /// visitor's worst case; a UDP flow's framing), or says the budget is spent.
    pub(crate) fn stream(&self, arrival: Arrival) -> Result<Slot, LimitHit> {
        match arrival {
            Arrival::Connection => self.take(&[&self.total], self.per_stream_kib),
            Arrival::Flow => self.take(&[&self.flows, &self.total], self.per_flow_kib),
        }
    }

    /// Reserves `bytes` more of a UDP flow's queue.
    pub(crate) fn flow_queue(&self, bytes: usize) -> Result<Slot, LimitHit> {
        self.take(&[&self.flows, &self.total], kib(bytes as u64))
    }

    /// `kib` from each of `pools`, or none if one has not enough.
    fn take(&self, pools: &[&Arc<Semaphore>], kib: u32) -> Result<Slot, LimitHit> {
        let spent = || LimitHit {
            name: "max_buffered_bytes",
            max: usize::try_from(self.max).unwrap_or(usize::MAX),
        };
        let permits = pools
            .iter()
            .map(|pool| {
                (*pool)
                    .clone()
                    .try_acquire_many_owned(kib)
                    .map_err(|_| spent())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Slot::Bytes { _permits: permits })
    }

    /// The window growth pool, for sessions to join.
    pub(crate) fn windows(&self) -> &Arc<WindowShares> {
        &self.windows
    }
}

/// A slot in a count of at most `max`.
#[derive(Debug)]
pub(crate) struct Slots {
    name: &'static str,
    max: usize,
    slots: Arc<Semaphore>,
}

impl Slots {
    pub(crate) fn new(name: &'static str, max: usize) -> Slots {
        Slots {
            name,
            max,
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes a slot, or says which limit is full.
    pub(crate) fn take(&self) -> Result<Slot, LimitHit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|p| Slot::Permit { _permit: p })
            .map_err(|_| LimitHit {
                name: self.name,
                max: self.max,
            })
    }
}

/// Counts open handshakes per source IP.
#[derive(Debug)]
pub(crate) struct PerIp {
    name: &'static str,
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

#[derive(Debug)]
pub(crate) struct PerIpSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    pub(crate) fn new(name: &'static str, max: usize) -> PerIp {
        PerIp {
            name,
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for `ip` (counted per [`ip_key`]); always one when the limit is 0.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<Slot, LimitHit> {
        if self.max == 0 {
            return Ok(Slot::Unlimited);
        }
        let ip = ip_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(LimitHit {
                name: self.name,
                max: self.max,
            });
        }
        *n += 1;
        let slot = PerIpSlot {
            ip,
            counts: self.counts.clone(),
        };
        Ok(Slot::PerIp { _slot: slot })
    }
}

/// Source IPs that failed to log in too often: refused until their time is
/// up. Counted per [`ip_key`] (an IPv6 source by its /64). Both maps forget
/// idle entries as they grow, so failures from ever new addresses cost
/// memory only for those failing now.
pub(crate) struct FailedLogins {
    per_minute: u32,
    limiter: Option<KeyedLimiter<IpAddr>>,
    blocked: Mutex<Blocked>,
}

/// Addresses refused until a time, swept of expired ones each time the map
/// has doubled since the last sweep.
#[derive(Default)]
struct Blocked {
    until: HashMap<IpAddr, Instant>,
    sweep_at: usize,
}

/// The fewest blocked addresses at which a sweep is worth its pass.
const FIRST_SWEEP: usize = 1024;

impl FailedLogins {
    pub(crate) fn new(per_minute: u32) -> FailedLogins {
        FailedLogins {
            per_minute,
            limiter: NonZeroU32::new(per_minute).map(KeyedLimiter::per_minute),
            blocked: Mutex::default(),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub(crate) fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let until = *blocked.until.get(&ip_key(ip))?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a failed login; returns the block if this one crossed the limit.
    pub(crate) fn failed(&self, ip: IpAddr) -> Option<Duration> {
        let wait = self.limiter.as_ref()?.check(&ip_key(ip)).err()?;
        self.block(ip, wait);
        Some(wait)
    }

    /// Refuses `ip` (its /64, for IPv6) for `wait`: this server's count
    /// crossed the limit, or the fleet's did.
    pub(crate) fn block(&self, ip: IpAddr, wait: Duration) {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.until.len() >= blocked.sweep_at.max(FIRST_SWEEP) {
            blocked.until.retain(|_, until| *until > now);
            blocked.sweep_at = blocked.until.len() * 2;
        }
        let until = blocked.until.entry(ip_key(ip)).or_insert(now);
        *until = (*until).max(now + wait);
    }

    /// Addresses held (blocked ones and the limiter's), for tests.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let limiter = self.limiter.as_ref().map_or(0, KeyedLimiter::len);
        (
            self.blocked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .until
                .len(),
            limiter,
        )
    }

    /// The configured rate, for messages.
    pub(crate) fn per_minute(&self) -> u32 {
        self.per_minute
    }
}

impl std::fmt::Debug for FailedLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedLogins")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_flows_take_at_most_a_quarter_and_give_it_back() {
        const KIB: usize = 1024;
        // 800 KiB: eight connections' streams; flows may hold 200 KiB.
        let budget = Budget::new(8 * 100 * KIB as u64, 100 * KIB, 50 * KIB);
        let flows: Vec<Slot> = (0..2)
            .map(|_| budget.stream(Arrival::Flow).expect("a flow fits"))
            .collect();
        let queue = budget.flow_queue(100 * KIB).expect("a queue grows");
        let hit = budget
            .flow_queue(KIB)
            .expect_err("the flows' quarter is spent");
        assert_eq!(hit.name, "max_buffered_bytes");
        budget
            .stream(Arrival::Flow)
            .expect_err("no new flow either");
        // TCP visitors still have the other three quarters.
        let conns: Vec<Slot> = (0..6)
            .map(|_| budget.stream(Arrival::Connection).expect("a visitor fits"))
            .collect();
        budget
            .stream(Arrival::Connection)
            .expect_err("the whole budget is spent");
        drop((flows, queue));
        let _more: Vec<Slot> = (0..2)
            .map(|_| {
                budget
                    .stream(Arrival::Connection)
                    .expect("its room is back")
            })
            .collect();
        drop(conns);
    }

    #[test]
    fn failed_logins_from_one_ipv6_64_count_together() {
        let logins = FailedLogins::new(3);
        let host = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, n]);
        // Three failures from three addresses of one /64: within the burst.
        for n in 1..=3 {
            assert_eq!(logins.failed(host(n)), None);
        }
        // A fourth address of the same /64 crosses the limit for all of them.
        assert!(logins.failed(host(4)).is_some());
        assert!(logins.blocked_for(host(0xffff)).is_some());
        assert_eq!(logins.held(), (1, 1), "one key for the whole /64");
        // A neighbouring /64 is not affected.
        let neighbour = IpAddr::from([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]);
        assert!(logins.blocked_for(neighbour).is_none());
        assert_eq!(logins.failed(neighbour), None);
    }

    #[test]
    fn handshakes_per_ip_count_an_ipv6_64_as_one_source() {
        let per_ip = PerIp::new("max_handshakes_per_ip", 2);
        let host = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, n]);
        let _a = per_ip.take(host(1)).expect("first");
        let _b = per_ip.take(host(2)).expect("second");
        let hit = per_ip
            .take(host(3))
            .expect_err("a third address of the /64");
        assert_eq!(hit.name, "max_handshakes_per_ip");
        drop(_a);
        let _c = per_ip.take(host(3)).expect("a slot came back");
    }
}
