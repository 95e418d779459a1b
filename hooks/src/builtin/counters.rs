use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{ClientInfo, CloseReason, DataEvent, Rejection, StreamEnd, Totals, TunnelInfo};
use crate::event::{Scope, Verdict};
use crate::hook::{BoxError, Hook};

/// Process-wide atomic counters: active and total clients, tunnels and
/// streams, bytes each way (live, per chunk), rejections and errors.
/// Share it with `Arc` and read [`Counters::snapshot`] from anywhere.
#[derive(Debug, Default)]
pub struct Counters {
    clients_active: AtomicU64,
    clients_total: AtomicU64,
    tunnels_active: AtomicU64,
    tunnels_total: AtomicU64,
    streams_active: AtomicU64,
    streams_total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    rejections: AtomicU64,
    errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // field names say it
pub struct CountersSnapshot {
    pub clients_active: u64,
    pub clients_total: u64,
    pub tunnels_active: u64,
    pub tunnels_total: u64,
    pub streams_active: u64,
    pub streams_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rejections: u64,
    pub errors: u64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

impl Counters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Counters::default()
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            clients_active: l(&self.clients_active),
            clients_total: l(&self.clients_total),
            tunnels_active: l(&self.tunnels_active),
            tunnels_total: l(&self.tunnels_total),
            streams_active: l(&self.streams_active),
            streams_total: l(&self.streams_total),
            bytes_in: l(&self.bytes_in),
            bytes_out: l(&self.bytes_out),
            rejections: l(&self.rejections),
            errors: l(&self.errors),
        }
    }
}

impl Hook for Counters {
    fn name(&self) -> &str {
        "counters"
    }

    fn on_open(&self, scope: Scope<'_>) {
        let (active, total) = match scope {
            Scope::Client(_) => (&self.clients_active, &self.clients_total),
            Scope::Tunnel(_) => (&self.tunnels_active, &self.tunnels_total),
            Scope::Stream(_) => (&self.streams_active, &self.streams_total),
            Scope::Server => return,
        };
        inc(active);
        inc(total);
    }

    fn on_rejected(&self, _: &Rejection<'_>) {
        inc(&self.rejections);
    }

    fn on_client_disconnect(
        &self,
        _: &ClientInfo,
        _: &CloseReason,
        _: &Totals,
    ) -> Result<(), BoxError> {
        dec(&self.clients_active);
        Ok(())
    }

    fn on_tunnel_close(&self, _: &TunnelInfo, _: &CloseReason, _: &Totals) -> Result<(), BoxError> {
        dec(&self.tunnels_active);
        Ok(())
    }

    fn on_stream_close(&self, _: &StreamEnd<'_>) -> Result<(), BoxError> {
        dec(&self.streams_active);
        Ok(())
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let c = match ev.direction {
            crate::event::Direction::Ingress => &self.bytes_in,
            crate::event::Direction::Egress => &self.bytes_out,
        };
        c.fetch_add(ev.bytes(), Ordering::Relaxed);
        Verdict::Continue
    }

    fn on_error(&self, _: &crate::event::ErrorEvent<'_>) {
        inc(&self.errors);
    }
}
