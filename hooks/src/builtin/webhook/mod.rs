//! Webhooks (docs/EVENTS.md): every event POSTed as one JSON object to an
//! `http://` or `https://` endpoint, signed so receivers can check it came
//! from us and reject replays. `emit` only filters and enqueues (a full
//! queue drops the event and counts it; events about visitor streams may
//! fill only half of it, see `lanes.rs`, so a flood of refused visitors
//! never crowds out a client's `client.connected`); a background task delivers in
//! order, one request at a time over a connection kept open between events,
//! with a per-attempt timeout and retries with exponential backoff and
//! jitter (`delivery.rs`). After [`UNHEALTHY_AFTER`] deliveries in a row
//! fail the endpoint is reported unhealthy (a `webhook.unhealthy` event to
//! the other sinks, see [`Webhook::report_health_to`]) and backed off
//! harder until one succeeds (`webhook.recovered`).
//!
//! Headers of each request:
//! - `Content-Type: application/json`
//! - `X-Reitunnel-Timestamp: <unix seconds>`
//! - `X-Reitunnel-Signature: sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! - `X-Reitunnel-Event: <the event's name>`, to route without parsing
//! - `X-Reitunnel-Event-Id: <16 hex digits>-<n>`: the same on every attempt
//!   at one event and unique to it, so a receiver can drop a retried
//!   delivery it already has
//!
//! `https://` checks the receiver's certificate against the system's CA
//! certificates, or against those of [`WebhookConfig::tls`].
//!
//! The URL's path and query (often its secret part) are only ever sent:
//! errors, logs, [`WebhookHealth`], `webhook.unhealthy`, [`Webhook::url`]
//! and every `Debug` show `scheme://host:port`.
//!
//! Its health goes to the `metrics` facade, labelled by the endpoint's
//! `host:port`: `reitunnel_webhook_delivered_total`,
//! `reitunnel_webhook_failed_total` (events given up after every retry),
//! `reitunnel_webhook_dropped_total{lane}` (a full queue; `lane` is
//! `main` or `stream`) and the gauge `reitunnel_webhook_healthy` (1 or 0).

mod delivery;
pub(crate) mod endpoint;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::body_shape::BodyShape;
use super::outbox::{self, DropMetric, Ledger, Outbox, Queued, Task};
use super::Secret;
use crate::events::{Event, EventBus, EventSink, Lane};
use delivery::Delivery;
use endpoint::{redact, Poster, Redacted, Target};

/// Deliveries failed in a row after which the endpoint counts as unhealthy.
pub const UNHEALTHY_AFTER: u32 = 5;

/// Where and how a [`Webhook`] delivers. Its `Debug` shows the URL as
/// `scheme://host:port` only.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The endpoint, `http://host[:port][/path]`. Only ever sent: the path
    /// may be the secret part.
    pub url: String,
    /// The HMAC key for `X-Reitunnel-Signature`.
    pub secret: Secret,
    /// Event names to send (`"quota.exceeded"`, …); empty = all.
    pub events: Vec<String>,
    /// Limit on each attempt (connect, send, response head).
    pub timeout: Duration,
    /// Attempts after the first before an event is given up.
    pub retries: u32,
    /// Events that may wait for delivery before new ones are dropped (at
    /// least 2); events about visitor streams may fill half of it.
    pub queue: usize,
    /// For `https://`: the TLS client settings (which CAs to trust).
    /// `None`: the system's CA certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &Redacted(&self.url))
            .field("secret", &self.secret)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("queue", &self.queue)
            .field("tls", &self.tls.as_ref().map(|_| "custom CAs"))
            .finish()
    }
}

/// A webhook's delivery record, for the admin status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    /// Events the endpoint accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed (error, timeout or non-2xx), retries included.
    pub failed_attempts: u64,
    /// Events dropped because the queue (or their lane's share of it) was
    /// full, or the sender had stopped.
    pub dropped: u64,
    /// Of `dropped`, the events about visitor streams ([`Lane::Stream`]).
    pub dropped_streams: u64,
    /// Events queued and not yet delivered or given up.
    pub pending: u64,
    /// Events given up in a row (every retry failed); a delivery resets it.
    pub consecutive_failures: u32,
    /// The most recent failed attempt's error (kept after a later success),
    /// naming the endpoint as `scheme://host:port`.
    pub last_error: Option<String>,
    /// False after [`UNHEALTHY_AFTER`] consecutive failed deliveries.
    pub healthy: bool,
}

#[derive(Debug)]
struct Stats {
    /// The queue: pending events and drops per lane.
    ledger: Arc<Ledger>,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Where `webhook.unhealthy` and `webhook.recovered` go.
    others: Mutex<Option<EventBus>>,
}

impl Stats {
    fn new(ledger: Arc<Ledger>) -> Stats {
        Stats {
            ledger,
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            others: Mutex::new(None),
        }
    }

    fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < UNHEALTHY_AFTER
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a health event to the other sinks, if they were given.
    fn tell_others(&self, event: &Event) {
        let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bus) = &*others {
            bus.emit(event);
        }
    }
}

