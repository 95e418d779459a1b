//! The sinks the hooks write to in the background (meters' reporters,
//! audit files, webhooks, Redis buses, command notifiers), followed over
//! reloads and finished at exit.

use std::sync::{Arc, Weak};
use std::time::Duration;

#[cfg(unix)]
use reitunnel_hooks::builtin::CommandSink;
use reitunnel_hooks::builtin::{BandwidthMeter, JsonLinesFile, RedisBus, Webhook};

use crate::hook_config::Background;

/// How long the server waits at exit for webhooks, Redis buses and command
/// notifiers to deliver the last events.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(5);

/// What the hooks run in the background, over every reload, held weakly:
/// a meter, audit file or webhook that a reload took out ends with the last
/// hook using it (the server stops such hooks when their last session
/// ends), and what is left is flushed, drained and reported at exit.
#[derive(Default)]
pub(super) struct Sinks {
    meters: Vec<(Weak<BandwidthMeter>, tokio::task::JoinHandle<()>)>,
    audit: Vec<Weak<JsonLinesFile>>,
    webhooks: Vec<Weak<Webhook>>,
    redis: Vec<Weak<RedisBus>>,
    #[cfg(unix)]
    commands: Vec<Weak<CommandSink>>,
}

impl Sinks {
    /// Starts reporters for the meters of `bg` not yet running, takes in
    /// its sinks and forgets those gone.
    pub(super) fn adopt(&mut self, bg: &Background) {
        self.meters.retain(|(m, _)| m.strong_count() > 0);
        for (meter, every) in &bg.meters {
            if !self
                .meters
                .iter()
                .any(|(m, _)| m.ptr_eq(&Arc::downgrade(meter)))
            {
                self.meters
                    .push((Arc::downgrade(meter), meter.spawn_reporter(*every)));
            }
        }
        add_new(&mut self.audit, &bg.audit);
        add_new(&mut self.webhooks, &bg.webhooks);
        add_new(&mut self.redis, &bg.redis);
        #[cfg(unix)]
        add_new(&mut self.commands, &bg.commands);
    }

    /// The audit files still written to.
    pub(super) fn audit(&self) -> impl Iterator<Item = Arc<JsonLinesFile>> + '_ {
        self.audit.iter().filter_map(Weak::upgrade)
    }

    /// Last meter reports, webhook drains and drop counts.
    pub(super) async fn finish(self) {
        for (meter, reporter) in &self.meters {
            if let Some(meter) = meter.upgrade() {
                meter.report_now();
            }
            reporter.abort();
        }
        for hook in self.webhooks.iter().filter_map(Weak::upgrade) {
            if !hook.drain(WEBHOOK_DRAIN).await {
                tracing::warn!(url = hook.url(), "webhook events still pending at exit");
            }
            let h = hook.health();
            tracing::info!(delivered = h.delivered, failed_attempts = h.failed_attempts, dropped = h.dropped,
                healthy = h.healthy, last_error = ?h.last_error, "webhook");
        }
        for redis in self.redis.iter().filter_map(Weak::upgrade) {
            if !redis.drain(WEBHOOK_DRAIN).await {
                tracing::warn!(url = redis.url(), "redis events still pending at exit");
            }
            let h = redis.health();
            tracing::info!(published = h.published, failed = h.failed, dropped = h.dropped,
                healthy = h.healthy, last_error = ?h.last_error, "redis bus");
        }
        #[cfg(unix)]
        for command in self.commands.iter().filter_map(Weak::upgrade) {
            if !command.drain(WEBHOOK_DRAIN).await {
                tracing::warn!(
                    command = command.program(),
                    "command events still pending at exit"
                );
            }
            let h = command.health();
            tracing::info!(command = command.program(), succeeded = h.succeeded, failed = h.failed,
                dropped = h.dropped, last_error = ?h.last_error, "command hook");
        }
        for audit in self.audit() {
            if audit.dropped() > 0 {
                tracing::warn!(file = %audit.path().display(), dropped = audit.dropped(), "audit lines dropped (queue full)");
            }
        }
    }
}

/// Drops the items of `have` that are gone and adds those of `new` not in it (the same instance).
fn add_new<T>(have: &mut Vec<Weak<T>>, new: &[Arc<T>]) {
    have.retain(|h| h.strong_count() > 0);
    for item in new {
        let item = Arc::downgrade(item);
        if !have.iter().any(|h| h.ptr_eq(&item)) {
            have.push(item);
        }
    }
}
