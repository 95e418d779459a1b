//! Rate limits per key (a source address, a client) that forget idle keys,
//! and the address a per-IP limit should count.
//!
//! A per-key limiter keeps an entry for every key it has seen. Keys an
//! attacker picks (source addresses) would grow it without bound, and
//! clearing it wholesale would hand every key a fresh burst, the attacker
//! and everyone else alike. So entries are dropped only when they are
//! indistinguishable from a fresh one (governor's `retain_recent`), each
//! time the map has doubled since the last sweep: amortised O(1) per check,
//! memory bounded by twice the keys that are active at once.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The address a per-IP limit counts: IPv4 addresses as they are, IPv6 by
/// their /64 prefix. One IPv6 host usually holds a whole /64, so counting
/// full addresses would let it take every slot alone.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The fewest keys at which a sweep is worth its pass.
const FIRST_SWEEP: usize = 1024;

/// A GCRA limiter per key that forgets keys gone idle. See the module docs.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    /// Sweep when the map reaches this many keys.
    sweep_at: AtomicUsize,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_sec` events a second per key, `burst` at once.
    pub fn per_second(per_sec: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::new(Quota::per_second(per_sec).allow_burst(burst))
    }

    /// `per_minute` events a minute per key, all of them at once if they come together.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self::new(Quota::per_minute(per_minute))
    }

    fn new(quota: Quota) -> Self {
        KeyedLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            sweep_at: AtomicUsize::new(FIRST_SWEEP),
        }
    }

    /// Counts one event for `key`: `Ok` if it conforms, else how long until one would.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let verdict = self
            .limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()));
        let len = self.limiter.len();
        if len >= self.sweep_at.load(Ordering::Relaxed) {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            let kept = self.limiter.len();
            self.sweep_at
                .store((kept * 2).max(FIRST_SWEEP), Ordering::Relaxed);
        }
        verdict
    }

    /// Keys held (active ones plus those not yet swept).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_eq!(ip_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(ip_key(a), ip_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
    }

    #[test]
    fn a_scan_does_not_reset_a_busy_key() {
        let limiter = KeyedLimiter::per_minute(NonZeroU32::new(1).unwrap());
        // The busy key spends its one event a minute...
        assert!(limiter.check(&u32::MAX).is_ok());
        // ...then a scan from 100,000 other keys, one event each...
        for key in 0..100_000u32 {
            assert!(limiter.check(&key).is_ok());
        }
        // ...has not handed it a fresh burst (a wholesale clear would have).
        let wait = limiter.check(&u32::MAX).expect_err("still limited");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }

    #[test]
    fn keys_gone_idle_are_swept_as_the_map_grows() {
        // Replenished within a nanosecond: every key is idle by the next check.
        let limiter = KeyedLimiter::per_second(
            NonZeroU32::new(1_000_000_000).unwrap(),
            NonZeroU32::new(1).unwrap(),
        );
        for key in 0..50_000u32 {
            assert!(limiter.check(&key).is_ok());
            assert!(limiter.len() <= FIRST_SWEEP, "{} keys held", limiter.len());
        }
    }
}
