//! `kind = "alert"`: rules over what the hooks measure, evaluated every
//! `interval_ms`, telling Slack, Teams or a signed-JSON webhook when one
//! fires and when it resolves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{AlertMetric, AlertRule, Alerts, BodyShape, Secret};
use reitunnel_hooks::events::{EventBus, EventSink};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use super::webhook;
use crate::config_types::{ByteSize, ConfigError, EndpointUrl};
use crate::hook_config::table::{BuildContext, HookKind, Invalid};

/// The `alert` kind.
pub(crate) struct Alert;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Milliseconds between evaluations.
    #[serde(default = "default_interval")]
    pub(crate) interval_ms: u64,
    /// `[hooks.targets.NAME]`: where messages go.
    pub(crate) targets: BTreeMap<String, TargetSpec>,
    /// `[[hooks.rules]]`, each naming its targets.
    pub(crate) rules: Vec<RuleSpec>,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetSpec {
    /// `"slack"`, `"teams"`, `"webhook"` (our signed JSON) or `"command"`.
    pub(crate) format: Format,
    /// The incoming webhook, `https://…`; shown as `scheme://host:port` only.
    /// Not for a command.
    #[serde(default)]
    pub(crate) url: Option<EndpointUrl>,
    /// For `"command"`: the program and its arguments, run per message
    /// with the message as JSON on stdin, as a command hook runs it.
    #[serde(default)]
    pub(crate) command: Vec<String>,
    /// For `"webhook"`: the HMAC key (`${VAR}` reads the environment).
    #[serde(default)]
    pub(crate) secret: Option<Secret>,
    /// Limit on each delivery attempt, seconds.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_secs: u64,
    /// Attempts after the first before a message is given up.
    #[serde(default = "default_retries")]
    pub(crate) retries: u32,
    /// Trust only the CA certificates in this PEM file.
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
}

/// A target's `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams connector (MessageCard).
    Teams,
    /// Our signed event JSON (docs/EVENTS.md).
    Webhook,
    /// A program, as `kind = "command"` runs one (docs/INTEGRATING.md).
    Command,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    /// Names it in the messages.
    pub(crate) name: String,
    /// What it looks at.
    pub(crate) metric: MetricKey,
    /// The threshold: a number, or for the rates a byte size per second (`"100MiB/s"`).
    #[serde(default)]
    pub(crate) above: Option<Threshold>,
    /// Seconds the value must stay above before it fires.
    #[serde(default)]
    pub(crate) for_secs: u64,
    /// For `failed_logins`: the seconds its failures are summed over.
    #[serde(default)]
    pub(crate) in_secs: Option<u64>,
    /// Seconds after a firing is sent during which it is not sent again.
    #[serde(default = "default_cooldown")]
    pub(crate) cooldown_secs: u64,
    /// Names of `targets`.
    pub(crate) targets: Vec<String>,
}

/// A rule's `metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MetricKey {
    ClientRateUp,
    ClientRateDown,
    QuotaUsed,
    FailedLogins,
    WebhookUnhealthy,
    OpenStreams,
    Sessions,
}

impl MetricKey {
    fn metric(self) -> AlertMetric {
        match self {
            MetricKey::ClientRateUp => AlertMetric::ClientRateUp,
            MetricKey::ClientRateDown => AlertMetric::ClientRateDown,
            MetricKey::QuotaUsed => AlertMetric::QuotaUsed,
            MetricKey::FailedLogins => AlertMetric::FailedLogins,
            MetricKey::WebhookUnhealthy => AlertMetric::WebhookUnhealthy,
            MetricKey::OpenStreams => AlertMetric::OpenStreams,
            MetricKey::Sessions => AlertMetric::Sessions,
        }
    }

    fn is_rate(self) -> bool {
        matches!(self, MetricKey::ClientRateUp | MetricKey::ClientRateDown)
    }
}

/// `above`: a number, or a byte size (per second) as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Threshold {
    Number(f64),
    Text(String),
}

fn default_interval() -> u64 {
    1_000
}
fn default_timeout() -> u64 {
    5
}
fn default_retries() -> u32 {
    3
}
fn default_cooldown() -> u64 {
    300
}

impl RuleSpec {
    /// The threshold as a number; `Err` says what is wrong with it.
    fn threshold(&self) -> Result<f64, String> {
        let name = &self.name;
        match (&self.above, self.metric) {
            (None, MetricKey::WebhookUnhealthy) => Ok(0.0),
            (None, _) => Err(format!("alert: rule '{name}' needs `above`")),
            (Some(Threshold::Number(n)), _) if n.is_finite() => Ok(*n),
            (Some(Threshold::Number(n)), _) => {
                Err(format!("alert: rule '{name}': above = {n} is not a number"))
            }
            (Some(Threshold::Text(text)), metric) if metric.is_rate() => {
                let size = text.strip_suffix("/s").unwrap_or(text);
                size.parse::<ByteSize>()
                    .map(|b| b.0 as f64)
                    .map_err(|e| format!("alert: rule '{name}': above = \"{text}\": {e}"))
            }
            (Some(Threshold::Text(text)), _) => Err(format!(
                "alert: rule '{name}': above = \"{text}\": only the client rates take a byte size; give a number"
            )),
        }
    }
}

