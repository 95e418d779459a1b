//! What every sink that delivers events from a background task shares (the
//! webhook, the Redis bus): `emit` on the data path only filters, stamps an
//! event id, serializes the body and enqueues; the bounded queue is shared
//! out by [`Lane`] (`lanes.rs`) and every drop is counted, in the sink's
//! record and in metrics; the delivery task reports each event settled, so
//! a sink can be drained at shutdown. Retry delays grow the same way in
//! both ([`backoff`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::body_shape::BodyShape;
use super::lanes::{Lanes, Ticket};
use crate::events::{Event, Lane};

/// A delivery task, boxed so either sink can hand it to [`spawn_here`] or
/// [`spawn_on_thread`].
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One event waiting for delivery.
pub(crate) struct Queued {
    /// `<16 hex digits>-<n>`: the same on every attempt at one event and
    /// unique to it, so a receiver can drop a retried delivery it already has.
    pub(crate) id: String,
    /// The event's name.
    pub(crate) event: &'static str,
    /// The request body: the event as one JSON object ([`Event::to_json`]),
    /// or as its [`BodyShape`] writes it.
    pub(crate) body: Bytes,
    /// Its place in the queue, given back once it is delivered or given up.
    _place: Ticket,
}

/// The queue's bookkeeping, shared by the sink and its delivery task.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Events queued for delivery.
    queued: AtomicU64,
    /// Events delivered or given up; `queued - settled` are still pending.
    settled: AtomicU64,
    /// Woken at each settled event, for [`Ledger::drain`].
    settle: tokio::sync::Notify,
    /// The queue's share per lane, and the drops.
    pub(crate) lanes: Lanes,
}

impl Ledger {
    /// The delivery task is done with one event (delivered or given up).
    pub(crate) fn settled_one(&self) {
        self.settled.fetch_add(1, Ordering::Relaxed);
        self.settle.notify_waiters();
    }

    /// Events queued and not yet delivered or given up.
    pub(crate) fn pending(&self) -> u64 {
        self.queued
            .load(Ordering::Relaxed)
            .saturating_sub(self.settled.load(Ordering::Relaxed))
    }

    /// Waits until every event queued so far settled, or `limit` passed;
    /// returns whether all settled. Sinks call it at shutdown, so the last
    /// events (`server.stopped`) are not lost while exit stays bounded.
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
        let settled = async {
            loop {
                let woken = self.settle.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if self.pending() == 0 {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(limit, settled).await.is_ok()
    }
}

/// How a sink names its drops in metrics: `NAME{LABEL="value",lane}`.
pub(crate) struct DropMetric {
    /// `reitunnel_webhook_dropped_total`, …
    pub(crate) name: &'static str,
    /// `endpoint`, `target`, …
    pub(crate) label: &'static str,
    /// The sink as it may be shown (never a secret).
    pub(crate) value: String,
}

/// The sending half: filters, stamps and enqueues events without blocking.
pub(crate) struct Outbox {
    /// Event names to send; empty = all.
    events: Vec<String>,
    tx: mpsc::Sender<Queued>,
    ledger: Arc<Ledger>,
    dropped: DropMetric,
    /// How each event's body is written.
    shape: BodyShape,
    /// Random per sink, so ids of two server runs do not meet.
    id_prefix: u64,
    next_id: AtomicU64,
}

impl Outbox {
    /// A queue of `queue` events (at least 2; stream events may fill half)
    /// taking the events named in `events` (all if empty), and the
    /// receiving end for the delivery task.
    pub(crate) fn new(
        queue: usize,
        events: Vec<String>,
        dropped: DropMetric,
    ) -> (Outbox, mpsc::Receiver<Queued>) {
        let lanes = Lanes::new(queue);
        let (tx, rx) = mpsc::channel(lanes.capacity());
        let ledger = Arc::new(Ledger {
            queued: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            settle: tokio::sync::Notify::new(),
            lanes,
        });
        let outbox = Outbox {
            events,
            tx,
            ledger,
            dropped,
            shape: BodyShape::Event,
            id_prefix: fastrand::u64(..),
            next_id: AtomicU64::new(1),
        };
        (outbox, rx)
    }

    /// Writes each event's body as `shape` does.
    pub(crate) fn shaped(mut self, shape: BodyShape) -> Outbox {
        self.shape = shape;
        self
    }

    /// The bookkeeping, shared with the delivery task.
    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The event names taken (empty = all).
    pub(crate) fn events(&self) -> &[String] {
        &self.events
    }

    /// Enqueues `event` if the filter takes it, or drops and counts it when
    /// its lane or the queue is full. Never waits: it runs on the data path.
    pub(crate) fn offer(&self, event: &Event) {
        if !self.events.is_empty() && !self.events.iter().any(|e| e == event.event) {
            return;
        }
        let lane = event.lane;
        let Some(place) = self.ledger.lanes.admit(lane) else {
            self.dropped_metric(lane);
            return;
        };
        // Counted before sending, so `settled` can never overtake `queued`.
        self.ledger.queued.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:016x}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let queued = Queued {
            id,
            event: event.event,
            body: Bytes::from(self.shape.render(event)),
            _place: place,
        };
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.ledger.queued.fetch_sub(1, Ordering::Relaxed);
                self.ledger.lanes.dropped_one(lane);
                self.dropped_metric(lane);
            }
        }
    }

    /// Counts an event of `lane` dropped in metrics (the ledger counts it
    /// in its lanes).
    fn dropped_metric(&self, lane: Lane) {
        let m = &self.dropped;
        metrics::counter!(m.name, m.label => m.value.clone(), "lane" => lane.as_str()).increment(1);
    }
}

