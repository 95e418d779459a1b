//! `reitunnel-server --config server.toml`: every command-line option, plus
//! the ordered `[[hooks]]` tables (docs/EVENTS.md). Values that need
//! checking (port lists, byte sizes, durations) are parsed while the TOML is
//! read, so a bad value, an unknown field or an unknown hook kind is an
//! error that names the line. Flags given on the command line win over the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

use crate::PortRanges;
use reitunnel_hooks::builtin::Secret;

/// The server's config file.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// Everything but the hooks, as written.
    pub settings: Settings,
    /// The hook chain, in order.
    pub hooks: Vec<HookSpec>,
}

/// The top-level settings of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--token`; `${VAR}` takes it from the environment.
    pub token: Option<Secret>,
    /// `--allow-ports`, e.g. `"20000-20100,30000"`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub allow_ports: Option<PortRanges>,
    /// `--bind-ip`.
    pub bind_ip: Option<IpAddr>,
    /// `--allow-forward`: targets `-L` clients may reach, e.g. `["db.internal:5432", "10.0.0.0/8:22"]`.
    #[serde(default, deserialize_with = "config_file::parsed_list")]
    pub allow_forward: Vec<crate::ForwardRule>,
    /// `--name`.
    pub name: Option<String>,
    /// `--stats-interval`, seconds.
    pub stats_interval: Option<u64>,
    /// `--drain-timeout`, seconds.
    pub drain_timeout_secs: Option<u64>,
    /// `--port-lease`, seconds.
    pub port_lease_secs: Option<u64>,
    /// `--metrics-listen`: serve Prometheus metrics at http://ADDR/metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// `--tls-cert`: certificate chain (PEM); turns TLS on with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `--client-ca`: require client certificates signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `[limits]`: connection, tunnel and stream limits and heartbeats.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The `[[hooks]]` tables, read raw with their position so each one's
    /// errors can name its own line (serde loses positions inside tagged enums).
    #[serde(default)]
    hooks: Vec<toml::Spanned<toml::Table>>,
}

/// The `[limits]` table: each key overrides one default of [`crate::Limits`]
/// (or of the handshake and frame limits of `ServerConfig`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Logged-in clients at once.
    pub max_clients: Option<usize>,
    /// Connections in their TLS handshake or login, in total.
    pub max_handshakes: Option<usize>,
    /// The same, per source IP.
    pub max_handshakes_per_ip: Option<usize>,
    /// Tunnels per client session.
    pub max_tunnels_per_client: Option<usize>,
    /// Visitor streams per client session.
    pub max_streams_per_client: Option<usize>,
    /// Visitor streams on the whole server.
    pub max_streams: Option<usize>,
    /// Visitors of one tunnel waiting for the client to reach the target.
    pub max_pending_visitors: Option<usize>,
    /// Visitors connected at once from one source address or IPv6 /64 (0 = unlimited).
    pub max_visitors_per_ip: Option<usize>,
    /// Seconds without a byte either way after which a visitor or `-L`
    /// stream is closed (0 = never).
    pub visitor_idle_timeout_secs: Option<u64>,
    /// Bytes of tunnel data the server may buffer, e.g. `"4GiB"`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub max_buffered_bytes: Option<ByteSize>,
    /// Failed logins per source IP per minute (0 = unlimited).
    pub failed_logins_per_minute: Option<u32>,
    /// Milliseconds between heartbeats (0 = off).
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds of silence after which a client is dropped.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Milliseconds a new connection has for its TLS handshake and login.
    pub handshake_timeout_ms: Option<u64>,
    /// Largest control frame in bytes.
    pub max_frame_len: Option<usize>,
}

impl LimitsSpec {
    /// Applies the keys that are set to `config`.
    pub fn apply(&self, config: &mut crate::ServerConfig) {
        let l = &mut config.limits;
        let ms = std::time::Duration::from_millis;
        set(&mut l.max_clients, self.max_clients);
        set(&mut l.max_handshakes, self.max_handshakes);
        set(&mut l.max_handshakes_per_ip, self.max_handshakes_per_ip);
        set(&mut l.max_tunnels_per_client, self.max_tunnels_per_client);
        set(&mut l.max_streams_per_client, self.max_streams_per_client);
        set(&mut l.max_streams, self.max_streams);
        set(&mut l.max_pending_visitors, self.max_pending_visitors);
        set(&mut l.max_visitors_per_ip, self.max_visitors_per_ip);
        if let Some(secs) = self.visitor_idle_timeout_secs {
            config.relay.idle_timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
        }
        set(
            &mut l.max_buffered_bytes,
            self.max_buffered_bytes.map(|b| b.0),
        );
        set(
            &mut l.failed_logins_per_minute,
            self.failed_logins_per_minute,
        );
        set(
            &mut l.heartbeat_interval,
            self.heartbeat_interval_ms.map(ms),
        );
        set(&mut l.heartbeat_timeout, self.heartbeat_timeout_ms.map(ms));
        set(
            &mut config.handshake_timeout,
            self.handshake_timeout_ms.map(ms),
        );
        set(&mut config.max_frame_len, self.max_frame_len);
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

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
    /// Counters and gauges for Prometheus (needs `metrics_listen`).
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
        /// The endpoint, `http://host[:port][/path]`.
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
    },
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

/// A byte count written with an optional unit: `65536`, `64KiB`, `10MiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a byte size (like 65536, 64KiB or 10MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{s}' (use B, KB, KiB, MB, MiB, GB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{s}' is too large"))
    }
}