/// An [`EventSink`] POSTing events to an HTTP endpoint. Use it behind an
/// [`EventHook`](super::EventHook):
/// `EventHook::new("webhook", EventBus::new().with(webhook), false)`.
///
/// # Example
///
/// `no_run`: it needs an HTTP endpoint listening at the URL.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use reitunnel_hooks::builtin::{EventHook, Secret, Webhook, WebhookConfig};
/// use reitunnel_hooks::events::EventBus;
/// use reitunnel_hooks::{HookChain, ServerInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let webhook = Webhook::new(WebhookConfig {
///     url: "http://127.0.0.1:9000/reitunnel".into(),
///     secret: Secret::new("hmac-key"),
///     events: vec!["client.connected".into(), "quota.exceeded".into()],
///     timeout: Duration::from_secs(5),
///     retries: 3,
///     queue: 1024,
///     tls: None,
/// })?;
/// let bus = EventBus::new().for_server("edge-1").with(webhook.clone());
/// let chain = HookChain::builder()
///     .hook(EventHook::new("webhook", bus, false))
///     .build();
///
/// let server = ServerInfo { name: "edge-1".into(), listen: "0.0.0.0:7000".parse()? };
/// chain.server_start(&server)?;
/// // … serve; then, on shutdown:
/// chain.server_stop(&server)?;
/// let all_sent = webhook.drain(Duration::from_secs(5)).await;
/// println!("delivered all: {all_sent}, {:?}", webhook.health());
/// # Ok(())
/// # }
/// ```
pub struct Webhook {
    /// `scheme://host:port`: the URL as it may be shown.
    shown: String,
    /// Filters, stamps (`X-Reitunnel-Event-Id`) and queues events.
    outbox: Outbox,
    stats: Arc<Stats>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.shown)
            .field("events", &self.outbox.events())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Checks the URL and spawns the delivery task on the current tokio
    /// runtime: **call it inside a tokio runtime** (it fails otherwise; see
    /// [`Webhook::new_on_thread`]). The task ends when the webhook is dropped.
    pub fn new(config: WebhookConfig) -> io::Result<Arc<Self>> {
        Self::shaped(config, BodyShape::Event)
    }

    /// Like [`Webhook::new`], but delivers from a thread of its own running
    /// a single-threaded runtime, for callers outside any runtime.
    pub fn new_on_thread(config: WebhookConfig) -> io::Result<Arc<Self>> {
        Self::shaped_on_thread(config, BodyShape::Event)
    }

    /// Like [`Webhook::new`], each body written as `shape` says (a Slack
    /// or Teams message). Requests are signed all the same.
    pub fn shaped(config: WebhookConfig, shape: BodyShape) -> io::Result<Arc<Self>> {
        let target = Target::parse("webhook", &config.url, config.tls.clone())?;
        let what = format!("webhook {}", redact(&config.url));
        Self::start(config, target, shape, |task| {
            outbox::spawn_here(&what, task)
        })
    }

    /// [`Webhook::shaped`] from a thread of its own, like [`Webhook::new_on_thread`].
    pub fn shaped_on_thread(config: WebhookConfig, shape: BodyShape) -> io::Result<Arc<Self>> {
        let target = Target::parse("webhook", &config.url, config.tls.clone())?;
        Self::start(config, target, shape, |task| {
            outbox::spawn_on_thread("webhook", task)
        })
    }

    fn start<S>(
        config: WebhookConfig,
        target: Target,
        shape: BodyShape,
        spawn: S,
    ) -> io::Result<Arc<Self>>
    where
        S: FnOnce(Task) -> io::Result<()>,
    {
        let dropped = DropMetric {
            name: "reitunnel_webhook_dropped_total",
            label: "endpoint",
            value: target.authority.clone(),
        };
        let (outbox, rx) = Outbox::new(config.queue, config.events, dropped);
        let outbox = outbox.shaped(shape);
        let stats = Arc::new(Stats::new(outbox.ledger().clone()));
        let delivery = Delivery {
            poster: Poster::new(target, config.secret.expose().as_bytes()),
            timeout: config.timeout,
            retries: config.retries,
            stats: stats.clone(),
        };
        let shown = delivery.poster.target.shown().to_owned();
        spawn(Box::pin(delivery.run(rx)))?;
        Ok(Arc::new(Webhook {
            shown,
            outbox,
            stats,
        }))
    }

    /// The endpoint as it may be shown (the admin API, logs):
    /// `scheme://host:port`, without the path, which may be a secret.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Sends `webhook.unhealthy` and `webhook.recovered` (with the
    /// endpoint's `host:port`) to `others`: the sinks besides this one, so
    /// an audit log records that events stopped reaching the receiver.
    /// Replaces the bus given before (a reload's new set of sinks).
    pub fn report_health_to(&self, others: EventBus) {
        *self.stats.others.lock().unwrap_or_else(|e| e.into_inner()) = Some(others);
    }

    /// Waits until every event queued so far was delivered or given up, or
    /// `limit` passed; returns whether all settled. The server calls it
    /// after stopping, so the last events (`tunnel.closed`,
    /// `server.stopped`) are not lost, and shutdown stays bounded.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.stats.ledger.drain(limit).await
    }

    /// Delivery counts, the last error and whether the endpoint is healthy.
    pub fn health(&self) -> WebhookHealth {
        let s = &self.stats;
        WebhookHealth {
            delivered: s.delivered.load(Ordering::Relaxed),
            failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
            dropped: s.ledger.lanes.dropped_total(),
            dropped_streams: s.ledger.lanes.dropped(Lane::Stream),
            pending: s.ledger.pending(),
            consecutive_failures: s.consecutive_failures.load(Ordering::Relaxed),
            last_error: s.last_error(),
            healthy: s.healthy(),
        }
    }
}

impl EventSink for Webhook {
    fn emit(&self, event: &Event) {
        self.outbox.offer(event);
    }
}
