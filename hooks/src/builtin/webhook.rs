//! Webhooks (docs/EVENTS.md): every event POSTed as one JSON object to an
//! endpoint, signed so receivers can check it came from us and reject
//! replays. `emit` only filters and enqueues (a full queue drops the event
//! and counts it); a background task delivers in order, one request at a
//! time, with a per-attempt timeout and retries with exponential backoff
//! and jitter. After [`UNHEALTHY_AFTER`] deliveries in a row fail the
//! endpoint is reported unhealthy and backed off harder until one succeeds.
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
//! Only `http://` endpoints for now.
//!
//! Its health goes to the `metrics` facade, labelled by the endpoint's
//! `host:port` (not its path, which may carry a secret):
//! `reitunnel_webhook_delivered_total`, `reitunnel_webhook_failed_total`
//! (events given up after every retry), `reitunnel_webhook_dropped_total`
//! (a full queue) and the gauge `reitunnel_webhook_healthy` (1 or 0).

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::Secret;
use crate::events::{Event, EventSink};

/// Deliveries failed in a row after which the endpoint counts as unhealthy.
pub const UNHEALTHY_AFTER: u32 = 5;
/// First retry delay; doubles each retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Retry delays stop doubling here (before the unhealthy factor).
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// While unhealthy, delays are this many times longer, and each delivery
/// starts with one.
const UNHEALTHY_FACTOR: u32 = 4;

/// Where and how a [`Webhook`] delivers.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The endpoint, `http://host[:port][/path]`.
    pub url: String,
    /// The HMAC key for `X-Reitunnel-Signature`.
    pub secret: Secret,
    /// Event names to send (`"quota.exceeded"`, …); empty = all.
    pub events: Vec<String>,
    /// Limit on each attempt (connect, send, response head).
    pub timeout: Duration,
    /// Attempts after the first before an event is given up.
    pub retries: u32,
    /// Events that may wait for delivery before new ones are dropped.
    pub queue: usize,
}

/// A webhook's delivery record, for the admin status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    /// Events the endpoint accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed (error, timeout or non-2xx), retries included.
    pub failed_attempts: u64,
    /// Events dropped because the queue was full (or the sender had stopped).
    pub dropped: u64,
    /// Events queued and not yet delivered or given up.
    pub pending: u64,
    /// Events given up in a row (every retry failed); a delivery resets it.
    pub consecutive_failures: u32,
    /// The most recent failed attempt's error (kept after a later success).
    pub last_error: Option<String>,
    /// False after [`UNHEALTHY_AFTER`] consecutive failed deliveries.
    pub healthy: bool,
}

#[derive(Debug, Default)]
struct Stats {
    /// Events queued for delivery.
    queued: AtomicU64,
    /// Events delivered or given up; `queued - settled` are still pending.
    settled: AtomicU64,
    /// Woken at each settled event, for [`Webhook::drain`].
    settle: tokio::sync::Notify,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < UNHEALTHY_AFTER
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
    url: String,
    events: Vec<String>,
    tx: mpsc::Sender<Queued>,
    stats: Arc<Stats>,
    /// `host:port`, the label of its metrics.
    endpoint: String,
    /// Random per webhook, so ids of two server runs do not meet.
    id_prefix: u64,
    next_id: AtomicU64,
}

/// One event waiting for delivery.
struct Queued {
    /// `X-Reitunnel-Event-Id`.
    id: String,
    /// `X-Reitunnel-Event`.
    event: &'static str,
    body: Bytes,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The parsed endpoint.
struct Target {
    url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Webhook {
    /// Checks the URL and spawns the delivery task on the current tokio
    /// runtime: **call it inside a tokio runtime** (it fails otherwise; see
    /// [`Webhook::new_on_thread`]). The task ends when the webhook is dropped.
    pub fn new(config: WebhookConfig) -> io::Result<Arc<Self>> {
        let target = parse_url(&config.url)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other(format!(
                "webhook {}: must be created inside a tokio runtime",
                config.url
            ))
        })?;
        Self::start(config, target, |task| {
            handle.spawn(task);
            Ok(())
        })
    }

