//! `kind = "log"`: tracing logs of every lifecycle event.

use std::sync::Arc;

use reitunnel_hooks::builtin::TracingHook;
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind};

/// The `log` kind.
pub(crate) struct Log;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// One in this many data chunks logged at debug level; 0 = none.
    #[serde(default)]
    pub(crate) sample_every: u64,
}

impl HookKind for Log {
    const NAME: &'static str = "log";
    type Config = Config;

    fn build(config: &Config, _: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        Ok(Arc::new(TracingHook::new(config.sample_every)))
    }
}
