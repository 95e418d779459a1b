//! What the hook gathers between emissions, each taken whole by the
//! emitter: bytes per tunnel (from the meter's reports), refusals per
//! scope and reason, and login timings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_proto::RefuseCode;

use super::MAX_TIMINGS;
use crate::builtin::{MeterReport, MeterSink};
use crate::info::{Scope, TunnelId};

/// Bytes (in, out) per (client name, tunnel).
pub(super) type PerTunnel = HashMap<(Arc<str>, TunnelId), (u64, u64)>;

/// Bytes per tunnel since the last take. The meter reports here on each
/// emission and when a stream closes.
#[derive(Debug, Default)]
pub(super) struct TunnelBytes(Mutex<PerTunnel>);

impl TunnelBytes {
    pub(super) fn take(&self) -> PerTunnel {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl MeterSink for TunnelBytes {
    fn report(&self, report: &MeterReport) {
        let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for u in &report.tunnels {
            let Some(tunnel) = u.tunnel else { continue };
            let sum = bytes.entry((u.client.clone(), tunnel)).or_default();
            sum.0 += u.bytes_in;
            sum.1 += u.bytes_out;
        }
    }
}

/// The scopes a refusal can be about, as tagged.
const SCOPES: [&str; 3] = ["client", "tunnel", "stream"];

/// Refusals since the last take, per scope and [`RefuseCode`].
#[derive(Debug, Default)]
pub(super) struct Refusals([[AtomicU64; RefuseCode::ALL.len()]; SCOPES.len()]);

impl Refusals {
    pub(super) fn add(&self, scope: Scope<'_>, code: RefuseCode) {
        let row = match scope {
            Scope::Client(_) => 0,
            Scope::Tunnel(_) => 1,
            Scope::Stream(_) => 2,
            Scope::Server => return,
        };
        self.0[row][code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// (scope, reason, count) of each pair refused since the last take.
    pub(super) fn take(&self) -> Vec<(&'static str, RefuseCode, u64)> {
        let mut taken = Vec::new();
        for (scope, row) in SCOPES.iter().zip(&self.0) {
            for (code, n) in RefuseCode::ALL.iter().zip(row) {
                let n = n.swap(0, Ordering::Relaxed);
                if n > 0 {
                    taken.push((*scope, *code, n));
                }
            }
        }
        taken
    }
}

/// Login durations in milliseconds since the last take, at most [`MAX_TIMINGS`].
#[derive(Debug, Default)]
pub(super) struct Logins(Mutex<Vec<u64>>);

impl Logins {
    pub(super) fn took(&self, time: Duration) {
        let mut times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if times.len() < MAX_TIMINGS {
            times.push(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        }
    }

    pub(super) fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
