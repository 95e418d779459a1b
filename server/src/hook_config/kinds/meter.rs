//! `kind = "meter"`: the aggregating bandwidth meter, reporting to the log,
//! the event sinks or metrics.

use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{BandwidthMeter, MeterSink, MetricsHook, TracingSink};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind, Relation};

/// Distinct client labels of the meter's metrics sink.
const METERED_CLIENT_LABELS: usize = 100;

/// The `meter` kind.
pub(crate) struct Meter;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Seconds between reports.
    #[serde(default = "default_interval")]
    pub(crate) interval_secs: u64,
    /// Where reports go.
    #[serde(default = "default_sinks")]
    pub(crate) sinks: Vec<ReportTo>,
}

/// Where meter reports go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReportTo {
    /// tracing, target `reitunnel::meter`.
    Log,
    /// `bandwidth.report` events to the event sinks (audit logs, webhooks).
    Events,
    /// `reitunnel_metered_bytes_total{direction, client}` through the metrics crate.
    Metrics,
}

fn default_interval() -> u64 {
    10
}
fn default_sinks() -> Vec<ReportTo> {
    vec![ReportTo::Log]
}

impl HookKind for Meter {
    const NAME: &'static str = "meter";
    type Config = Config;

    fn relation(config: &Config) -> Relation {
        if config.sinks.contains(&ReportTo::Events) {
            Relation::EmitsEvents
        } else {
            Relation::Independent
        }
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let sinks = config
            .sinks
            .iter()
            .map(|to| -> Arc<dyn MeterSink> {
                match to {
                    ReportTo::Log => Arc::new(TracingSink),
                    ReportTo::Events => Arc::new(ctx.bus.clone()),
                    ReportTo::Metrics => Arc::new(MetricsHook::new(METERED_CLIENT_LABELS)),
                }
            })
            .collect();
        let meter = BandwidthMeter::new(sinks);
        let every = Duration::from_secs(config.interval_secs.max(1));
        ctx.background.meters.push((meter.clone(), every));
        Ok(meter)
    }
}
