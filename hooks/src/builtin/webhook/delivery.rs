//! The delivery task: events in order, one at a time, each attempt bounded
//! by a timeout, retries with exponential backoff and jitter. After
//! [`UNHEALTHY_AFTER`] events in a row are given up the endpoint is
//! unhealthy: it is tried at a slower pace until one delivery succeeds.
//! Both turns are logged, counted in metrics and sent as
//! `webhook.unhealthy` / `webhook.recovered` to the other sinks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::endpoint::{Failure, Poster};
use super::{Queued, Stats, UNHEALTHY_AFTER};
use crate::builtin::outbox::backoff as grown;
use crate::events::Event;

/// Retry delays stop doubling here (before the unhealthy factor).
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// While unhealthy, delays are this many times longer, and each delivery
/// starts with one.
const UNHEALTHY_FACTOR: u32 = 4;

/// The background task's state.
pub(super) struct Delivery {
    pub(super) poster: Poster,
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) stats: Arc<Stats>,
}

impl Delivery {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        // Looked up per event, not once: the program may install its
        // metrics recorder after this task started.
        let endpoint = self.poster.target.authority.clone();
        while let Some(queued) = rx.recv().await {
            let outcome = match self.deliver(&queued).await {
                true => "reitunnel_webhook_delivered_total",
                false => "reitunnel_webhook_failed_total",
            };
            metrics::counter!(outcome, "endpoint" => endpoint.clone()).increment(1);
            let healthy = if self.stats.healthy() { 1.0 } else { 0.0 };
            metrics::gauge!("reitunnel_webhook_healthy", "endpoint" => endpoint.clone())
                .set(healthy);
            self.stats.ledger.settled_one();
        }
    }

    /// Tries until the endpoint accepts the event (`true`) or the retries
    /// run out (`false`).
    async fn deliver(&mut self, queued: &Queued) -> bool {
        if !self.stats.healthy() {
            tokio::time::sleep(backoff(0, false) * UNHEALTHY_FACTOR).await;
        }
        let mut retry = 0;
        loop {
            let outcome = match tokio::time::timeout(self.timeout, self.poster.post(queued)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::TimedOut(self.timeout)),
            };
            let stats = &self.stats;
            match outcome {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    let before = stats.consecutive_failures.swap(0, Ordering::Relaxed);
                    if before >= UNHEALTHY_AFTER {
                        self.turned(false, before);
                    }
                    return true;
                }
                Err(e) => {
                    // The endpoint as shown: its path may be a secret.
                    let e = format!("POST {}: {e}", self.poster.target.shown());
                    tracing::debug!(error = %e, retry, "webhook attempt failed");
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            }
            if retry >= self.retries {
                let failures = stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    url = self.poster.target.shown(),
                    failures,
                    "webhook event given up after {} attempts",
                    retry + 1
                );
                if failures == UNHEALTHY_AFTER {
                    self.turned(true, failures);
                }
                return false;
            }
            tokio::time::sleep(backoff(retry, !stats.healthy())).await;
            retry += 1;
        }
    }

    /// The endpoint turned unhealthy (after `failures` events given up in a
    /// row) or recovered: a log line, and an event to the other sinks.
    fn turned(&self, unhealthy: bool, failures: u32) {
        let endpoint = self.poster.target.authority.as_str();
        let event = if unhealthy {
            let last_error = self.stats.last_error().unwrap_or_default();
            tracing::error!(%endpoint, failures, %last_error, "webhook endpoint unhealthy");
            Event::now("webhook.unhealthy")
                .with("endpoint", endpoint)
                .with("consecutive_failures", failures)
                .with("last_error", last_error)
        } else {
            tracing::warn!(%endpoint, after_failures = failures, "webhook endpoint recovered");
            Event::now("webhook.recovered")
                .with("endpoint", endpoint)
                .with("after_failures", failures)
        };
        self.stats.tell_others(&event);
    }
}

/// The delay before retry number `retry` (0-based): 100 ms doubling, capped
/// at 10 s, times [`UNHEALTHY_FACTOR`] while unhealthy, plus up to half again
/// as jitter.
fn backoff(retry: u32, unhealthy: bool) -> Duration {
    grown(
        retry,
        BACKOFF_MAX,
        if unhealthy { UNHEALTHY_FACTOR } else { 1 },
    )
}
