//! `kind = "sampled"`: another data-observing hook (`log`, `meter`,
//! `metrics`) fed one in `one_in` chunks, or one per `every_ms`, with the
//! skipped bytes carried so its totals stay exact.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{Sampler, Sampling};
use reitunnel_hooks::Hook;
use serde::{Deserialize, Deserializer};

use super::{log::Log, meter::Meter, metrics::Metrics};
use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind, HookTable, Invalid, Relation};

/// The `sampled` kind.
pub(crate) struct Sampled;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Forward one chunk in this many.
    pub(crate) one_in: Option<u64>,
    /// Or at most one chunk per this many milliseconds.
    pub(crate) every_ms: Option<u64>,
    /// The wrapped hook: `hook = { kind = "metrics" }`.
    pub(crate) hook: Observer,
}

/// The wrapped hook: a kind that observes data. Read as a table, its kind
/// checked first, so a quota is told it cannot be sampled before anything
/// about its own keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observer(pub(crate) HookTable);

const ONLY_OBSERVERS: &str =
    "sampled: wrap a hook that observes data (log, meter, metrics); limits and quotas must see every chunk";

fn observes_data(kind: &str) -> bool {
    [Log::NAME, Meter::NAME, Metrics::NAME].contains(&kind)
}

impl<'de> Deserialize<'de> for Observer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        if let Some(kind) = table.get("kind").and_then(toml::Value::as_str) {
            if !observes_data(kind) {
                return Err(serde::de::Error::custom(ONLY_OBSERVERS));
            }
        }
        HookTable::parse(table)
            .map(Observer)
            .map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl Config {
    fn sampling(&self) -> Result<Sampling, Invalid> {
        match (self.one_in, self.every_ms) {
            (Some(n), None) => NonZeroU64::new(n)
                .map(Sampling::OneIn)
                .ok_or_else(|| Invalid::new("one_in", "sampled: one_in must be at least 1")),
            (None, Some(ms)) => Ok(Sampling::Every(Duration::from_millis(ms))),
            (Some(_), Some(_)) => Err(Invalid::new(
                "every_ms",
                "sampled: give exactly one of one_in and every_ms",
            )),
            (None, None) => Err(Invalid::new(
                "one_in",
                "sampled: give exactly one of one_in and every_ms",
            )),
        }
    }
}

impl HookKind for Sampled {
    const NAME: &'static str = "sampled";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        config.sampling()?;
        if !observes_data(config.hook.0.kind()) {
            return Err(Invalid::new("hook", ONLY_OBSERVERS));
        }
        Ok(())
    }

    fn relation(config: &Config) -> Relation {
        config.hook.0.relation()
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let sampling = config.sampling().expect("checked when the table was read");
        let inner = config.hook.0.build(ctx)?;
        Ok(Arc::new(Sampler::new(inner, sampling)))
    }
}