    /// Like [`Webhook::new`], but delivers from a thread of its own running
    /// a single-threaded runtime, for callers outside any runtime.
    pub fn new_on_thread(config: WebhookConfig) -> io::Result<Arc<Self>> {
        let target = parse_url(&config.url)?;
        Self::start(config, target, |task| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name("webhook".into())
                .spawn(move || runtime.block_on(task))?;
            Ok(())
        })
    }

    fn start<S>(config: WebhookConfig, target: Target, spawn: S) -> io::Result<Arc<Self>>
    where
        S: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> io::Result<()>,
    {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(Stats::default());
        let delivery = Delivery {
            target,
            key: hmac::Key::new(hmac::HMAC_SHA256, config.secret.expose().as_bytes()),
            timeout: config.timeout,
            retries: config.retries,
            stats: stats.clone(),
        };
        let endpoint = delivery.target.authority.clone();
        spawn(Box::pin(delivery.run(rx)))?;
        Ok(Arc::new(Webhook {
            endpoint,
            url: config.url,
            events: config.events,
            tx,
            stats,
            id_prefix: fastrand::u64(..),
            next_id: AtomicU64::new(1),
        }))
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits until every event queued so far was delivered or given up, or
    /// `limit` passed; returns whether all settled. The server calls it
    /// after stopping, so the last events (`tunnel.closed`,
    /// `server.stopped`) are not lost, and shutdown stays bounded.
    pub async fn drain(&self, limit: Duration) -> bool {
        let s = &self.stats;
        let settled = async {
            loop {
                let woken = s.settle.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if s.settled.load(Ordering::Relaxed) >= s.queued.load(Ordering::Relaxed) {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(limit, settled).await.is_ok()
    }

    /// Delivery counts, the last error and whether the endpoint is healthy.
    pub fn health(&self) -> WebhookHealth {
        let s = &self.stats;
        WebhookHealth {
            delivered: s.delivered.load(Ordering::Relaxed),
            failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            pending: s
                .queued
                .load(Ordering::Relaxed)
                .saturating_sub(s.settled.load(Ordering::Relaxed)),
            consecutive_failures: s.consecutive_failures.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            healthy: s.healthy(),
        }
    }
}

impl EventSink for Webhook {
    fn emit(&self, event: &Event) {
        if !self.events.is_empty() && !self.events.iter().any(|e| e == event.event) {
            return;
        }
        // Counted before sending, so `settled` can never overtake `queued`.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:016x}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let queued = Queued {
            id,
            event: event.event,
            body: Bytes::from(event.to_json()),
        };
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("reitunnel_webhook_dropped_total", "endpoint" => self.endpoint.clone())
                    .increment(1);
            }
        }
    }
}

fn parse_url(url: &str) -> io::Result<Target> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("webhook URL '{url}': {why}"),
        )
    };
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(format!(
                "scheme '{other}' is not supported (only http:// for now)"
            )))
        }
        None => return Err(bad("not an absolute http:// URL".to_owned())),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host".to_owned()))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported".to_owned()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host".to_owned()));
    }
    // `path()` is "/" when the URL has none.
    let mut path = uri.path().to_owned();
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    Ok(Target {
        url: url.to_owned(),
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        path,
    })
}

/// The background task's state.
struct Delivery {
    target: Target,
    key: hmac::Key,
    timeout: Duration,
    retries: u32,
    stats: Arc<Stats>,
}

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        // Looked up per event, not once: the program may install its
        // metrics recorder after this task started.
        let endpoint = &self.target.authority;
        while let Some(queued) = rx.recv().await {
            let outcome = match self.deliver(&queued).await {
                true => "reitunnel_webhook_delivered_total",
                false => "reitunnel_webhook_failed_total",
            };
            metrics::counter!(outcome, "endpoint" => endpoint.clone()).increment(1);
            let healthy = if self.stats.healthy() { 1.0 } else { 0.0 };
            metrics::gauge!("reitunnel_webhook_healthy", "endpoint" => endpoint.clone())
                .set(healthy);
            self.stats.settled.fetch_add(1, Ordering::Relaxed);
            self.stats.settle.notify_waiters();
        }
    }

    /// Tries until the endpoint accepts the event (`true`) or the retries
    /// run out (`false`).
    async fn deliver(&self, queued: &Queued) -> bool {
        let stats = &self.stats;
        if !stats.healthy() {
            tokio::time::sleep(backoff(0, false) * UNHEALTHY_FACTOR).await;
        }
        let mut retry = 0;
        loop {
            let outcome = match tokio::time::timeout(self.timeout, self.post(queued)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timed out after {:?}", self.timeout)),
            };
            match outcome {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    stats.consecutive_failures.store(0, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    let e = format!("POST {}: {e}", self.target.url);
                    tracing::debug!(error = %e, retry, "webhook attempt failed");
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            }
            if retry >= self.retries {
                let failures = stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(url = %self.target.url, failures, "webhook event given up after {} attempts", retry + 1);
                if failures == UNHEALTHY_AFTER {
                    tracing::error!(url = %self.target.url, "webhook endpoint unhealthy");
                }
                return false;
            }
            tokio::time::sleep(backoff(retry, !stats.healthy())).await;
            retry += 1;
        }
    }

    /// One attempt: a fresh connection, one signed POST, a 2xx answer.
    async fn post(&self, queued: &Queued) -> Result<(), String> {
        let body = queued.body.clone();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&body);
        let signature = format!("sha256={}", hex(mac.sign().as_ref()));

        let t = &self.target;
        let stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = Request::post(t.path.as_str())
            .header(HOST, t.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Reitunnel-Timestamp", timestamp)
            .header("X-Reitunnel-Signature", signature)
            .header("X-Reitunnel-Event", queued.event)
            .header("X-Reitunnel-Event-Id", queued.id.as_str())
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status()))
        }
    }
}

/// Ends the connection task when an attempt ends (or is timed out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The delay before retry number `retry` (0-based): 100 ms doubling, capped
/// at 10 s, times [`UNHEALTHY_FACTOR`] while unhealthy, plus up to half again
/// as jitter.
fn backoff(retry: u32, unhealthy: bool) -> Duration {
    let mut delay = BACKOFF_BASE
        .saturating_mul(1 << retry.min(16))
        .min(BACKOFF_MAX);
    if unhealthy {
        delay *= UNHEALTHY_FACTOR;
    }
    let half = u64::try_from(delay.as_millis() / 2).unwrap_or(u64::MAX);
    delay + Duration::from_millis(fastrand::u64(0..=half))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}
