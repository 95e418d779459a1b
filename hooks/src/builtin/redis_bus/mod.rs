//! The Redis event bus (docs/EVENTS.md): every event (or those named)
//! appended to a Redis stream (`XADD <stream> MAXLEN ~ <n> * event <name>
//! id <id> body <json>`), for consumer groups that must not miss one,
//! and/or published on a channel per event name (`PUBLISH
//! <prefix><name> <json>`), for live listeners. The body is the webhook's
//! body and the id its `X-Reitunnel-Event-Id`: one consumer can read
//! both, and drop a redelivered event by its id.
//!
//! Like the webhook, `emit` only filters and enqueues (`outbox.rs`: a full
//! queue drops the event and counts it, and stream events may fill only
//! half of it); one background task delivers in order over one connection
//! that `redis`' `ConnectionManager` opens again when it breaks.
//! While Redis cannot be reached the task holds the event at the head and
//! tries again with growing delays (never giving it up), so events queued
//! meanwhile arrive, in order, once Redis returns; only what overflows the
//! queue is lost, and counted. An event Redis answers with an error
//! (`WRONGTYPE`, `NOAUTH`) is tried `retries` more times and given up.
//! Delivery is at least once: an event whose answer was lost with the
//! connection is sent again.
//!
//! The URL may carry a password (`redis://:secret@host:6379/0`): errors,
//! logs, [`RedisBus::url`] and every `Debug` show `scheme://host:port`.
//! `rediss://` checks the server's certificate against the system's CA
//! certificates.
//!
//! Metrics, labelled `target` (`redis://host:port`):
//! `reitunnel_redis_published_total`, `reitunnel_redis_failed_total`
//! (events given up), `reitunnel_redis_dropped_total{lane}` (a full queue)
//! and the gauge `reitunnel_redis_healthy` (0 while Redis is unreachable).

mod delivery;
mod target;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::outbox::{self, DropMetric, Ledger, Outbox, Task};
use crate::events::{Event, EventSink, Lane};
pub use target::BadRedisUrl;
use target::Target;

/// Where and how a [`RedisBus`] publishes. Its `Debug` shows the URL as
/// `scheme://host:port` only.
#[derive(Clone)]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…`.
    pub url: String,
    /// The stream events are appended to; `None`: no stream.
    pub stream: Option<String>,
    /// The stream is trimmed to about this many entries (`MAXLEN ~`);
    /// 0: never trimmed.
    pub maxlen: u64,
    /// Each event is also published on `<prefix><event name>`; `None`: not
    /// published.
    pub channel_prefix: Option<String>,
    /// Event names to send (`"client.connected"`, …); empty = all.
    pub events: Vec<String>,
    /// Limit on connecting and on each answer.
    pub timeout: Duration,
    /// Attempts after the first before an event Redis answers with an
    /// error is given up (an unreachable Redis is waited for instead).
    pub retries: u32,
    /// Events that may wait for delivery before new ones are dropped (at
    /// least 2); events about visitor streams may fill half of it.
    pub queue: usize,
}

impl fmt::Debug for RedisBusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBusConfig")
            .field("url", &super::redact_url(&self.url))
            .field("stream", &self.stream)
            .field("maxlen", &self.maxlen)
            .field("channel_prefix", &self.channel_prefix)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("queue", &self.queue)
            .finish()
    }
}

/// A Redis bus's delivery record, for the admin status and at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisHealth {
    /// Events Redis took (every configured XADD and PUBLISH answered).
    pub published: u64,
    /// Events given up (Redis kept answering them with an error).
    pub failed: u64,
    /// Attempts that failed, retries included.
    pub failed_attempts: u64,
    /// Events dropped because the queue (or their lane's share) was full.
    pub dropped: u64,
    /// Of `dropped`, the events about visitor streams ([`Lane::Stream`]).
    pub dropped_streams: u64,
    /// Events queued and not yet published or given up.
    pub pending: u64,
    /// The most recent failed attempt's error (kept after a later success).
    pub last_error: Option<String>,
    /// False from a failure to reach Redis until the next publish succeeds.
    pub healthy: bool,
}

