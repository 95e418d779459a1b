//! The aggregating bandwidth meter: bytes per stream, tunnel and client,
//! each way, reported on an interval and on close, with exact totals.
//!
//! Each stream gets a pair of atomic counters when it opens (its per-stream
//! state); the data path adds to them without a lock. A report takes, per
//! live stream, what it carried since the last report; a closing stream
//! reports its remainder. So the sum of all reports equals the bytes moved,
//! exactly, whatever the interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::events::{Event, EventBus};
use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{ClientId, DataEvent, Direction, StreamEnd, StreamId, StreamInfo, TunnelId};
use crate::verdict::Verdict;

/// Bytes one client or tunnel moved in a report's interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The client's name.
    pub client: Arc<str>,
    /// The client session.
    pub client_id: ClientId,
    /// The tunnel, for per-tunnel lines; `None` in per-client lines.
    pub tunnel: Option<TunnelId>,
    /// Visitor → service bytes.
    pub bytes_in: u64,
    /// Service → visitor bytes.
    pub bytes_out: u64,
}

/// What moved since the previous report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterReport {
    /// One entry per client that moved bytes.
    pub clients: Vec<Usage>,
    /// One entry per tunnel that moved bytes.
    pub tunnels: Vec<Usage>,
}

/// Where reports go. Called from the reporting task or a closing stream's task: don't block.
pub trait MeterSink: Send + Sync + 'static {
    /// Takes one report (never empty).
    fn report(&self, report: &MeterReport);
}

/// Logs each client's usage through `tracing`.
#[derive(Debug, Default)]
pub struct TracingSink;

impl MeterSink for TracingSink {
    fn report(&self, r: &MeterReport) {
        for u in &r.clients {
            tracing::info!(target: "reitunnel::meter", client = %u.client, bytes_in = u.bytes_in, bytes_out = u.bytes_out, "bandwidth");
        }
    }
}

/// Emits one `bandwidth.report` event per client and tunnel.
impl MeterSink for EventBus {
    fn report(&self, r: &MeterReport) {
        for u in r.clients.iter().chain(&r.tunnels) {
            let mut ev = Event::now("bandwidth.report")
                .with("client", &*u.client)
                .with("client_id", u.client_id.0)
                .with("bytes_in", u.bytes_in)
                .with("bytes_out", u.bytes_out);
            if let Some(t) = u.tunnel {
                ev = ev.with("tunnel_id", t.0);
            }
            self.emit(&ev);
        }
    }
}

/// One stream's counters: bytes not yet reported, per direction. A report
/// swaps them to zero, so concurrent reports (the interval task and a
/// stream's own close) can never count a byte twice or lose one.
struct Counts {
    client: Arc<str>,
    client_id: ClientId,
    tunnel: TunnelId,
    pending: [AtomicU64; 2],
}

impl Counts {
    /// Takes what moved since the last take.
    fn take(&self) -> (u64, u64) {
        let take = |i: usize| self.pending[i].swap(0, Ordering::Relaxed);
        (take(0), take(1))
    }
}

