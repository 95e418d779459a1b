//! The hook chain the server runs: the config's hooks between the fixed
//! ones the program adds itself.

use std::sync::Arc;

use reitunnel_hooks::builtin::{Counters, EventHook, MetricsHook, TracingHook};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{Hook, HookChain};

use super::admin::Feed;

use super::settings::{is_metrics, Settings};
use super::Args;
use crate::hook_config::HookSet;

/// The hook chain: the config's hooks (kept across reloads when their table
/// did not change) between the fixed hooks the binary adds itself.
pub(super) struct ChainParts {
    pub(super) set: HookSet,
    /// Logs every event when the config names no hooks at all.
    fallback_log: Arc<dyn Hook>,
    /// What `--metrics-listen` or `--admin` adds when the config has no `metrics` hook.
    metrics: Option<Arc<dyn Hook>>,
    /// Feeds the periodic `meter` log line.
    pub(super) counters: Arc<Counters>,
    /// The admin endpoint's live event feed, when it is on.
    feed: Option<Arc<dyn Hook>>,
}

impl ChainParts {
    /// `feed` is the admin endpoint's event feed, if it is on.
    pub(super) fn new(
        args: &Args,
        settings: &Settings,
        feed: Option<Arc<Feed>>,
    ) -> anyhow::Result<ChainParts> {
        let feed = feed.map(|feed| {
            let bus = EventBus::new().for_server(&settings.config.name).with(feed);
            Arc::new(EventHook::new("admin_feed", bus, false)) as Arc<dyn Hook>
        });
        Ok(ChainParts {
            feed,
            set: HookSet::build(&settings.hooks, &settings.config.name, &settings.path)?,
            fallback_log: Arc::new(TracingHook::new(args.log_data_every)),
            metrics: settings
                .serves_metrics()
                .then(|| Arc::new(MetricsHook::new(args.metrics_client_labels)) as Arc<dyn Hook>),
            counters: Arc::new(Counters::new()),
        })
    }

    /// The chain for `settings` with the config's hooks from `set`.
    pub(super) fn chain(&self, set: &HookSet, settings: &Settings) -> HookChain {
        let mut builder = HookChain::builder();
        if settings.hooks.is_empty() {
            builder = builder.shared(self.fallback_log.clone());
        }
        builder = set.append_to(builder);
        if let Some(metrics) = self
            .metrics
            .as_ref()
            .filter(|_| !settings.hooks.iter().any(is_metrics))
        {
            builder = builder.shared(metrics.clone());
        }
        if let Some(feed) = &self.feed {
            builder = builder.shared(feed.clone());
        }
        builder.shared(self.counters.clone()).build()
    }
}
