//! `reitunnel-server --config server.toml`: every command-line option, plus
//! the ordered `[[hooks]]` tables (docs/EVENTS.md). Values that need
//! checking (port lists, byte sizes, durations) are parsed while the TOML is
//! read, so a bad value, an unknown field or an unknown hook kind is an
//! error that names the line. Flags given on the command line win over the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::PortRanges;
use reitunnel_hooks::builtin::Secret;

#[cfg(test)]
mod tests;

use crate::hook_config::table::TableError;
use crate::hook_config::HookTable;

/// The server's config file.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// Everything but the hooks, as written.
    pub settings: Settings,
    /// The hook chain, in order.
    pub hooks: Vec<HookTable>,
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
    /// `--proxy-protocol-from`: balancers that send a PROXY protocol header,
    /// e.g. `["10.0.0.0/8"]`; only they may connect when set.
    #[serde(default, deserialize_with = "config_file::parsed_list")]
    pub proxy_protocol_from: Vec<crate::Network>,
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
    /// `--admin`: serve the admin API and status page at http://ADDR/.
    pub admin_listen: Option<SocketAddr>,
    /// `--admin-token`: the bearer token the admin API requires; `${VAR}`
    /// takes it from the environment. Required off loopback.
    pub admin_token: Option<Secret>,
    /// `--ban-file`: where operators' bans are kept across restarts.
    pub ban_file: Option<PathBuf>,
    /// `--tls-cert`: certificate chain (PEM); turns TLS on with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `--client-ca`: require client certificates signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `[limits]`: connection, tunnel and stream limits and heartbeats.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// `[cluster]`: this server as a node of a fleet sharing state in Redis.
    pub cluster: Option<ClusterSpec>,
    /// The `[[hooks]]` tables, read raw with the position of each table
    /// and key, so that an error names its line (serde loses positions
    /// once a value is taken out of the document).
    #[serde(default)]
    hooks: Vec<toml::Spanned<RawTable>>,
}

/// The `[cluster]` table (docs/CLUSTER.md); flags win over each key.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// `--cluster-redis`: `redis://…` or `rediss://…`; `${VAR}` takes (part
    /// of) it from the environment.
    pub redis: Option<EndpointUrl>,
    /// `--node`: this node's name [default: the host name].
    pub node: Option<String>,
    /// What every key and channel starts with [default: `reitunnel:`].
    pub key_prefix: Option<String>,
    /// `"local"` or `"refuse"`: logins while Redis cannot be reached.
    pub store_failure: Option<crate::StoreFailure>,
    /// `"replace"` or `"refuse"`: a login whose name is logged in already.
    pub on_duplicate_login: Option<crate::OnDuplicateLogin>,
    /// Seconds a dead node's entries outlive it [default: 10].
    pub entry_ttl_secs: Option<u64>,
    /// `--relay-listen`: where this node takes links from other nodes, to
    /// serve visitors they relay (needs `cluster_secret`).
    pub relay_listen: Option<SocketAddr>,
    /// `--relay-advertise`: where other nodes reach `relay_listen`
    /// [default: the address bound].
    pub relay_advertise: Option<SocketAddr>,
    /// `--cluster-secret`: what nodes prove to each other on their links;
    /// `${VAR}` takes it from the environment.
    pub cluster_secret: Option<Secret>,
    /// Every node's events also go to the stream `<key_prefix>events` in
    /// the fleet's Redis (a `redis` hook added unless the file has one)
    /// [default: true].
    pub events: Option<bool>,
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
    /// Connections per client session, the first included.
    pub max_connections_per_client: Option<usize>,
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
    /// UDP flows one UDP tunnel carries at once.
    pub max_udp_flows_per_tunnel: Option<usize>,
    /// UDP flows at once from one source address or IPv6 /64 (0 = unlimited).
    pub max_udp_flows_per_ip: Option<usize>,
    /// Seconds without a datagram either way after which a UDP flow closes.
    pub udp_flow_idle_secs: Option<u64>,
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
        set(
            &mut l.max_connections_per_client,
            self.max_connections_per_client,
        );
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
            &mut l.max_udp_flows_per_tunnel,
            self.max_udp_flows_per_tunnel,
        );
        set(&mut l.max_udp_flows_per_ip, self.max_udp_flows_per_ip);
        let secs = std::time::Duration::from_secs;
        set(
            &mut l.udp_flow_idle,
            self.udp_flow_idle_secs.map(|s| secs(s.max(1))),
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

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(&config_file::read(path)?, path)
    }

    /// Parses TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        let mut settings: Settings = config_file::parse(text, path)?;
        let cluster_secret = settings.cluster.as_mut().map(|c| &mut c.cluster_secret);
        let mut secrets = vec![
            ("token", &mut settings.token),
            ("admin_token", &mut settings.admin_token),
        ];
        secrets.extend(cluster_secret.map(|s| ("cluster_secret", s)));
        for (field, secret) in secrets {
            if let Some(value) = secret {
                let value = expand_env(value.expose()).map_err(|var| ConfigError::MissingEnv {
                    path: path.to_owned(),
                    field,
                    var,
                })?;
                *secret = Some(Secret::new(value));
            }
        }
        let line_at = |offset: usize| text[..offset].matches('\n').count() + 1;
        let hooks = std::mem::take(&mut settings.hooks)
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let table_line = line_at(raw.span().start);
                let raw = raw.into_inner();
                let key_lines: BTreeMap<String, usize> = raw
                    .iter()
                    .map(|(key, value)| (key.clone(), line_at(value.span().start)))
                    .collect();
                let table = raw.into_iter().map(|(k, v)| (k, v.into_inner())).collect();
                HookTable::parse(table).map_err(|e| {
                    let line = match &e {
                        TableError::Check(invalid) => {
                            key_lines.get(invalid.key).copied().unwrap_or(table_line)
                        }
                        TableError::Serde(_) => table_line,
                    };
                    ConfigError::Hook {
                        path: path.to_owned(),
                        line,
                        index: i + 1,
                        message: e.message().to_owned(),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(FileConfig { settings, hooks })
    }
}

/// A `[[hooks]]` table as written, each key with its position.
type RawTable = BTreeMap<String, toml::Spanned<toml::Value>>;

pub use crate::config_types::{ByteSize, ConfigError, EndpointUrl};
use reitunnel_program::config_file;
use reitunnel_program::expand_env;
