//! The event sinks a config opens (audit files, webhooks, Redis buses,
//! command notifiers): opened once,
//! before the hooks, so every hook that emits events reaches all of them.

use std::sync::Arc;

#[cfg(unix)]
use reitunnel_hooks::builtin::CommandSink;
use reitunnel_hooks::builtin::{JsonLinesFile, RedisBus, Webhook};
use reitunnel_hooks::events::EventBus;

/// An event sink of the config (kept beside the table it was opened for).
#[derive(Clone)]
pub(crate) enum Sink {
    Audit(Arc<JsonLinesFile>),
    Webhook(Arc<Webhook>),
    Redis(Arc<RedisBus>),
    #[cfg(unix)]
    Command(Arc<CommandSink>),
}

impl Sink {
    /// `bus` with this sink added.
    pub(crate) fn join(&self, bus: EventBus) -> EventBus {
        match self {
            Sink::Audit(file) => bus.with(file.clone()),
            Sink::Webhook(hook) => bus.with(hook.clone()),
            Sink::Redis(redis) => bus.with(redis.clone()),
            #[cfg(unix)]
            Sink::Command(command) => bus.with(command.clone()),
        }
    }
}
