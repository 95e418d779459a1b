//! `kind = "redis"`: every event (or those named in `events`) appended to
//! a Redis stream and/or published on a channel per event name; also an
//! event sink for the hooks that emit events.

use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{EventHook, RedisBus, RedisBusConfig};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::{ConfigError, EndpointUrl};
use crate::hook_config::sinks::Sink;
use crate::hook_config::table::{BuildContext, HookKind, Invalid};
use reitunnel_program::expand_env;

/// The `redis` kind.
pub(crate) struct Redis;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `redis://[:password@]host[:port][/db]` or `rediss://…`; `${VAR}`
    /// takes (part of) it from the environment.
    pub(crate) url: EndpointUrl,
    /// The stream events are appended to; `""`: none (then `channel_prefix`
    /// is needed).
    #[serde(default = "default_stream")]
    pub(crate) stream: String,
    /// The stream is trimmed to about this many entries; 0: never.
    #[serde(default = "default_maxlen")]
    pub(crate) maxlen: u64,
    /// Each event is also published on `<prefix><event name>`.
    #[serde(default)]
    pub(crate) channel_prefix: Option<String>,
    /// Event names to send; empty = all.
    #[serde(default)]
    pub(crate) events: Vec<String>,
    /// Also send `stream.*` events (high volume).
    #[serde(default)]
    pub(crate) streams: bool,
    /// Events that may wait while Redis is away before new ones are dropped.
    #[serde(default = "default_queue")]
    pub(crate) queue: usize,
    /// Limit on connecting and on each answer, seconds.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_secs: u64,
    /// Attempts after the first before an event Redis answers with an error
    /// is given up.
    #[serde(default = "default_retries")]
    pub(crate) retries: u32,
}

impl Config {
    /// Every event to `stream` at `url`, the other keys their defaults.
    pub(crate) fn to(url: String, stream: String) -> Config {
        Config {
            url: url.into(),
            stream,
            maxlen: default_maxlen(),
            channel_prefix: None,
            events: Vec::new(),
            streams: false,
            queue: default_queue(),
            timeout_secs: default_timeout(),
            retries: default_retries(),
        }
    }
}

fn default_stream() -> String {
    "reitunnel:events".to_owned()
}
fn default_maxlen() -> u64 {
    100_000
}
fn default_queue() -> usize {
    4_096
}
fn default_timeout() -> u64 {
    5
}
fn default_retries() -> u32 {
    3
}

impl HookKind for Redis {
    const NAME: &'static str = "redis";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        let url = &config.url;
        if config.timeout_secs == 0 {
            return Err(Invalid::new(
                "timeout_secs",
                format!("redis {url}: timeout_secs must be at least 1"),
            ));
        }
        if config.stream.is_empty() && config.channel_prefix.is_none() {
            return Err(Invalid::new(
                "stream",
                format!("redis {url}: stream = \"\" needs a channel_prefix, or events go nowhere"),
            ));
        }
        if config.queue < 2 {
            return Err(Invalid::new(
                "queue",
                format!("redis {url}: queue must be at least 2"),
            ));
        }
        Ok(())
    }

    fn open_sink(config: &Config) -> Option<Result<Sink, String>> {
        Some(start(config))
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let bus = ctx.own_sink_bus();
        Ok(Arc::new(EventHook::new("redis", bus, config.streams)))
    }
}

/// Starts the bus's delivery (it does not wait for Redis to answer).
fn start(config: &Config) -> Result<Sink, String> {
    let url = &config.url;
    let expanded = expand_env(url.expose())
        .map_err(|var| format!("redis {url}: url refers to ${{{var}}}, which is not set"))?;
    let bus = RedisBusConfig {
        url: expanded,
        stream: (!config.stream.is_empty()).then(|| config.stream.clone()),
        maxlen: config.maxlen,
        channel_prefix: config.channel_prefix.clone(),
        events: config.events.clone(),
        timeout: Duration::from_secs(config.timeout_secs),
        retries: config.retries,
        queue: config.queue,
    };
    // Inside a runtime the delivery task joins it; otherwise (the server
    // binary builds its chain first) it gets a thread of its own.
    let sink = if tokio::runtime::Handle::try_current().is_ok() {
        RedisBus::new(bus)
    } else {
        RedisBus::new_on_thread(bus)
    };
    sink.map(Sink::Redis).map_err(|e| e.to_string())
}
