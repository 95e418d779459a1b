use std::sync::atomic::{AtomicU64, Ordering};

use crate::hook::{Hook, HookResult};
use crate::info::Scope;
use crate::info::{ClientInfo, DataEvent, Rejection, StreamEnd, Totals, TunnelInfo};
use crate::verdict::CloseReason;
use crate::verdict::Verdict;

/// Process-wide atomic counters: active and total clients, tunnels and
/// streams, bytes each way (live, per chunk), rejections and errors.
/// Share it with `Arc` and read [`Counters::snapshot`] from anywhere.
///
/// # Example
///
/// A stream through a chain holding the counters, then a snapshot:
///
/// ```
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::Counters;
/// use reitunnel_hooks::{ClientId, ClientInfo, Direction, HookChain, Login};
/// # use reitunnel_hooks::{StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// let counters = Arc::new(Counters::new());
/// let chain = HookChain::builder().shared(counters.clone()).build();
///
/// let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// let nonce = [0u8; 32];
/// let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// let client = chain.open_client(alice.clone(), &Login { nonce: &nonce, proof: &proof }).unwrap();
/// # let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice, TunnelKind::Reverse,
/// #     "0.0.0.0:8080".parse()?, "127.0.0.1:3000"));
/// # let stream = Arc::new(StreamInfo::new(StreamId(1), tunnel.clone(), "127.0.0.1:40000".parse()?));
/// let tunnel = chain.open_tunnel(tunnel).unwrap();
/// let stream = chain.open_stream(stream).unwrap();
/// let _ = stream.on_data(Direction::Ingress, &[0u8; 100]);
/// let _ = stream.on_data(Direction::Egress, &[0u8; 40]);
/// drop(stream); // closes the stream
///
/// let now = counters.snapshot();
/// assert_eq!((now.bytes_in, now.bytes_out), (100, 40));
/// assert_eq!((now.streams_active, now.streams_total), (0, 1));
/// assert_eq!((now.clients_active, now.tunnels_active), (1, 1));
/// # drop((tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

    fn on_client_disconnect(&self, _: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        dec(&self.clients_active);
        Ok(())
    }

    fn on_tunnel_close(&self, _: &TunnelInfo, _: &CloseReason, _: &Totals) -> HookResult {
        dec(&self.tunnels_active);
        Ok(())
    }

    fn on_stream_close(&self, _: &StreamEnd<'_>) -> HookResult {
        dec(&self.streams_active);
        Ok(())
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let c = match ev.direction {
            crate::info::Direction::Ingress => &self.bytes_in,
            crate::info::Direction::Egress => &self.bytes_out,
        };
        c.fetch_add(ev.bytes(), Ordering::Relaxed);
        Verdict::Continue
    }

    fn on_error(&self, _: &crate::info::ErrorEvent<'_>) {
        inc(&self.errors);
    }
}
