//! The delivery task: events in order, one pipeline (`XADD` and/or
//! `PUBLISH`) each, over a `ConnectionManager` that reconnects when the
//! connection breaks. An unreachable Redis holds the head event, retried
//! with growing delays, until Redis answers or the bus is dropped; an
//! error answer is retried `retries` times and the event given up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};
use tokio::sync::mpsc;

use super::target::Target;
use super::{RedisBusConfig, Stats};
use crate::builtin::outbox::{backoff, Queued};

/// Retry delays stop growing here: once Redis is back, queued events wait
/// at most about this long (plus jitter) to start flowing again.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The background task's state.
pub(super) struct Delivery {
    target: Target,
    stream: Option<String>,
    maxlen: u64,
    channel_prefix: Option<String>,
    timeout: Duration,
    retries: u32,
    stats: Arc<Stats>,
}

/// What one failed attempt means.
enum Failed {
    /// Redis could not be reached or the connection broke: wait for it.
    Unreachable,
    /// Redis answered with an error: retried a few times, then given up.
    Refused,
}

impl Delivery {
    pub(super) fn new(target: Target, config: &RedisBusConfig, stats: Arc<Stats>) -> Delivery {
        Delivery {
            target,
            stream: config.stream.clone(),
            maxlen: config.maxlen,
            channel_prefix: config.channel_prefix.clone(),
            timeout: config.timeout,
            retries: config.retries,
            stats,
        }
    }

    pub(super) async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        // Our own loop retries and backs off; the manager only needs to
        // try once per reconnect, bounded by the timeout.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        // Lazy: the server starts (and queues) while Redis is down.
        let mut conn = match ConnectionManager::new_lazy_with_config(
            self.target.client.clone(),
            config,
        ) {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::error!(target = %self.target.shown, error = %e, "redis bus cannot start");
                self.record_error(&e);
                None
            }
        };
        while let Some(queued) = rx.recv().await {
            let published = match &mut conn {
                Some(conn) => self.deliver(conn, &queued, &rx).await,
                None => false,
            };
            // Looked up per event: the program may install its metrics
            // recorder after this task started.
            let label = self.target.shown.clone();
            let (counter, stat) = match published {
                true => ("reitunnel_redis_published_total", &self.stats.published),
                false => ("reitunnel_redis_failed_total", &self.stats.failed),
            };
            stat.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(counter, "target" => label).increment(1);
            self.stats.ledger.settled_one();
        }
    }

    /// Tries until Redis takes the event (`true`), answers it with errors
    /// past the retries, or the bus was dropped while Redis is away (`false`).
    async fn deliver(
        &self,
        conn: &mut ConnectionManager,
        queued: &Queued,
        rx: &mpsc::Receiver<Queued>,
    ) -> bool {
        let mut refused = 0;
        let mut attempt = 0;
        loop {
            let failed = match self.pipeline(queued).exec_async(conn).await {
                Ok(()) => {
                    self.set_healthy(true);
                    return true;
                }
                Err(e) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    self.record_error(&e);
                    match kind(&e) {
                        Failed::Unreachable => {
                            self.set_healthy(false);
                            Failed::Unreachable
                        }
                        Failed::Refused => Failed::Refused,
                    }
                }
            };
            match failed {
                Failed::Refused => {
                    refused += 1;
                    if refused > self.retries {
                        tracing::warn!(target = %self.target.shown, event = queued.event,
                            "redis refused an event {refused} times; given up");
                        return false;
                    }
                }
                // Nobody will read the health of a bus that is gone.
                Failed::Unreachable if rx.is_closed() => return false,
                Failed::Unreachable => {}
            }
            tokio::time::sleep(backoff(attempt, BACKOFF_MAX, 1)).await;
            attempt += 1;
        }
    }

    /// The commands for one event, in one round trip.
    fn pipeline(&self, queued: &Queued) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if let Some(stream) = &self.stream {
            let xadd = pipe.cmd("XADD").arg(stream);
            if self.maxlen > 0 {
                xadd.arg("MAXLEN").arg("~").arg(self.maxlen);
            }
            xadd.arg("*")
                .arg("event")
                .arg(queued.event)
                .arg("id")
                .arg(&queued.id)
                .arg("body")
                .arg(&queued.body[..])
                .ignore();
        }
        if let Some(prefix) = &self.channel_prefix {
            pipe.cmd("PUBLISH")
                .arg(format!("{prefix}{}", queued.event))
                .arg(&queued.body[..])
                .ignore();
        }
        pipe
    }

    fn record_error(&self, e: &RedisError) {
        let text = format!("{}: {e}", self.target.shown);
        tracing::debug!(error = %text, "redis attempt failed");
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    /// Records (and logs, at each turn) whether Redis answers.
    fn set_healthy(&self, healthy: bool) {
        let before = self.stats.healthy.swap(healthy, Ordering::Relaxed);
        let target = &self.target.shown;
        if before && !healthy {
            let last_error = self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            tracing::error!(%target, %last_error, "redis unreachable; events wait in the queue");
        } else if !before && healthy {
            tracing::warn!(%target, pending = self.stats.ledger.pending(), "redis reachable again");
        }
        metrics::gauge!("reitunnel_redis_healthy", "target" => target.clone()).set(if healthy {
            1.0
        } else {
            0.0
        });
    }
}

/// Whether `e` means Redis is away (worth waiting for) or refused the event.
fn kind(e: &RedisError) -> Failed {
    let away = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        // LOADING after a restart, TRYAGAIN, …
        || matches!(e.retry_method(), RetryMethod::WaitAndRetry);
    if away {
        Failed::Unreachable
    } else {
        Failed::Refused
    }
}