/// What the delivery task records, read by [`RedisBus::health`].
#[derive(Debug)]
struct Stats {
    ledger: Arc<Ledger>,
    published: AtomicU64,
    failed: AtomicU64,
    failed_attempts: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// An [`EventSink`] appending events to a Redis stream and/or publishing
/// them on channels. Use it behind an [`EventHook`](super::EventHook), as
/// the webhook is.
///
/// # Example
///
/// `no_run`: it needs a Redis server at the URL.
///
/// ```no_run
/// use std::time::Duration;
/// use reitunnel_hooks::builtin::{EventHook, RedisBus, RedisBusConfig};
/// use reitunnel_hooks::events::EventBus;
/// use reitunnel_hooks::HookChain;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBus::new(RedisBusConfig {
///     url: "redis://127.0.0.1:6379".into(),
///     stream: Some("reitunnel:events".into()),
///     maxlen: 100_000,
///     channel_prefix: Some("reitunnel.".into()),
///     events: Vec::new(),
///     timeout: Duration::from_secs(5),
///     retries: 3,
///     queue: 4096,
/// })?;
/// let bus = EventBus::new().for_server("edge-1").with(redis.clone());
/// let chain = HookChain::builder()
///     .hook(EventHook::new("redis", bus, false))
///     .build();
/// // … serve; then, on shutdown:
/// let all_sent = redis.drain(Duration::from_secs(5)).await;
/// println!("published all: {all_sent}, {:?}", redis.health());
/// # Ok(())
/// # }
/// ```
pub struct RedisBus {
    /// `scheme://host:port`.
    shown: String,
    outbox: Outbox,
    stats: Arc<Stats>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("url", &self.shown)
            .field("events", &self.outbox.events())
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Checks the config and spawns the delivery task on the current tokio
    /// runtime: **call it inside a tokio runtime** (see
    /// [`RedisBus::new_on_thread`]). It does not wait for Redis: events
    /// queue until it answers. The task ends when the bus is dropped.
    pub fn new(config: RedisBusConfig) -> io::Result<Arc<Self>> {
        let target = Target::parse(&config)?;
        let what = format!("redis {}", target.shown);
        Self::start(config, target, |task| outbox::spawn_here(&what, task))
    }

    /// Like [`RedisBus::new`], but delivers from a thread of its own
    /// running a single-threaded runtime, for callers outside any runtime.
    pub fn new_on_thread(config: RedisBusConfig) -> io::Result<Arc<Self>> {
        let target = Target::parse(&config)?;
        Self::start(config, target, |task| {
            outbox::spawn_on_thread("redis-bus", task)
        })
    }

    fn start<S>(config: RedisBusConfig, target: Target, spawn: S) -> io::Result<Arc<Self>>
    where
        S: FnOnce(Task) -> io::Result<()>,
    {
        let dropped = DropMetric {
            name: "reitunnel_redis_dropped_total",
            label: "target",
            value: target.shown.clone(),
        };
        let (outbox, rx) = Outbox::new(config.queue, config.events.clone(), dropped);
        let stats = Arc::new(Stats {
            ledger: outbox.ledger().clone(),
            published: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
        });
        let shown = target.shown.clone();
        let delivery = delivery::Delivery::new(target, &config, stats.clone());
        spawn(Box::pin(delivery.run(rx)))?;
        Ok(Arc::new(RedisBus {
            shown,
            outbox,
            stats,
        }))
    }

    /// The server as it may be shown: `scheme://host:port`.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Waits until every event queued so far was published or given up,
    /// or `limit` passed; returns whether all settled. The server calls it
    /// after stopping, so `server.stopped` is not lost.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.stats.ledger.drain(limit).await
    }

    /// Delivery counts, the last error and whether Redis answers.
    pub fn health(&self) -> RedisHealth {
        let s = &self.stats;
        RedisHealth {
            published: s.published.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
            dropped: s.ledger.lanes.dropped_total(),
            dropped_streams: s.ledger.lanes.dropped(Lane::Stream),
            pending: s.ledger.pending(),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            healthy: s.healthy.load(Ordering::Relaxed),
        }
    }
}

impl EventSink for RedisBus {
    fn emit(&self, event: &Event) {
        self.outbox.offer(event);
    }
}