/// The meter hook. Clone the `Arc` it comes in to call [`BandwidthMeter::report_now`].
///
/// # Example
///
/// A sink that keeps the reports; a report while the stream is live and its
/// close together account for every byte, exactly once.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use reitunnel_hooks::builtin::{BandwidthMeter, MeterReport, MeterSink};
/// use reitunnel_hooks::{Direction, HookChain, Login};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// #[derive(Default)]
/// struct Keep(Mutex<Vec<MeterReport>>);
/// impl MeterSink for Keep {
///     fn report(&self, report: &MeterReport) {
///         self.0.lock().unwrap().push(report.clone());
///     }
/// }
///
/// let keep = Arc::new(Keep::default());
/// let meter = BandwidthMeter::new(vec![keep.clone() as Arc<dyn MeterSink>]);
/// let chain = HookChain::builder().shared(meter.clone()).build();
/// // In a server: `let _task = meter.spawn_reporter(Duration::from_secs(60));`
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
/// let _ = stream.on_data(Direction::Ingress, &[0u8; 100]);
/// let _ = stream.on_data(Direction::Egress, &[0u8; 40]);
/// assert_eq!(meter.unreported(), (100, 40));
///
/// meter.report_now(); // what the reporter task does on each tick
/// let _ = stream.on_data(Direction::Ingress, &[0u8; 10]);
/// drop(stream); // the close reports the remainder
///
/// let reports = keep.0.lock().unwrap();
/// let alice_in: Vec<u64> = reports.iter().map(|r| r.clients[0].bytes_in).collect();
/// assert_eq!(alice_in, [100, 10]);
/// assert_eq!(reports[0].tunnels[0].tunnel, Some(TunnelId(1)));
/// # drop((tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BandwidthMeter {
    live: Mutex<HashMap<StreamId, Arc<Counts>>>,
    sinks: Vec<Arc<dyn MeterSink>>,
}

impl std::fmt::Debug for BandwidthMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandwidthMeter")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

fn add(into: &mut Vec<Usage>, c: &Counts, tunnel: Option<TunnelId>, (i, o): (u64, u64)) {
    match into
        .iter_mut()
        .find(|u| u.client_id == c.client_id && u.tunnel == tunnel)
    {
        Some(u) => {
            u.bytes_in += i;
            u.bytes_out += o;
        }
        None => into.push(Usage {
            client: c.client.clone(),
            client_id: c.client_id,
            tunnel,
            bytes_in: i,
            bytes_out: o,
        }),
    }
}

impl BandwidthMeter {
    /// A meter reporting to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn MeterSink>>) -> Arc<Self> {
        Arc::new(BandwidthMeter {
            live: Mutex::default(),
            sinks,
        })
    }

    fn publish(&self, counts: &[Arc<Counts>]) {
        let mut report = MeterReport::default();
        for c in counts {
            let delta = c.take();
            if delta != (0, 0) {
                add(&mut report.clients, c, None, delta);
                add(&mut report.tunnels, c, Some(c.tunnel), delta);
            }
        }
        if !report.clients.is_empty() {
            for sink in &self.sinks {
                sink.report(&report);
            }
        }
    }

    /// Reports what every live stream moved since the last report.
    pub fn report_now(&self) {
        let live: Vec<_> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        self.publish(&live);
    }

    /// Bytes (in, out) of live streams not yet reported: the meter's view between reports.
    pub fn unreported(&self) -> (u64, u64) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values().fold((0, 0), |(i, o), c| {
            let un = |k: usize| c.pending[k].load(Ordering::Relaxed);
            (i + un(0), o + un(1))
        })
    }

    /// Reports every `interval` until the returned task is aborted.
    #[cfg(feature = "tokio")]
    pub fn spawn_reporter(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let meter = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                match meter.upgrade() {
                    Some(m) => m.report_now(),
                    None => return,
                }
            }
        })
    }
}

impl Hook for BandwidthMeter {
    fn name(&self) -> &str {
        "meter"
    }

    fn stream_state(&self, s: &StreamInfo) -> Option<StreamState> {
        let counts = Arc::new(Counts {
            client: s.tunnel.client.name.clone(),
            client_id: s.tunnel.client.id,
            tunnel: s.tunnel.id,
            pending: Default::default(),
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(s.id, counts.clone());
        Some(Box::new(counts))
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        if let Some(c) = ev.state::<Arc<Counts>>() {
            let i = match ev.direction {
                Direction::Ingress => 0,
                Direction::Egress => 1,
            };
            c.pending[i].fetch_add(ev.bytes(), Ordering::Relaxed);
        }
        Verdict::Continue
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&end.stream.id);
        if let Some(c) = removed {
            self.publish(&[c]);
        }
        Ok(())
    }
}
