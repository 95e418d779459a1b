//! Forwards a sample of another hook's data events: one in N per stream and
//! direction, or at most one per interval. Each forwarded event carries in
//! [`DataEvent::skipped`] the bytes of the chunks it stood in for, and a
//! stream's close hands the wrapped hook a final empty event with the
//! remainder, so byte totals seen by the wrapped hook stay exact.
//!
//! All other events go to the wrapped hook unchanged. Sampling state is per
//! stream (atomics), so there is no RNG and no lock per chunk.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{
    AdminAction, ClientInfo, DataEvent, Direction, ErrorEvent, Login, Rejection, Scope, ServerInfo,
    StreamEnd, StreamInfo, Totals, TunnelInfo,
};
use crate::verdict::{CloseReason, Gate, Verdict};

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// The first chunk, then every Nth.
    OneIn(NonZeroU64),
    /// The first chunk, then the first after each interval.
    Every(Duration),
}

/// Wraps `H`, forwarding sampled data events (see the module docs).
///
/// # Example
///
/// A costly per-chunk hook sees one chunk in 4, yet its byte count stays exact:
///
/// ```
/// use std::num::NonZeroU64;
/// use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{Sampler, Sampling};
/// use reitunnel_hooks::{DataEvent, Direction, Hook, HookChain, Login, Verdict};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// /// Counts the data events it gets and the bytes they account for.
/// #[derive(Default)]
/// struct Inspect { calls: AtomicU64, bytes: AtomicU64 }
/// impl Hook for Inspect {
///     fn name(&self) -> &str { "inspect" }
///     fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
///         self.calls.fetch_add(1, Relaxed);
///         self.bytes.fetch_add(ev.bytes(), Relaxed); // chunk + skipped
///         Verdict::Continue
///     }
/// }
///
/// let inspect = Arc::new(Inspect::default());
/// let one_in_4 = Sampling::OneIn(NonZeroU64::new(4).unwrap());
/// let chain = HookChain::builder()
///     .hook(Sampler::new(inspect.clone(), one_in_4))
///     .build();
/// assert_eq!(chain.names(), ["sampled(inspect)"]);
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
/// for _ in 0..10 {
///     let _ = stream.on_data(Direction::Ingress, &[0u8; 100]);
/// }
/// // Chunks 1, 5 and 9 were forwarded; chunk 9 carried 3 skipped chunks.
/// assert_eq!(inspect.calls.load(Relaxed), 3);
/// assert_eq!(inspect.bytes.load(Relaxed), 900);
///
/// drop(stream); // the close hands over the unsampled tail
/// assert_eq!(inspect.bytes.load(Relaxed), 1000);
/// # drop((tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Sampler<H> {
    inner: H,
    sampling: Sampling,
    name: String,
    epoch: Instant,
}

struct State {
    seen: [AtomicU64; 2],
    skipped: [AtomicU64; 2],
    /// Nanoseconds since `epoch` of the last forward, per direction (+1 so 0 means never).
    last: [AtomicU64; 2],
    inner: Option<StreamState>,
}

fn slot(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl<H: Hook> Sampler<H> {
    /// Samples `inner`'s data events.
    pub fn new(inner: H, sampling: Sampling) -> Self {
        let name = format!("sampled({})", inner.name());
        Sampler {
            inner,
            sampling,
            name,
            epoch: Instant::now(),
        }
    }

    fn take(&self, st: &State, i: usize, ev: &DataEvent<'_>) -> bool {
        match self.sampling {
            Sampling::OneIn(n) => st.seen[i].fetch_add(1, Ordering::Relaxed) % n.get() == 0,
            Sampling::Every(every) => {
                let now = ev.now().saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
                let last = st.last[i].load(Ordering::Relaxed);
                (last == 0 || now - last >= every.as_nanos() as u64)
                    && st.last[i]
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
            }
        }
    }
}

impl<H: Hook> Hook for Sampler<H> {
    fn name(&self) -> &str {
        &self.name
    }
    fn wants_data(&self) -> bool {
        self.inner.wants_data()
    }
    fn on_server_start(&self, s: &ServerInfo) -> HookResult {
        self.inner.on_server_start(s)
    }
    fn on_server_stop(&self, s: &ServerInfo) -> HookResult {
        self.inner.on_server_stop(s)
    }
    fn on_client_connect(&self, c: &ClientInfo, l: &Login<'_>) -> Gate {
        self.inner.on_client_connect(c, l)
    }
    fn on_client_disconnect(&self, c: &ClientInfo, r: &CloseReason, t: &Totals) -> HookResult {
        self.inner.on_client_disconnect(c, r, t)
    }
    fn on_tunnel_open(&self, t: &TunnelInfo) -> Gate {
        self.inner.on_tunnel_open(t)
    }
    fn on_tunnel_close(&self, t: &TunnelInfo, r: &CloseReason, tot: &Totals) -> HookResult {
        self.inner.on_tunnel_close(t, r, tot)
    }
    fn on_stream_open(&self, s: &StreamInfo) -> Gate {
        self.inner.on_stream_open(s)
    }
    fn on_open(&self, scope: Scope<'_>) {
        self.inner.on_open(scope)
    }
    fn on_rejected(&self, r: &Rejection<'_>) {
        self.inner.on_rejected(r)
    }
    fn on_error(&self, e: &ErrorEvent<'_>) {
        self.inner.on_error(e)
    }

    fn on_heartbeat(&self, c: &ClientInfo, rtt: Duration) {
        self.inner.on_heartbeat(c, rtt)
    }
    fn on_admin(&self, action: &AdminAction<'_>) {
        self.inner.on_admin(action)
    }

    fn stream_state(&self, s: &StreamInfo) -> Option<StreamState> {
        Some(Box::new(State {
            seen: Default::default(),
            skipped: Default::default(),
            last: Default::default(),
            inner: self.inner.stream_state(s),
        }))
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let Some(st) = ev.state::<State>() else {
            return self.inner.on_data(ev);
        };
        let i = slot(ev.direction);
        if !self.take(st, i, ev) {
            st.skipped[i].fetch_add(ev.bytes(), Ordering::Relaxed);
            return Verdict::Continue;
        }
        let skipped = st.skipped[i].swap(0, Ordering::Relaxed);
        self.inner.on_data(&DataEvent {
            skipped: ev.skipped + skipped,
            state: st.inner.as_deref(),
            ..*ev
        })
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let st = end.state::<State>();
        if let Some(st) = st {
            for dir in [Direction::Ingress, Direction::Egress] {
                let rest = st.skipped[slot(dir)].swap(0, Ordering::Relaxed);
                if rest > 0 {
                    // The tail the wrapped hook has not seen; its verdict no longer matters.
                    let _ = self.inner.on_data(&DataEvent {
                        skipped: rest,
                        state: st.inner.as_deref(),
                        ..DataEvent::new(end.stream, dir, &[])
                    });
                }
            }
        }
        self.inner.on_stream_close(&StreamEnd {
            state: st.and_then(|s| s.inner.as_deref()),
            ..*end
        })
    }
}