/// Spawns `task` on the current tokio runtime; `what` names the sink in
/// the error when there is none.
pub(crate) fn spawn_here(what: &str, task: Task) -> io::Result<()> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| io::Error::other(format!("{what}: must be created inside a tokio runtime")))?;
    handle.spawn(task);
    Ok(())
}

/// Runs `task` on a thread of its own (named `name`) with a single-threaded
/// runtime, for sinks created outside any runtime (the server binary builds
/// its chain before starting one).
pub(crate) fn spawn_on_thread(name: &str, task: Task) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(task))?;
    Ok(())
}

/// First retry delay; doubles each retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The delay before retry number `retry` (0-based): 100 ms doubling,
/// capped at `max`, times `factor` (a sink may slow down while its
/// receiver is unhealthy), plus up to half again as jitter, so sinks of
/// many servers do not retry in step.
pub(crate) fn backoff(retry: u32, max: Duration, factor: u32) -> Duration {
    let delay = BACKOFF_BASE
        .saturating_mul(1 << retry.min(16))
        .min(max)
        .saturating_mul(factor.max(1));
    let half = u64::try_from(delay.as_millis() / 2).unwrap_or(u64::MAX);
    delay + Duration::from_millis(fastrand::u64(0..=half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(queue: usize, events: &[&str]) -> (Outbox, mpsc::Receiver<Queued>) {
        let dropped = DropMetric {
            name: "test_dropped_total",
            label: "target",
            value: "t".into(),
        };
        Outbox::new(
            queue,
            events.iter().map(|e| e.to_string()).collect(),
            dropped,
        )
    }

    #[test]
    fn filters_stamps_and_counts_what_does_not_fit() {
        let (outbox, mut rx) = outbox(2, &["client.connected"]);
        outbox.offer(&Event::now("tunnel.opened"));
        assert_eq!(outbox.ledger().pending(), 0, "filtered out");
        for _ in 0..3 {
            outbox.offer(&Event::now("client.connected"));
        }
        assert_eq!(outbox.ledger().pending(), 2);
        assert_eq!(outbox.ledger().lanes.dropped(Lane::Main), 1);
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert_eq!(first.event, "client.connected");
        assert_ne!(first.id, second.id, "each event its own id");
        assert_eq!(
            first.id.split_once('-').map(|(p, _)| p),
            second.id.split_once('-').map(|(p, _)| p),
            "one prefix per sink"
        );
        let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["event"], "client.connected");
    }

    #[tokio::test]
    async fn drain_waits_for_every_queued_event_to_settle() {
        let (outbox, mut rx) = outbox(4, &[]);
        outbox.offer(&Event::now("a"));
        outbox.offer(&Event::now("b"));
        let ledger = outbox.ledger().clone();
        assert!(!ledger.drain(Duration::ZERO).await, "two pending");
        let settler = tokio::spawn(async move {
            while let Some(_event) = rx.recv().await {
                ledger.settled_one();
            }
        });
        assert!(outbox.ledger().drain(Duration::from_secs(60)).await);
        drop(outbox);
        settler.await.unwrap();
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let max = Duration::from_secs(2);
        let first = backoff(0, max, 1);
        assert!(first >= BACKOFF_BASE && first <= BACKOFF_BASE * 3 / 2);
        let capped = backoff(30, max, 1);
        assert!(capped >= max && capped <= max * 3 / 2);
        assert!(backoff(30, max, 4) >= max * 4);
    }
}
