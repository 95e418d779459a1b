//! The server's command-line flags, and the hooks some of them add.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use reitunnel_hooks::builtin::Secret;

use crate::config_types::ByteSize;
use crate::hook_config::kinds::audit::{self, Audit};
use crate::hook_config::kinds::quota::{self, Quota};
use crate::hook_config::kinds::rate_limit::{self, RateLimit};
use crate::hook_config::kinds::webhook::{self, Webhook};
use crate::hook_config::table::Invalid;
use crate::hook_config::HookTable;
use crate::{ForwardRule, Network, PortRanges};

/// Reitunnel server: clients log in over one multiplexed connection and get
/// public ports that forward visitors to their local services.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-server", version)]
pub struct Args {
    /// TOML file with any of the options below and the `[[hooks]]` chain; flags win over it.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Worker threads: 0 = one per core, 1 = a single-threaded runtime.
    #[arg(long, value_name = "N", default_value_t = 0, env = "REITUNNEL_THREADS")]
    pub(super) threads: usize,
    /// Address clients connect to [default: 0.0.0.0:7000].
    #[arg(long)]
    pub(super) listen: Option<SocketAddr>,
    /// Shared secret every client must prove (never sent in clear).
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    pub(super) token: Option<Secret>,
    /// Ports clients may open, e.g. `20000-20100,30000` [default: 1024-65535].
    #[arg(long, value_name = "RANGES")]
    pub(super) allow_ports: Option<PortRanges>,
    /// Target `-L` clients may reach, `HOST:PORTS` (`db.internal:5432`, `*.internal:*`,
    /// `10.0.0.0/8:22`); repeatable [default: none].
    #[arg(long, value_name = "RULE")]
    pub(super) allow_forward: Vec<ForwardRule>,
    /// Balancer allowed to connect with a PROXY protocol header naming the real
    /// client or visitor, e.g. `10.0.0.0/8`; repeatable. When set, only these
    /// may connect, to the control port and the public ports [default: none].
    #[arg(long, value_name = "NETWORK")]
    pub(super) proxy_protocol_from: Vec<Network>,
    /// IP tunnels listen on when the client does not name one [default: 0.0.0.0].
    #[arg(long)]
    pub(super) bind_ip: Option<IpAddr>,
    /// Server name in events and logs [default: reitunnel].
    #[arg(long)]
    pub(super) name: Option<String>,
    /// On SIGINT/SIGTERM, seconds open streams may take to finish before they
    /// are closed; a second signal closes them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    pub(super) drain_timeout: Option<u64>,
    /// Seconds a vanished client's public ports stay reserved for its
    /// reconnect, 0 = free them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    pub(super) port_lease: Option<u64>,
    /// Seconds between metering lines in the log, 0 = never [default: 10].
    #[arg(long)]
    pub(super) stats_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (adds the metrics hook).
    #[arg(long, value_name = "ADDR")]
    pub(super) metrics_listen: Option<SocketAddr>,
    /// Serve the admin API, live status page and metrics at http://ADDR/ (off by default).
    #[arg(long, value_name = "ADDR")]
    pub(super) admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires; required when --admin is not a loopback address.
    #[arg(long, env = "REITUNNEL_ADMIN_TOKEN", hide_env_values = true)]
    pub(super) admin_token: Option<Secret>,
    /// Keep the admin API's bans in this JSON file, so a restart does not
    /// lift them [default: in memory only].
    #[arg(long, value_name = "FILE")]
    pub(super) ban_file: Option<PathBuf>,
    /// Distinct client names labelled in metrics; later ones share `client="other"`.
    #[arg(long, default_value_t = 100)]
    pub(super) metrics_client_labels: usize,
    /// Append every event as a JSON line to FILE (an `audit` hook after the file's hooks).
    #[arg(long, value_name = "FILE")]
    pub(super) audit_log: Option<PathBuf>,
    /// Limit each client to this many bytes/s each way, e.g. `10MiB` (a `rate_limit` hook).
    #[arg(long, value_name = "BYTES")]
    pub(super) rate_limit: Option<ByteSize>,
    /// Allow each client this many bytes per day, e.g. `50GiB` (a `quota` hook).
    #[arg(long, value_name = "BYTES")]
    pub(super) quota: Option<ByteSize>,
    /// POST signed events to this http:// or https:// URL (a `webhook` hook; needs --webhook-secret).
    #[arg(long, value_name = "URL", requires = "webhook_secret")]
    pub(super) webhook: Option<String>,
    /// HMAC secret for --webhook.
    #[arg(long, env = "REITUNNEL_WEBHOOK_SECRET", hide_env_values = true)]
    pub(super) webhook_secret: Option<Secret>,
    /// TLS certificate chain (PEM); with --tls-key, clients must connect with TLS 1.3.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); the certificate's
    /// name becomes the client's name, and replaces the token unless one is set.
    #[arg(long, value_name = "FILE")]
    pub(super) client_ca: Option<PathBuf>,
    /// Make this server a node of the fleet whose shared state is in this
    /// Redis (`redis://[:password@]host:port[/db]`, `rediss://` for TLS).
    #[arg(
        long,
        value_name = "URL",
        env = "REITUNNEL_CLUSTER_REDIS",
        hide_env_values = true
    )]
    pub(super) cluster_redis: Option<String>,
    /// This node's name in the fleet [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(super) node: Option<String>,
    /// Take links from other nodes here, to serve the visitors they relay
    /// for this node's tunnels (needs --cluster-secret).
    #[arg(long, value_name = "ADDR")]
    pub(super) relay_listen: Option<SocketAddr>,
    /// Where other nodes reach --relay-listen [default: the address bound].
    #[arg(long, value_name = "ADDR")]
    pub(super) relay_advertise: Option<SocketAddr>,
    /// What the fleet's nodes prove to each other on their links (never sent in clear).
    #[arg(long, env = "REITUNNEL_CLUSTER_SECRET", hide_env_values = true)]
    pub(super) cluster_secret: Option<Secret>,
    /// Log one in N data chunks at debug level, 0 = none (when the file configures no hooks).
    #[arg(long, default_value_t = 0)]
    pub(super) log_data_every: u64,
}

/// The hooks the command-line flags ask for, in a fixed order: limits
/// before the quota, notifiers last. They follow the config file's hooks.
pub(super) fn flag_hooks(args: &Args) -> anyhow::Result<Vec<HookTable>> {
    let mut hooks = Vec::new();
    let checked = |flag: &str, table: Result<HookTable, Invalid>| {
        table.map_err(|e| anyhow::anyhow!("{flag}: {}", e.problem))
    };
    if let Some(rate) = args.rate_limit {
        let config = rate_limit::Config {
            per_client_bytes_per_sec: Some(rate),
            ..Default::default()
        };
        hooks.push(checked(
            "--rate-limit",
            HookTable::new::<RateLimit>(config),
        )?);
    }
    if let Some(bytes) = args.quota {
        let config = quota::Config {
            bytes,
            period_secs: quota::default_period(),
        };
        hooks.push(checked("--quota", HookTable::new::<Quota>(config))?);
    }
    if let Some(path) = &args.audit_log {
        let config = audit::Config {
            path: path.clone(),
            streams: false,
        };
        hooks.push(checked("--audit-log", HookTable::new::<Audit>(config))?);
    }
    if let (Some(url), Some(secret)) = (&args.webhook, &args.webhook_secret) {
        let config = webhook::Config::to(url.clone(), secret.clone());
        hooks.push(checked("--webhook", HookTable::new::<Webhook>(config))?);
    }
    Ok(hooks)
}
