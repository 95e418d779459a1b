//! Turns the config file's `[[hooks]]` into a hook chain, in order. Event
//! sinks (audit logs, webhooks) are opened first so every hook that emits events
//! (quota, meter) reaches all of them, wherever they stand in the list.

pub(crate) mod kinds;
mod sinks;
pub(crate) mod table;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::authorize::Authorize;
use reitunnel_hooks::builtin::{
    Alerts, BandwidthMeter, JsonLinesFile, Quota, RateLimit, RedisBus, Statsd, Webhook,
};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{Hook, HookChainBuilder};

use crate::config_types::ConfigError;
use sinks::Sink;
pub use table::HookTable;
use table::{BuildContext, Relation};

/// What the configured hooks need besides their place in the chain, and
/// what the admin API reads of them.
#[derive(Debug, Default, Clone)]
pub struct Background {
    /// Meters and how often each reports; the server spawns their reporters.
    pub meters: Vec<(Arc<BandwidthMeter>, Duration)>,
    /// StatsD hooks and how often each sends; the server spawns their emitters.
    pub statsd: Vec<(Arc<Statsd>, Duration)>,
    /// Alert hooks and how often each evaluates; the server spawns their evaluators.
    pub alerts: Vec<(Arc<Alerts>, Duration)>,
    /// Audit files, to report dropped lines.
    pub audit: Vec<Arc<JsonLinesFile>>,
    /// Webhooks, to report their health (and drain at exit): the event
    /// sinks, then the alert hooks' targets.
    pub webhooks: Vec<Arc<Webhook>>,
    /// Redis event buses, to report their health.
    pub redis: Vec<Arc<RedisBus>>,
    /// Command notifiers, to report their runs and drops.
    #[cfg(unix)]
    pub commands: Vec<Arc<reitunnel_hooks::builtin::CommandSink>>,
    /// Quotas, for each client's usage.
    pub quotas: Vec<Arc<Quota>>,
    /// Rate limiters, for each client's throttled chunks.
    pub rate_limits: Vec<Arc<RateLimit>>,
    /// Asynchronous gates (`http_auth`), in order: they join the chain apart from the hooks.
    pub authorizers: Vec<Arc<dyn Authorize>>,
}

impl Background {
    /// Adds the hook handles of `other`, a hook's own (its meter, quota,
    /// alert targets…), not the config's sinks, which are opened apart.
    fn extend_hooks(&mut self, other: &Background) {
        self.webhooks.extend(other.webhooks.iter().cloned());
        self.meters.extend(other.meters.iter().cloned());
        self.statsd.extend(other.statsd.iter().cloned());
        self.alerts.extend(other.alerts.iter().cloned());
        self.quotas.extend(other.quotas.iter().cloned());
        self.rate_limits.extend(other.rate_limits.iter().cloned());
        self.authorizers.extend(other.authorizers.iter().cloned());
    }
}
/// The hooks built from a config's `[[hooks]]`, each kept with the table it
/// came from, so that a reload ([`HookSet::rebuild`]) keeps every hook whose
/// table did not change, and with it the hook's state: quota usage, rate
/// buckets, meter counters, the open audit file, a webhook's queue.
pub struct HookSet {
    hooks: Vec<(HookTable, BuiltHook)>,
    sinks: Vec<(HookTable, Sink)>,
    background: Background,
}

/// One hook of a [`HookSet`] and the handles inside it (a meter, or a
/// sampled one; a quota; a rate limiter).
#[derive(Clone)]
struct BuiltHook {
    hook: Arc<dyn Hook>,
    own: Background,
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.hooks.iter().map(|(_, b)| b.hook.name()).collect();
        f.debug_struct("HookSet").field("hooks", &names).finish()
    }
}

impl HookSet {
    /// Builds the hooks of `tables`, in order; events carry `server` as the
    /// server's name, errors name `path`.
    pub fn build(tables: &[HookTable], server: &str, path: &Path) -> Result<HookSet, ConfigError> {
        HookSet::assemble(tables, server, path, None)
    }

    /// Builds the hooks of `tables` for a reload: a hook whose table equals
    /// one of this set's is that same hook (each old hook is used once),
    /// unless it emits events (quota, meter with `"events"`) and the event
    /// sinks (audit logs, webhooks) changed, since it holds the old ones,
    /// or it is a `policy`, which is always read again (with its
    /// `clients_file`). An audit log or webhook whose table is unchanged
    /// keeps its file or queue.
    pub fn rebuild(
        &self,
        tables: &[HookTable],
        server: &str,
        path: &Path,
    ) -> Result<HookSet, ConfigError> {
        HookSet::assemble(tables, server, path, Some(self))
    }

