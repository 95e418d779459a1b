//! `kind = "metrics"`: counters and gauges for Prometheus (served by
//! `metrics_listen` or `admin_listen`).

use std::sync::Arc;

use reitunnel_hooks::builtin::MetricsHook;
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind};

/// The `metrics` kind.
pub(crate) struct Metrics;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Distinct client names labelled; later ones share `client="other"`.
    #[serde(default = "default_client_labels")]
    pub(crate) max_client_labels: usize,
}

fn default_client_labels() -> usize {
    100
}

impl HookKind for Metrics {
    const NAME: &'static str = "metrics";
    type Config = Config;

    fn build(config: &Config, _: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        Ok(Arc::new(MetricsHook::new(config.max_client_labels)))
    }
}
