use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::hook::{Hook, HookResult};
use crate::info::{
    ClientInfo, DataEvent, ErrorEvent, Rejection, Scope, ServerInfo, StreamEnd, Totals, TunnelInfo,
};
use crate::tally::{Tally, SUM_OVER};
use crate::verdict::{CloseReason, Verdict};

/// Logs every lifecycle event through `tracing` (target `reitunnel::events`),
/// and 1 in `sample_every` data events at `debug` so logging cannot drown
/// the data path. A shared atomic counter does the sampling: no RNG, no lock.
///
/// # Example
///
/// Install a `tracing` subscriber in the program to see the lines; the hook
/// itself never changes a verdict.
///
/// ```
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::TracingHook;
/// use reitunnel_hooks::{Direction, Hook, HookChain, Login, Verdict};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// // Lifecycle events, plus one data event in 100.
/// let chain = HookChain::builder().hook(TracingHook::new(100)).build();
/// assert_eq!(chain.names(), ["log"]);
/// // 0 logs no data events, so the relay skips the per-chunk call.
/// assert!(!TracingHook::new(0).wants_data());
///
/// # let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// # let nonce = [0u8; 32];
/// # let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// # let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice.clone(), TunnelKind::Reverse,
/// #     "0.0.0.0:8080".parse()?, "127.0.0.1:3000"));
/// # let stream = Arc::new(StreamInfo::new(StreamId(1), tunnel.clone(), "127.0.0.1:40000".parse()?));
/// let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap(); // client.connected
/// let tunnel = chain.open_tunnel(tunnel).unwrap(); // tunnel.opened
/// let stream = chain.open_stream(stream).unwrap(); // stream.opened (debug)
/// assert_eq!(stream.on_data(Direction::Ingress, b"GET / HTTP/1.1\r\n"), Verdict::Continue);
/// drop((stream, tunnel, client)); // stream.closed, tunnel.closed, client.disconnected
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TracingHook {
    sample_every: u64,
    seen: AtomicU64,
    /// Refused streams, summed per tunnel and reason: a flood of refused
    /// visitors is a line a second, not a line each.
    stream_rejections: Arc<Tally>,
}

impl Default for TracingHook {
    fn default() -> Self {
        TracingHook::new(1024)
    }
}

impl TracingHook {
    /// Logs lifecycle events and one in `sample_every` data events (0 = none).
    pub fn new(sample_every: u64) -> Self {
        TracingHook {
            sample_every,
            seen: AtomicU64::new(0),
            stream_rejections: Tally::new(SUM_OVER, |summed| {
                tracing::warn!(target: T, "rejected: {summed}");
            }),
        }
    }
}

const T: &str = "reitunnel::events";

impl Hook for TracingHook {
    fn name(&self) -> &str {
        "log"
    }

    fn wants_data(&self) -> bool {
        self.sample_every > 0
    }

    fn on_server_start(&self, s: &ServerInfo) -> HookResult {
        tracing::info!(target: T, server = %s.name, listen = %s.listen, "server.started");
        Ok(())
    }

    fn on_server_stop(&self, s: &ServerInfo) -> HookResult {
        tracing::info!(target: T, server = %s.name, "server.stopped");
        Ok(())
    }

    fn on_open(&self, scope: Scope<'_>) {
        match scope {
            Scope::Client(c) => {
                tracing::info!(target: T, client = %c.name, id = %c.id, peer = %c.peer, "client.connected")
            }
            Scope::Tunnel(t) => {
                tracing::info!(target: T, client = %t.client.name, tunnel = %t.id, bind = %t.bind,
                target = %t.target, transport = %t.transport, "tunnel.opened")
            }
            Scope::Stream(s) => {
                tracing::debug!(target: T, tunnel = %s.tunnel.id, stream = %s.id, peer = %s.peer, "stream.opened")
            }
            Scope::Server => {}
        }
    }

    fn on_client_disconnect(&self, c: &ClientInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        tracing::info!(target: T, client = %c.name, id = %c.id, %reason, bytes_in = t.bytes_in,
            bytes_out = t.bytes_out, streams = t.streams, "client.disconnected");
        Ok(())
    }

    fn on_tunnel_close(&self, t: &TunnelInfo, reason: &CloseReason, tot: &Totals) -> HookResult {
        tracing::info!(target: T, client = %t.client.name, tunnel = %t.id, %reason,
            bytes_in = tot.bytes_in, bytes_out = tot.bytes_out, streams = tot.streams, "tunnel.closed");
        Ok(())
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let (s, t) = (end.stream, end.totals);
        tracing::debug!(target: T, tunnel = %s.tunnel.id, stream = %s.id, reason = %end.reason,
            bytes_in = t.bytes_in, bytes_out = t.bytes_out, "stream.closed");
        Ok(())
    }

    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if self.sample_every > 0 && n % self.sample_every == 0 {
            tracing::debug!(target: T, stream = %ev.stream.id, dir = ev.direction.as_str(),
                len = ev.data.len(), sampled_1_in = self.sample_every, "data");
        }
        Verdict::Continue
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        match r.scope {
            Scope::Stream(s) => self.stream_rejections.refused(format_args!(
                "a stream of {} by {}: {}",
                Scope::Tunnel(&s.tunnel),
                r.by,
                r.reason
            )),
            _ => {
                tracing::warn!(target: T, what = %r.scope, by = r.by, reason = %r.reason, "rejected")
            }
        }
    }

    fn on_error(&self, e: &ErrorEvent<'_>) {
        tracing::warn!(target: T, what = %e.scope, error = %e.error, "error");
    }

    fn on_admin(&self, a: &crate::info::AdminAction<'_>) {
        tracing::info!(target: T, action = a.action, target_of = a.target, by = a.by, outcome = a.outcome, "admin");
    }

    fn on_heartbeat(&self, c: &ClientInfo, rtt: std::time::Duration) {
        tracing::debug!(target: T, client = %c.name, id = %c.id, rtt_ms = rtt.as_secs_f64() * 1e3, "heartbeat");
    }
}
