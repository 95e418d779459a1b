//! `kind = "sampled"`: another data-observing hook (`log`, `meter`,
//! `metrics`) fed one in `one_in` chunks, or one per `every_ms`, with the
//! skipped bytes carried so its totals stay exact.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{Sampler, Sampling};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use super::{log::Log, meter::Meter, metrics::Metrics};
use crate::file_config::ConfigError;
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
    pub(crate) hook: HookTable,
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
                "hook",
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
        let hook = &config.hook;
        if !(hook.is::<Log>() || hook.is::<Meter>() || hook.is::<Metrics>()) {
            return Err(Invalid::new(
                "hook",
                "sampled: wrap a hook that observes data (log, meter, metrics); limits and quotas must see every chunk",
            ));
        }
        Ok(())
    }

    fn relation(config: &Config) -> Relation {
        config.hook.relation()
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let sampling = config.sampling().map_err(|e| ctx.invalid(e.problem))?;
        let inner = config.hook.build(ctx)?;
        Ok(Arc::new(Sampler::new(inner, sampling)))
    }
}
