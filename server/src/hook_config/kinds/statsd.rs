//! `kind = "statsd"`: counters, gauges and timings sent over UDP to a
//! StatsD server (Telegraf's statsd input, the Datadog agent) on an interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{Flavor, StatsdConfig, DEFAULT_MAX_PACKET};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind, Invalid};

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// The smallest packet that still holds any line the hook writes.
const MIN_PACKET: usize = 512;

/// The `statsd` kind.
pub(crate) struct Statsd;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The StatsD server, `host:port` (UDP).
    pub(crate) addr: String,
    /// Put before every metric name.
    #[serde(default = "default_prefix")]
    pub(crate) prefix: String,
    /// `"statsd"` (dimensions in the name) or `"dogstatsd"` (as tags).
    #[serde(default)]
    pub(crate) flavor: FlavorKey,
    /// Tags on every line, `{ env = "prod" }` (dogstatsd only).
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    /// Milliseconds between emissions.
    #[serde(default = "default_interval")]
    pub(crate) interval_ms: u64,
    /// The largest UDP packet sent.
    #[serde(default = "default_max_packet")]
    pub(crate) max_packet_bytes: usize,
}

/// `flavor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FlavorKey {
    /// Plain StatsD.
    #[default]
    Statsd,
    /// DogStatsD.
    Dogstatsd,
}

fn default_prefix() -> String {
    "reitunnel".to_owned()
}
fn default_interval() -> u64 {
    10_000
}
fn default_max_packet() -> usize {
    DEFAULT_MAX_PACKET
}

impl Config {
    fn settings(&self) -> StatsdConfig {
        StatsdConfig {
            addr: self.addr.clone(),
            prefix: self.prefix.clone(),
            flavor: match self.flavor {
                FlavorKey::Statsd => Flavor::Statsd,
                FlavorKey::Dogstatsd => Flavor::Dogstatsd,
            },
            tags: self.tags.clone().into_iter().collect(),
            max_packet_bytes: self.max_packet_bytes,
        }
    }
}

impl HookKind for Statsd {
    const NAME: &'static str = "statsd";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        let addr = &config.addr;
        let port = addr
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p > 0) {
            return Err(Invalid::new(
                "addr",
                format!("statsd: addr '{addr}' is not host:port"),
            ));
        }
        if config.interval_ms == 0 {
            return Err(Invalid::new(
                "interval_ms",
                "statsd: interval_ms must be at least 1",
            ));
        }
        if !(MIN_PACKET..=MAX_UDP_PAYLOAD).contains(&config.max_packet_bytes) {
            return Err(Invalid::new(
                "max_packet_bytes",
                format!("statsd: max_packet_bytes must be {MIN_PACKET}..={MAX_UDP_PAYLOAD}"),
            ));
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !config.prefix.chars().all(name_char) {
            return Err(Invalid::new(
                "prefix",
                "statsd: prefix may hold letters, digits, '.', '_' and '-' only",
            ));
        }
        if config.prefix.len() > MIN_PACKET / 4 {
            return Err(Invalid::new(
                "prefix",
                format!("statsd: prefix must be at most {} bytes", MIN_PACKET / 4),
            ));
        }
        if !config.tags.is_empty() && config.flavor == FlavorKey::Statsd {
            return Err(Invalid::new(
                "tags",
                "statsd: tags need flavor = \"dogstatsd\" (plain StatsD has no tags)",
            ));
        }
        Ok(())
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let statsd = reitunnel_hooks::builtin::Statsd::new(&config.settings())
            .map_err(|e| ctx.invalid(e.to_string()))?;
        let every = Duration::from_millis(config.interval_ms);
        ctx.background.statsd.push((statsd.clone(), every));
        Ok(statsd)
    }
}