impl HookKind for Alert {
    const NAME: &'static str = "alert";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        if config.interval_ms == 0 {
            return Err(Invalid::new(
                "interval_ms",
                "alert: interval_ms must be at least 1",
            ));
        }
        if config.rules.is_empty() {
            return Err(Invalid::new("rules", "alert: give at least one rule"));
        }
        for (name, target) in &config.targets {
            match (target.format, &target.url, target.command.is_empty()) {
                (Format::Command, None, false) => {}
                (Format::Command, _, _) => {
                    return Err(Invalid::new(
                        "targets",
                        format!("alert: target '{name}' of format \"command\" needs command = [\"/path/prog\", …] and no url"),
                    ))
                }
                (_, Some(_), true) => {}
                (format, _, _) => {
                    return Err(Invalid::new(
                        "targets",
                        format!(
                            "alert: target '{name}' of format \"{}\" needs a url and no command",
                            format!("{format:?}").to_lowercase()
                        ),
                    ))
                }
            }
            if target.format == Format::Webhook && target.secret.is_none() {
                return Err(Invalid::new(
                    "targets",
                    format!("alert: target '{name}' of format \"webhook\" needs a secret"),
                ));
            }
            if target.timeout_secs == 0 {
                return Err(Invalid::new(
                    "targets",
                    format!("alert: target '{name}': timeout_secs must be at least 1"),
                ));
            }
        }
        for rule in &config.rules {
            let name = &rule.name;
            rule.threshold().map_err(|e| Invalid::new("rules", e))?;
            match (rule.metric, rule.in_secs) {
                (MetricKey::FailedLogins, None | Some(0)) => {
                    return Err(Invalid::new(
                        "rules",
                        format!("alert: rule '{name}': failed_logins needs in_secs (at least 1)"),
                    ))
                }
                (MetricKey::FailedLogins, Some(_)) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(Invalid::new(
                        "rules",
                        format!("alert: rule '{name}': in_secs is for failed_logins only"),
                    ))
                }
            }
            if rule.targets.is_empty() {
                return Err(Invalid::new(
                    "rules",
                    format!("alert: rule '{name}' names no targets"),
                ));
            }
            if let Some(unknown) = rule
                .targets
                .iter()
                .find(|t| !config.targets.contains_key(*t))
            {
                return Err(Invalid::new(
                    "rules",
                    format!(
                        "alert: rule '{name}' names target '{unknown}', which is not in targets"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let mut sinks: BTreeMap<&str, Arc<dyn EventSink>> = BTreeMap::new();
        for (name, target) in &config.targets {
            let shape = match target.format {
                Format::Slack => BodyShape::Slack,
                Format::Teams => BodyShape::Teams,
                Format::Webhook => BodyShape::Event,
                Format::Command => {
                    sinks.insert(name, command_target(name, target, ctx)?);
                    continue;
                }
            };
            let url = target
                .url
                .as_ref()
                .expect("checked when the table was read");
            let delivery = webhook::Config {
                timeout_secs: target.timeout_secs,
                retries: target.retries,
                ca: target.ca.clone(),
                ..webhook::Config::to(
                    url.expose().to_owned(),
                    target.secret.clone().unwrap_or_else(|| Secret::new("")),
                )
            };
            let hook = webhook::start(&delivery, shape)
                .map_err(|e| ctx.invalid(format!("alert: target '{name}': {e}")))?;
            // Its health is reported, and it is drained at exit, like a webhook's.
            ctx.background.webhooks.push(hook.clone());
            sinks.insert(name, hook);
        }
        let rules = config
            .rules
            .iter()
            .map(|rule| AlertRule {
                name: rule.name.clone(),
                metric: rule.metric.metric(),
                above: rule.threshold().expect("checked when the table was read"),
                held: Duration::from_secs(rule.for_secs),
                window: Duration::from_secs(rule.in_secs.unwrap_or(0)),
                cooldown: Duration::from_secs(rule.cooldown_secs),
                targets: rule
                    .targets
                    .iter()
                    .fold(EventBus::new().for_server(ctx.server), |bus, t| {
                        bus.with(sinks[t.as_str()].clone())
                    }),
            })
            .collect();
        let alerts = Alerts::new(rules);
        let every = Duration::from_millis(config.interval_ms);
        ctx.background.alerts.push((alerts.clone(), every));
        Ok(alerts)
    }
}

/// A command target: the program run per message, drained at exit like a
/// command hook's notifier.
#[cfg(unix)]
fn command_target(
    name: &str,
    target: &TargetSpec,
    ctx: &mut BuildContext<'_>,
) -> Result<Arc<dyn EventSink>, ConfigError> {
    let settings = reitunnel_hooks::builtin::CommandConfig {
        timeout: Duration::from_secs(target.timeout_secs),
        ..reitunnel_hooks::builtin::CommandConfig::new(target.command.clone())
    };
    let sink = super::command::notifier(settings)
        .map_err(|e| ctx.invalid(format!("alert: target '{name}': {e}")))?;
    ctx.background.commands.push(sink.clone());
    Ok(sink)
}

#[cfg(not(unix))]
fn command_target(
    name: &str,
    _: &TargetSpec,
    ctx: &mut BuildContext<'_>,
) -> Result<Arc<dyn EventSink>, ConfigError> {
    Err(ctx.invalid(format!(
        "alert: target '{name}': command targets need a Unix host"
    )))
}
