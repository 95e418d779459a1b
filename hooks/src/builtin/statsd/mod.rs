//! StatsD and DogStatsD: what the server does, sent as metric lines over
//! UDP on an interval, for Telegraf's statsd input, the Datadog agent or
//! any StatsD server.
//!
//! Each interval sends (names after the configured prefix):
//! - counters since the last interval: `bytes_in`, `bytes_out` per client
//!   and tunnel (the [`BandwidthMeter`]'s reports, so the counters of all
//!   intervals add up to exactly the bytes moved), `logins`,
//!   `refusals` per scope and reason, `streams_opened`, `streams_closed`;
//! - gauges: `sessions`, `tunnels`, `open_streams`, and per connected
//!   client and each quota's period `quota_used_bytes` and
//!   `quota_used_ratio` ([`Statsd::watch_quotas`]);
//! - timings: `login`, the milliseconds from a login read to its
//!   acceptance (the checks and gates, `http_auth` included), one per
//!   login, at most [`MAX_TIMINGS`] an interval. A visitor's time to first
//!   byte is not measured: hooks see a stream's first chunk only in
//!   `on_data`, and telling it apart would add work to every chunk.
//!
//! The data path costs what the meter costs: one atomic add per chunk in
//! the stream's own counters. Everything else happens where the event
//! happens (a login, a refusal: an atomic add or a short lock) or on the
//! interval, in the emitting task, which is where lines are written and
//! packets sent. Lines are packed into packets of at most
//! `max_packet_bytes`; UDP neither waits nor tells whether anyone got
//! them, so the only failures seen are the local ones, counted in
//! `reitunnel_statsd_packets_dropped_total{target}` (and the packets sent
//! in `reitunnel_statsd_packets_sent_total{target}`), `target` the `addr`.

mod lines;
mod tallies;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::present::{Connected, Watched};
use super::{BandwidthMeter, Counters, MeterSink, Quota};
use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{
    ClientInfo, DataEvent, Rejection, Scope, StreamEnd, StreamInfo, Totals, TunnelInfo,
};
use crate::verdict::{CloseReason, Verdict};
use lines::{Lines, Value};
pub use lines::{StatsdError, StatsdHealth};
use tallies::{Logins, Refusals, TunnelBytes};

/// The most `login` timings sent per interval; logins past them are still counted.
pub const MAX_TIMINGS: usize = 1_000;

/// The usual largest UDP payload that needs no fragmenting on Ethernet.
pub const DEFAULT_MAX_PACKET: usize = 1432;

/// How dimensions (client, tunnel, …) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Plain StatsD: in the name, `bytes_in.alice.t1`.
    Statsd,
    /// DogStatsD: as tags, `bytes_in|#client:alice,tunnel:t1`.
    Dogstatsd,
}

/// Where and how a [`Statsd`] sends.
#[derive(Debug, Clone)]
pub struct StatsdConfig {
    /// The StatsD server, `host:port` (UDP), resolved once at start.
    pub addr: String,
    /// Put before every name, with a `.`; empty for none.
    pub prefix: String,
    /// How dimensions are written.
    pub flavor: Flavor,
    /// Tags on every line (DogStatsD only).
    pub tags: Vec<(String, String)>,
    /// The largest packet sent; lines are packed into packets up to it.
    pub max_packet_bytes: usize,
}

/// The StatsD hook. Give it a task with [`Statsd::spawn_emitter`].
///
/// # Example
///
/// A stream's bytes, and the lines one emission sends to a UDP socket:
///
/// ```
/// use std::net::UdpSocket;
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{Flavor, Statsd, StatsdConfig, DEFAULT_MAX_PACKET};
/// use reitunnel_hooks::{Direction, HookChain, Login};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// let agent = UdpSocket::bind("127.0.0.1:0")?;
/// let statsd = Statsd::new(&StatsdConfig {
///     addr: agent.local_addr()?.to_string(),
///     prefix: "edge".into(),
///     flavor: Flavor::Dogstatsd,
///     tags: vec![("env".into(), "prod".into())],
///     max_packet_bytes: DEFAULT_MAX_PACKET,
/// })?;
/// let chain = HookChain::builder().shared(statsd.clone()).build();
/// // In a server: `let _task = statsd.spawn_emitter(Duration::from_secs(10));`
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
/// statsd.emit_now(); // what the emitter task does on each tick
///
/// let mut packet = [0u8; DEFAULT_MAX_PACKET];
/// let n = agent.recv(&mut packet)?;
/// let lines = std::str::from_utf8(&packet[..n])?;
/// assert!(lines.lines().any(|l| l == "edge.bytes_in:100|c|#env:prod,client:alice,tunnel:t1"), "{lines}");
/// assert!(lines.lines().any(|l| l == "edge.open_streams:1|g|#env:prod"), "{lines}");
/// # drop((stream, tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Statsd {
    lines: Lines,
    /// Bytes per tunnel; its sink is `bytes`.
    meter: Arc<BandwidthMeter>,
    bytes: Arc<TunnelBytes>,
    /// Sessions, tunnels and streams, open and in all.
    counters: Counters,
    /// Streams closed in all (`counters` has the open ones).
    streams_closed: AtomicU64,
    /// Logins, streams opened and closed at the last emission, for the counts since.
    last: Mutex<[u64; 3]>,
    refusals: Refusals,
    logins: Logins,
    /// The clients connected, for the quota gauges.
    connected: Connected,
    quotas: Watched<Quota>,
}

