//! What the alert rules read, gathered between evaluations: bytes per
//! client (from the meter's reports) and failed logins per source network,
//! kept per evaluation so a rule can sum the last `in` seconds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::builtin::{MeterReport, MeterSink};

/// Source networks counted apart per evaluation; failures from further
/// ones in the same interval are counted under [`OTHER_NETWORKS`].
const MAX_NETWORKS: usize = 4_096;
/// The subject of failures from networks past [`MAX_NETWORKS`].
const OTHER_NETWORKS: &str = "other";

/// Bytes (in, out) per client name since the last take.
#[derive(Debug, Default)]
pub(super) struct ClientBytes(Mutex<HashMap<Arc<str>, (u64, u64)>>);

impl ClientBytes {
    pub(super) fn take(&self) -> HashMap<Arc<str>, (u64, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl MeterSink for ClientBytes {
    fn report(&self, report: &MeterReport) {
        let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for u in &report.clients {
            let sum = bytes.entry(u.client.clone()).or_default();
            sum.0 += u.bytes_in;
            sum.1 += u.bytes_out;
        }
    }
}

/// The network a failed login is counted under: the address's /24
/// (IPv4) or /64 (IPv6), as one attacker usually holds at least that.
pub(super) fn network(ip: IpAddr) -> String {
    let prefix = match ip.to_canonical() {
        IpAddr::V4(_) => 24,
        IpAddr::V6(_) => 64,
    };
    IpNet::new(ip.to_canonical(), prefix)
        .map(|net| net.trunc().to_string())
        .unwrap_or_else(|_| ip.to_string())
}

/// Failed logins per network since the last take.
#[derive(Debug, Default)]
pub(super) struct FailedLogins(Mutex<HashMap<String, u64>>);

impl FailedLogins {
    pub(super) fn failed(&self, from: IpAddr) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let net = network(from);
        let key = if counts.len() < MAX_NETWORKS || counts.contains_key(&net) {
            net
        } else {
            OTHER_NETWORKS.to_owned()
        };
        *counts.entry(key).or_default() += 1;
    }

    pub(super) fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Failed logins per network of each evaluation, for sums over a window.
#[derive(Debug, Default)]
pub(super) struct Window(VecDeque<(Instant, HashMap<String, u64>)>);

impl Window {
    /// Adds the counts taken at `now` and forgets those older than `keep`.
    pub(super) fn push(&mut self, now: Instant, counts: HashMap<String, u64>, keep: Duration) {
        while self
            .0
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= keep)
        {
            self.0.pop_front();
        }
        if !counts.is_empty() {
            self.0.push_back((now, counts));
        }
    }

    /// Per network, the failures taken within `span` before `now`.
    pub(super) fn sums(&self, now: Instant, span: Duration) -> HashMap<&str, u64> {
        let mut sums = HashMap::new();
        for (_, counts) in self
            .0
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) < span)
        {
            for (net, n) in counts {
                *sums.entry(net.as_str()).or_default() += n;
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_network_and_summed_over_the_window() {
        let failed = FailedLogins::default();
        for ip in [
            "203.0.113.7",
            "203.0.113.200",
            "2001:db8::1",
            "::ffff:198.51.100.1",
        ] {
            failed.failed(ip.parse().unwrap());
        }
        let t0 = Instant::now();
        let mut window = Window::default();
        window.push(t0, failed.take(), Duration::from_secs(60));
        failed.failed("203.0.113.9".parse().unwrap());
        window.push(
            t0 + Duration::from_secs(30),
            failed.take(),
            Duration::from_secs(60),
        );
        let sums = window.sums(t0 + Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(sums["203.0.113.0/24"], 3);
        assert_eq!(sums["2001:db8::/64"], 1);
        assert_eq!(sums["198.51.100.0/24"], 1);
        let later = window.sums(t0 + Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(
            later["203.0.113.0/24"], 1,
            "the first counts left the window"
        );
    }
}