/// Why the config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable, malformed TOML, a bad value or an unknown field (naming the line).
    #[error(transparent)]
    File(#[from] FileError),
    /// A `[[hooks]]` table is not a valid hook.
    #[error("config {path}: line {line}: hook #{index}: {message}")]
    Hook {
        /// The file.
        path: PathBuf,
        /// The line of the table's `[[hooks]]` header.
        line: usize,
        /// Its position in the chain, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A `${VAR}` names an unset environment variable.
    #[error("config {path}: {field} refers to ${{{var}}}, which is not set")]
    MissingEnv {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// The variable.
        var: String,
    },
    /// A value is valid TOML but unusable.
    #[error("config {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(&config_file::read(path)?, path)
    }

    /// Parses TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        let mut settings: Settings = config_file::parse(text, path)?;
        if let Some(token) = &settings.token {
            let token = expand_env(token.expose()).map_err(|var| ConfigError::MissingEnv {
                path: path.to_owned(),
                field: "token",
                var,
            })?;
            settings.token = Some(Secret::new(token));
        }
        let hooks = std::mem::take(&mut settings.hooks)
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let line = text[..table.span().start].matches('\n').count() + 1;
                toml::Value::Table(table.into_inner())
                    .try_into::<HookSpec>()
                    .map_err(|e| ConfigError::Hook {
                        path: path.to_owned(),
                        line,
                        index: i + 1,
                        message: e.message().to_owned(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(FileConfig { settings, hooks })
    }
}

pub(crate) use reitunnel_transport::cli::expand_env;
use reitunnel_transport::config_file::{self, FileError};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        FileConfig::parse(text, Path::new("server.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn every_hook_kind_parses_in_order() {
        let cfg = parse(
            r#"
listen = "127.0.0.1:7000"
allow_ports = "20000-20100"
[[hooks]]
kind = "rate_limit"
per_client_bytes_per_sec = "10MiB"
visitors_per_ip_per_sec = 50
[[hooks]]
kind = "quota"
bytes = "1GiB"
[[hooks]]
kind = "meter"
interval_secs = 5
sinks = ["log", "events"]
[[hooks]]
kind = "audit"
path = "/tmp/audit.jsonl"
[[hooks]]
kind = "log"
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.settings.allow_ports,
            Some("20000-20100".parse().unwrap())
        );
        let kinds: Vec<_> = cfg
            .hooks
            .iter()
            .map(|h| {
                format!("{h:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, ["RateLimit", "Quota", "Meter", "Audit", "Log"]);
        assert!(matches!(
            cfg.hooks[0],
            HookSpec::RateLimit {
                per_client_bytes_per_sec: Some(ByteSize(10485760)),
                ..
            }
        ));
        assert!(matches!(
            cfg.hooks[1],
            HookSpec::Quota {
                bytes: ByteSize(1073741824),
                period_secs: 86_400
            }
        ));
    }

    #[test]
    fn unknown_kind_field_and_bad_values_name_the_line() {
        let e =
            parse("[[hooks]]\nkind = \"log\"\n\n[[hooks]]\nkind = \"telepathy\"\n").unwrap_err();
        assert!(
            e.contains("line 4: hook #2: unknown variant `telepathy`"),
            "{e}"
        );
        // Errors inside a hook table name that table's header line.
        let e = parse("[[hooks]]\nkind = \"log\"\n[[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\nperiod = 5\n")
            .unwrap_err();
        assert!(
            e.contains(
                "line 3: hook #2: unknown field `period`, expected `bytes` or `period_secs`"
            ),
            "{e}"
        );
        let e = parse("name = \"x\"\nallow_ports = \"20000-abc\"\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("'abc' is not a port"),
            "{e}"
        );
        let e =
            parse("[[hooks]]\nkind = \"rate_limit\"\nper_client_bytes_per_sec = \"10 parsecs\"\n")
                .unwrap_err();
        assert!(e.contains("line 1: hook #1: unknown unit 'parsecs'"), "{e}");
        let e = parse("lisen = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("unknown field `lisen`"),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let cfg = parse(
            "token = \"tok-111\"\n[[hooks]]\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"hook-222\"\n\
             [[hooks]]\nkind = \"policy\"\n[hooks.clients.alice]\ntoken = \"alice-333\"\n",
        )
        .unwrap();
        let mut server =
            crate::ServerConfig::new("127.0.0.1:0".parse().unwrap(), cfg.settings.token.clone());
        cfg.settings.limits.apply(&mut server);
        let shown = format!("{cfg:?} {server:?}");
        for secret in ["tok-111", "hook-222", "alice-333"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("MASKED"));
    }

    #[test]
    fn the_example_config_loads_and_builds_its_hooks() {
        std::env::set_var("REITUNNEL_TOKEN", "example");
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/config/server.toml"
        ));
        let cfg = FileConfig::load(path).unwrap();
        let mut server = crate::ServerConfig::new("127.0.0.1:0".parse().unwrap(), None);
        cfg.settings.limits.apply(&mut server);
        assert_eq!(
            server.limits,
            crate::Limits::default(),
            "the example lists the defaults"
        );
        let s = &cfg.settings;
        assert_eq!(
            (s.drain_timeout_secs, s.port_lease_secs),
            (Some(30), Some(30))
        );
        assert_eq!(cfg.hooks.len(), 4);
        let dir = tempfile::tempdir().unwrap();
        let hooks: Vec<HookSpec> = cfg
            .hooks
            .into_iter()
            .map(|h| match h {
                HookSpec::Audit { streams, .. } => HookSpec::Audit {
                    path: dir.path().join("audit.jsonl"),
                    streams,
                },
                other => other,
            })
            .collect();
        let (builder, _bg) =
            crate::hook_config::add_hooks(reitunnel_hooks::HookChain::builder(), &hooks, "t", path)
                .unwrap();
        assert_eq!(
            builder.build().names(),
            ["rate_limit", "quota", "meter", "audit"]
        );
    }

    #[test]
    fn tokens_come_from_the_environment() {
        std::env::set_var("REITUNNEL_TEST_TOKEN_X", "s3cret");
        let cfg = parse("token = \"${REITUNNEL_TEST_TOKEN_X}\"\n").unwrap();
        assert_eq!(
            cfg.settings.token.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        let e = parse("token = \"${REITUNNEL_TEST_UNSET_Y}\"\n").unwrap_err();
        assert_eq!(
            e,
            "config server.toml: token refers to ${REITUNNEL_TEST_UNSET_Y}, which is not set"
        );
    }

    #[test]
    fn webhook_parses_with_defaults() {
        let cfg = parse(
            r#"
[[hooks]]
kind = "webhook"
url = "http://127.0.0.1:8080/reitunnel"
secret = "${REITUNNEL_WEBHOOK_SECRET}"
[[hooks]]
kind = "webhook"
url = "http://hooks.internal/q"
secret = "plain"
events = ["quota.exceeded", "bandwidth.report"]
timeout_secs = 2
retries = 0
streams = true
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.hooks,
            [
                HookSpec::Webhook {
                    url: "http://127.0.0.1:8080/reitunnel".into(),
                    secret: "${REITUNNEL_WEBHOOK_SECRET}".into(),
                    events: vec![],
                    timeout_secs: 5,
                    retries: 3,
                    streams: false,
                },
                HookSpec::Webhook {
                    url: "http://hooks.internal/q".into(),
                    secret: "plain".into(),
                    events: vec!["quota.exceeded".into(), "bandwidth.report".into()],
                    timeout_secs: 2,
                    retries: 0,
                    streams: true,
                },
            ]
        );
        let e = parse("[[hooks]]\nkind = \"webhook\"\nsecret = \"x\"\n").unwrap_err();
        assert!(e.contains("line 1: hook #1: missing field `url`"), "{e}");
    }

    #[test]
    fn metrics_hook_and_endpoint_parse() {
        let cfg =
            parse("metrics_listen = \"127.0.0.1:9100\"\n[[hooks]]\nkind = \"metrics\"\n").unwrap();
        assert_eq!(
            cfg.settings.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            cfg.hooks,
            [HookSpec::Metrics {
                max_client_labels: 100
            }]
        );
    }

    #[test]
    fn sampled_wraps_another_hook() {
        let cfg =
            parse("[[hooks]]\nkind = \"sampled\"\none_in = 8\nhook = { kind = \"metrics\" }\n")
                .unwrap();
        assert_eq!(
            cfg.hooks,
            [HookSpec::Sampled {
                one_in: Some(8),
                every_ms: None,
                hook: Box::new(HookSpec::Metrics {
                    max_client_labels: 100
                })
            }]
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(65536)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("2 MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999GiB"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
    }
}
