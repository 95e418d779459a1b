//! `kind = "quota"`: bytes per client per period, with `quota.exceeded`
//! events to the sinks.

use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::{ByteSize, ConfigError};
use crate::hook_config::table::{BuildContext, HookKind, Invalid, Relation};
use reitunnel_program::config_file;

/// The `quota` kind.
pub(crate) struct Quota;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// e.g. `"10GiB"`.
    #[serde(deserialize_with = "config_file::parsed")]
    pub(crate) bytes: ByteSize,
    /// Period length in seconds (default a day, reset at 00:00 UTC).
    #[serde(default = "default_period")]
    pub(crate) period_secs: u64,
}

/// A day.
pub(crate) fn default_period() -> u64 {
    86_400
}

impl HookKind for Quota {
    const NAME: &'static str = "quota";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        if config.period_secs == 0 {
            return Err(Invalid::new(
                "period_secs",
                "quota: period_secs must be at least 1",
            ));
        }
        Ok(())
    }

    fn relation(_: &Config) -> Relation {
        Relation::EmitsEvents
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let quota = Arc::new(reitunnel_hooks::builtin::Quota::new(
            config.bytes.0,
            Duration::from_secs(config.period_secs),
            ctx.bus.clone(),
        ));
        ctx.background.quotas.push(quota.clone());
        Ok(quota)
    }
}
