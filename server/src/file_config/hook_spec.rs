//! The `[[hooks]]` tables: one variant per hook kind, with its keys and
//! their defaults, and the `clients_file` of a `policy`.

use std::path::{Path, PathBuf};

use reitunnel_hooks::builtin::Secret;
use serde::Deserialize;

use super::{config_file, ByteSize, ConfigError};
use crate::PortRanges;

/// One `[[hooks]]` table; `kind` picks the hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookSpec {
    /// tracing logs of every lifecycle event, one in `sample_every` data chunks.
    Log {
        /// 0 = no data events.
        #[serde(default)]
        sample_every: u64,
    },
    /// Aggregating bandwidth meter.
    Meter {
        /// Seconds between reports.
        #[serde(default = "default_meter_interval")]
        interval_secs: u64,
        /// Where reports go: `"log"` and/or `"events"` (the audit log and other event sinks).
        #[serde(default = "default_meter_sinks")]
        sinks: Vec<MeterSinkKind>,
    },
    /// Byte and connection rate limits.
    RateLimit {
        /// Per client session, each direction, e.g. `"10MiB"`.
        #[serde(default, deserialize_with = "config_file::parsed_opt")]
        per_client_bytes_per_sec: Option<ByteSize>,
        /// Per tunnel, each direction.
        #[serde(default, deserialize_with = "config_file::parsed_opt")]
        per_tunnel_bytes_per_sec: Option<ByteSize>,
        /// Burst above the byte rates (default: a tenth of a second, at least 64 KiB).
        #[serde(default, deserialize_with = "config_file::parsed_opt")]
        burst: Option<ByteSize>,
        /// New visitor streams per client per second.
        streams_per_client_per_sec: Option<u32>,
        /// New visitor connections per source IP per second.
        visitors_per_ip_per_sec: Option<u32>,
        /// Client logins per source IP per second.
        logins_per_ip_per_sec: Option<u32>,
    },
    /// Bytes per client per period.
    Quota {
        /// e.g. `"10GiB"`.
        #[serde(deserialize_with = "config_file::parsed")]
        bytes: ByteSize,
        /// Period length in seconds (default a day, reset at 00:00 UTC).
        #[serde(default = "default_quota_period")]
        period_secs: u64,
    },
    /// Another data-observing hook (`log`, `meter`, `metrics`) fed one in
    /// `one_in` chunks, or one per `every_ms`, with skipped bytes carried so
    /// its totals stay exact: `hook = { kind = "metrics" }`.
    Sampled {
        /// Forward one chunk in this many.
        one_in: Option<u64>,
        /// Or at most one chunk per this many milliseconds.
        every_ms: Option<u64>,
        /// The wrapped hook.
        hook: Box<HookSpec>,
    },
    /// Counters and gauges for Prometheus (needs `metrics_listen` or `admin_listen`).
    Metrics {
        /// Distinct client names labelled; later ones share `client="other"`.
        #[serde(default = "default_client_labels")]
        max_client_labels: usize,
    },
    /// Per-client tokens and limits, visitor networks. Replaces the global token.
    Policy {
        /// `[hooks.clients.NAME]` tables.
        #[serde(default)]
        clients: std::collections::BTreeMap<String, ClientSpec>,
        /// A TOML file of `[clients.NAME]` tables (same fields), merged with `clients`.
        clients_file: Option<PathBuf>,
        /// Networks visitors may come from (CIDR); empty = anywhere.
        #[serde(default)]
        visitors_allow: Vec<String>,
        /// Networks visitors may not come from (CIDR).
        #[serde(default)]
        visitors_deny: Vec<String>,
    },
    /// JSON-lines audit log of every event.
    Audit {
        /// The file, appended to.
        path: PathBuf,
        /// Also log `stream.opened`/`stream.closed` (high volume).
        #[serde(default)]
        streams: bool,
    },
    /// Every event (or those named in `events`) POSTed, signed, to an HTTP endpoint.
    Webhook {
        /// The endpoint, `http://` or `https://host[:port][/path]`.
        url: String,
        /// HMAC key for `X-Reitunnel-Signature`; `${VAR}` takes it from the environment.
        secret: Secret,
        /// Event names to send, e.g. `["quota.exceeded"]`; empty = all.
        #[serde(default)]
        events: Vec<String>,
        /// Limit on each delivery attempt, seconds.
        #[serde(default = "default_webhook_timeout")]
        timeout_secs: u64,
        /// Attempts after the first before an event is given up.
        #[serde(default = "default_webhook_retries")]
        retries: u32,
        /// Also send `stream.opened`/`stream.closed` (high volume).
        #[serde(default)]
        streams: bool,
        /// For `https://`: trust only the CA certificates in this PEM file
        /// (default: the system's).
        #[serde(default)]
        ca: Option<PathBuf>,
    },
    /// Asks an HTTP service whether each login and tunnel (and, with
    /// `streams`, each visitor) may open.
    HttpAuth {
        /// The service, `http://` or `https://host[:port][/path]`.
        url: String,
        /// The longest one question may take, milliseconds.
        #[serde(default = "default_http_auth_timeout")]
        timeout_ms: u64,
        /// `"deny"` (default) or `"allow"`: what a failure to answer means.
        #[serde(default)]
        on_failure: OnFailureSpec,
        /// Ask about every visitor too.
        #[serde(default)]
        streams: bool,
        /// For `https://`: trust only the CA certificates in this PEM file.
        #[serde(default)]
        ca: Option<PathBuf>,
    },
}

/// `on_failure` of an `http_auth` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailureSpec {
    /// Refuse when the service does not answer.
    #[default]
    Deny,
    /// Let in when the service does not answer.
    Allow,
}

fn default_http_auth_timeout() -> u64 {
    2000
}

/// One client of a `policy` hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client's token; `${VAR}` takes it from the environment. Without
    /// one, the client must log in with a verified client certificate (mTLS).
    pub token: Option<Secret>,
    /// Ports it may open, e.g. `"20000-20010"`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub ports: Option<PortRanges>,
    /// Tunnels at once.
    pub max_tunnels: Option<u32>,
    /// Visitor streams at once.
    pub max_streams: Option<u32>,
}

/// Where meter reports go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterSinkKind {
    /// tracing, target `reitunnel::meter`.
    Log,
    /// `bandwidth.report` events to the event sinks (audit logs, webhooks).
    Events,
    /// `reitunnel_metered_bytes_total{direction, client}` through the metrics crate.
    Metrics,
}

/// A `clients_file` of the policy hook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    /// `[clients.NAME]` tables.
    #[serde(default)]
    pub clients: std::collections::BTreeMap<String, ClientSpec>,
}

impl ClientsFile {
    /// Reads `path`; errors name the file and line.
    pub fn load(path: &Path) -> Result<ClientsFile, ConfigError> {
        Ok(config_file::load(path)?)
    }
}

fn default_meter_interval() -> u64 {
    10
}
fn default_meter_sinks() -> Vec<MeterSinkKind> {
    vec![MeterSinkKind::Log]
}
fn default_client_labels() -> usize {
    100
}
fn default_quota_period() -> u64 {
    86_400
}
fn default_webhook_timeout() -> u64 {
    5
}
fn default_webhook_retries() -> u32 {
    3
}
