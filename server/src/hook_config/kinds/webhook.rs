//! `kind = "webhook"`: every event (or those named in `events`) POSTed,
//! signed, to an HTTP(S) endpoint; also an event sink for the hooks that
//! emit events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::Webhook as Delivery;
use reitunnel_hooks::builtin::{BodyShape, EventHook, Secret, WebhookConfig};
use reitunnel_hooks::Hook;
use reitunnel_transport::tls::https_client;
use serde::Deserialize;

use crate::config_types::{ConfigError, EndpointUrl};
use crate::hook_config::sinks::Sink;
use crate::hook_config::table::{BuildContext, HookKind, Invalid};
use reitunnel_program::expand_env;

/// Events a webhook may queue before it drops (and counts) new ones.
const WEBHOOK_QUEUE: usize = 4_096;

/// The `webhook` kind.
pub(crate) struct Webhook;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The endpoint, `http://` or `https://host[:port][/path]`.
    pub(crate) url: EndpointUrl,
    /// HMAC key for `X-Reitunnel-Signature`; `${VAR}` takes it from the environment.
    pub(crate) secret: Secret,
    /// Event names to send, e.g. `["quota.exceeded"]`; empty = all.
    #[serde(default)]
    pub(crate) events: Vec<String>,
    /// Limit on each delivery attempt, seconds.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_secs: u64,
    /// Attempts after the first before an event is given up.
    #[serde(default = "default_retries")]
    pub(crate) retries: u32,
    /// Also send `stream.opened`/`stream.closed` (high volume).
    #[serde(default)]
    pub(crate) streams: bool,
    /// For `https://`: trust only the CA certificates in this PEM file
    /// (default: the system's).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
}

impl Config {
    /// A webhook to `url` signed with `secret`, every other key at its default.
    pub(crate) fn to(url: String, secret: Secret) -> Config {
        Config {
            url: url.into(),
            secret,
            events: Vec::new(),
            timeout_secs: default_timeout(),
            retries: default_retries(),
            streams: false,
            ca: None,
        }
    }
}

fn default_timeout() -> u64 {
    5
}
fn default_retries() -> u32 {
    3
}

impl HookKind for Webhook {
    const NAME: &'static str = "webhook";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        if config.timeout_secs == 0 {
            return Err(Invalid::new(
                "timeout_secs",
                format!("webhook {}: timeout_secs must be at least 1", config.url),
            ));
        }
        Ok(())
    }

    fn open_sink(config: &Config) -> Option<Result<Sink, String>> {
        Some(start(config, BodyShape::Event).map(Sink::Webhook))
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let bus = ctx.own_sink_bus();
        Ok(Arc::new(EventHook::new("webhook", bus, config.streams)))
    }
}

/// Starts the delivery of a table's webhook, each body written as `shape`
/// says (an alert's Slack or Teams target is a webhook too).
pub(crate) fn start(config: &Config, shape: BodyShape) -> Result<Arc<Delivery>, String> {
    let url = &config.url;
    let secret = expand_env(config.secret.expose())
        .map_err(|var| format!("webhook {url}: secret refers to ${{{var}}}, which is not set"))?;
    let tls = match &config.ca {
        None => None,
        Some(ca) => Some(https_client(ca).map_err(|e| format!("webhook {url}: {e}"))?),
    };
    let webhook = WebhookConfig {
        url: url.expose().to_owned(),
        secret: Secret::new(secret),
        events: config.events.clone(),
        timeout: Duration::from_secs(config.timeout_secs),
        retries: config.retries,
        queue: WEBHOOK_QUEUE,
        tls,
    };
    // Inside a runtime the delivery task joins it; otherwise (the
    // server binary builds its chain first) it gets a thread of its own.
    let hook = if tokio::runtime::Handle::try_current().is_ok() {
        Delivery::shaped(webhook, shape)
    } else {
        Delivery::shaped_on_thread(webhook, shape)
    };
    hook.map_err(|e| e.to_string())
}
