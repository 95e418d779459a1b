//! The sinks the hooks write to in the background (meters' reporters,
//! StatsD emitters, alert evaluators, audit files, webhooks, Redis
//! buses, command notifiers), followed over reloads and finished at exit.

use std::sync::{Arc, Weak};
use std::time::Duration;

#[cfg(unix)]
use reitunnel_hooks::builtin::CommandSink;
use reitunnel_hooks::builtin::{Alerts, BandwidthMeter, JsonLinesFile, RedisBus, Statsd, Webhook};
use tokio::task::JoinHandle;

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
    meters: Ticking<BandwidthMeter>,
    statsd: Ticking<Statsd>,
    alerts: Ticking<Alerts>,
    audit: Vec<Weak<JsonLinesFile>>,
    webhooks: Vec<Weak<Webhook>>,
    redis: Vec<Weak<RedisBus>>,
    #[cfg(unix)]
    commands: Vec<Weak<CommandSink>>,
}

impl Sinks {
    /// Starts the interval tasks of `bg` (meters, StatsD, alerts) not yet
    /// running, shows them the quotas and webhooks they read, takes in its
    /// sinks and forgets those gone.
    pub(super) fn adopt(&mut self, bg: &Background) {
        self.meters
            .adopt(&bg.meters, BandwidthMeter::spawn_reporter);
        self.statsd.adopt(&bg.statsd, Statsd::spawn_emitter);
        self.alerts.adopt(&bg.alerts, Alerts::spawn_evaluator);
        for (statsd, _) in &bg.statsd {
            statsd.watch_quotas(&bg.quotas);
        }
        for (alerts, _) in &bg.alerts {
            alerts.watch(&bg.quotas, &bg.webhooks);
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
        self.meters.finish(BandwidthMeter::report_now);
        self.statsd.finish(Statsd::emit_now);
        self.alerts.finish(|_| {});
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

/// Hooks that each run a task on an interval (a meter's reporter, a
/// StatsD emitter), held weakly, with their tasks.
struct Ticking<T>(Vec<(Weak<T>, JoinHandle<()>)>);

impl<T> Default for Ticking<T> {
    fn default() -> Self {
        Ticking(Vec::new())
    }
}

impl<T> Ticking<T> {
    /// Forgets those gone and starts the task of each of `new` not yet running.
    fn adopt(
        &mut self,
        new: &[(Arc<T>, Duration)],
        spawn: fn(&Arc<T>, Duration) -> JoinHandle<()>,
    ) {
        self.0.retain(|(h, _)| h.strong_count() > 0);
        for (hook, every) in new {
            let weak = Arc::downgrade(hook);
            if !self.0.iter().any(|(h, _)| h.ptr_eq(&weak)) {
                self.0.push((weak, spawn(hook, *every)));
            }
        }
    }

    /// A last round (`last`) for each still alive, and every task ended.
    fn finish(&self, last: fn(&T)) {
        for (hook, task) in &self.0 {
            if let Some(hook) = hook.upgrade() {
                last(&hook);
            }
            task.abort();
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