impl std::fmt::Debug for Statsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statsd").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Statsd {
    /// Resolves the address and opens a UDP socket; nothing is sent yet.
    pub fn new(config: &StatsdConfig) -> Result<Arc<Statsd>, StatsdError> {
        let bytes = Arc::new(TunnelBytes::default());
        Ok(Arc::new(Statsd {
            lines: Lines::open(config)?,
            meter: BandwidthMeter::new(vec![bytes.clone() as Arc<dyn MeterSink>]),
            bytes,
            counters: Counters::new(),
            streams_closed: AtomicU64::new(0),
            last: Mutex::default(),
            refusals: Refusals::default(),
            logins: Logins::default(),
            connected: Connected::default(),
            quotas: Watched::default(),
        }))
    }

    /// The quotas whose usage is sent for each connected client (replacing
    /// those given before: a reload's).
    pub fn watch_quotas(&self, quotas: &[Arc<Quota>]) {
        self.quotas.set(quotas);
    }

    /// Packets sent and dropped so far.
    pub fn health(&self) -> StatsdHealth {
        self.lines.health()
    }

    /// Sends everything measured since the last emission, and flushes.
    pub fn emit_now(&self) {
        self.meter.report_now();
        for ((client, tunnel), (bytes_in, bytes_out)) in self.bytes.take() {
            let tunnel = format!("t{}", tunnel.0);
            let dims = [("client", &*client), ("tunnel", tunnel.as_str())];
            self.count("bytes_in", bytes_in, &dims);
            self.count("bytes_out", bytes_out, &dims);
        }
        // Read under the lock, so two emissions at once (the timer's and the
        // last one at exit) cannot count a login or stream twice.
        let mut last = lock(&self.last);
        let now = self.counters.snapshot();
        // Each total only grows, so each count since is never negative.
        let totals = [
            now.clients_total,
            now.streams_total,
            self.streams_closed.load(Ordering::Relaxed),
        ];
        let before = std::mem::replace(&mut *last, totals);
        drop(last);
        let names = ["logins", "streams_opened", "streams_closed"];
        for ((name, now), before) in names.iter().zip(totals).zip(before) {
            self.count(name, now.saturating_sub(before), &[]);
        }
        for (scope, code, n) in self.refusals.take() {
            self.count("refusals", n, &[("scope", scope), ("reason", code.label())]);
        }
        self.lines
            .send("sessions", Value::Gauge(now.clients_active), &[]);
        self.lines
            .send("tunnels", Value::Gauge(now.tunnels_active), &[]);
        self.lines
            .send("open_streams", Value::Gauge(now.streams_active), &[]);
        self.send_quotas();
        for ms in self.logins.take() {
            self.lines.send("login", Value::Millis(ms), &[]);
        }
        self.lines.flush();
        let health = self.lines.health();
        let target = self.lines.target().to_owned();
        metrics::counter!("reitunnel_statsd_packets_sent_total", "target" => target.clone())
            .absolute(health.packets_sent);
        metrics::counter!("reitunnel_statsd_packets_dropped_total", "target" => target)
            .absolute(health.packets_dropped + health.oversized);
    }

    /// A counter, unless nothing happened.
    fn count(&self, name: &str, n: u64, dims: &[(&str, &str)]) {
        if n > 0 {
            self.lines.send(name, Value::Count(n), dims);
        }
    }

    fn send_quotas(&self) {
        let quotas = self.quotas.alive();
        if quotas.is_empty() {
            return;
        }
        let names = self.connected.names();
        for quota in &quotas {
            let period = format!("{}s", quota.period_secs());
            for name in &names {
                let used = quota.used(name);
                let dims = [("client", &**name), ("period", period.as_str())];
                self.lines
                    .send("quota_used_bytes", Value::Gauge(used), &dims);
                let ratio = used as f64 / quota.limit().max(1) as f64;
                self.lines
                    .send("quota_used_ratio", Value::Ratio(ratio), &dims);
            }
        }
    }

    /// Emits every `interval` until the returned task is aborted or the
    /// hook is dropped.
    #[cfg(feature = "tokio")]
    pub fn spawn_emitter(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let statsd = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                match statsd.upgrade() {
                    Some(s) => s.emit_now(),
                    None => return,
                }
            }
        })
    }
}

/// A hook a reload took out ends with the last session using it: what it
/// counted since its last emission is sent then, so the counters still add
/// up to every byte moved.
impl Drop for Statsd {
    fn drop(&mut self) {
        self.emit_now();
    }
}

impl Hook for Statsd {
    fn name(&self) -> &str {
        "statsd"
    }

    fn on_open(&self, scope: Scope<'_>) {
        self.counters.on_open(scope);
        if let Scope::Client(c) = scope {
            self.logins.took(c.opened_at.elapsed());
            self.connected.opened(c);
        }
    }

    fn on_client_disconnect(&self, c: &ClientInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        self.connected.closed(c);
        self.counters.on_client_disconnect(c, reason, t)
    }

    fn on_tunnel_close(&self, tunnel: &TunnelInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        self.counters.on_tunnel_close(tunnel, reason, t)
    }

    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        self.meter.stream_state(stream)
    }

    #[inline]
    fn on_data(&self, event: &DataEvent<'_>) -> Verdict {
        self.meter.on_data(event)
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        self.streams_closed.fetch_add(1, Ordering::Relaxed);
        self.meter.on_stream_close(end)?;
        self.counters.on_stream_close(end)
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        self.refusals.add(r.scope, r.reason.code);
    }
}