    /// The hooks, appended to `chain` in order, and the asynchronous gates.
    pub fn append_to(&self, mut chain: HookChainBuilder) -> HookChainBuilder {
        for (_, built) in &self.hooks {
            chain = chain.shared(built.hook.clone());
        }
        for gate in &self.background.authorizers {
            chain = chain.authorizer(gate.clone());
        }
        chain
    }

    /// What the hooks need run or reported besides the chain.
    pub fn background(&self) -> &Background {
        &self.background
    }

    fn assemble(
        tables: &[HookTable],
        server: &str,
        path: &Path,
        previous: Option<&HookSet>,
    ) -> Result<HookSet, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let mut background = Background::default();
        let mut bus = EventBus::new().for_server(server);
        let mut sinks = Vec::new();
        let mut spare_sinks: Vec<(HookTable, Sink)> =
            previous.map(|p| p.sinks.clone()).unwrap_or_default();
        // Each sink table's sink, by the table's position: the hook built for
        // that table writes to exactly the sink opened for it.
        let mut sink_of: Vec<Option<Sink>> = Vec::with_capacity(tables.len());
        for table in tables {
            let sink = match take_equal(&mut spare_sinks, table) {
                Some(sink) => sink,
                None => match table.open_sink() {
                    Some(opened) => opened.map_err(invalid)?,
                    None => {
                        sink_of.push(None);
                        continue;
                    }
                },
            };
            bus = sink.join(bus);
            match &sink {
                Sink::Audit(file) => background.audit.push(file.clone()),
                Sink::Webhook(hook) => background.webhooks.push(hook.clone()),
                Sink::Redis(redis) => background.redis.push(redis.clone()),
                #[cfg(unix)]
                Sink::Command(command) => background.commands.push(command.clone()),
            }
            sinks.push((table.clone(), sink.clone()));
            sink_of.push(Some(sink));
        }
        tell_health_to_the_others(&sinks, server);
        let sinks_unchanged = previous.is_some_and(|p| {
            p.sinks
                .iter()
                .map(|(s, _)| s)
                .eq(sinks.iter().map(|(s, _)| s))
        });
        let mut spare_hooks: Vec<(HookTable, BuiltHook)> =
            previous.map(|p| p.hooks.clone()).unwrap_or_default();
        let mut hooks = Vec::with_capacity(tables.len());
        for (table, own_sink) in tables.iter().zip(sink_of) {
            // A policy is always built anew: its `clients_file` may have
            // changed under the same table. It holds no state a session
            // needs: each session keeps the chain it logged in with.
            let kept = match table.relation() {
                Relation::AlwaysRebuilt => None,
                Relation::EmitsEvents if !sinks_unchanged => None,
                _ => take_equal(&mut spare_hooks, table),
            };
            let built = match kept {
                Some(built) => built,
                None => {
                    // What this build adds to the background is the hook's own.
                    let mut ctx = BuildContext {
                        server,
                        path,
                        bus: bus.clone(),
                        background: Background::default(),
                        own_sink,
                    };
                    let hook = table.build(&mut ctx)?;
                    BuiltHook {
                        hook,
                        own: ctx.background,
                    }
                }
            };
            background.extend_hooks(&built.own);
            hooks.push((table.clone(), built));
        }
        Ok(HookSet {
            hooks,
            sinks,
            background,
        })
    }
}

/// Each webhook reports turning unhealthy or recovering to every other sink.
fn tell_health_to_the_others(sinks: &[(HookTable, Sink)], server: &str) {
    for (i, (_, sink)) in sinks.iter().enumerate() {
        let Sink::Webhook(webhook) = sink else {
            continue;
        };
        let others = sinks.iter().enumerate().filter(|(j, _)| *j != i).fold(
            EventBus::new().for_server(server),
            |bus, (_, (_, other))| other.join(bus),
        );
        webhook.report_health_to(others);
    }
}

/// Removes and returns the first entry of `spare` whose table equals `table`.
fn take_equal<T>(spare: &mut Vec<(HookTable, T)>, table: &HookTable) -> Option<T> {
    let at = spare.iter().position(|(s, _)| s == table)?;
    Some(spare.remove(at).1)
}

/// Appends the hooks of `tables` to `chain`, in order; events carry `server` as the server's name.
pub fn add_hooks(
    chain: HookChainBuilder,
    tables: &[HookTable],
    server: &str,
    path: &Path,
) -> Result<(HookChainBuilder, Background), ConfigError> {
    let set = HookSet::build(tables, server, path)?;
    Ok((set.append_to(chain), set.background))
}
