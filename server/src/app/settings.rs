//! The settings the server runs with: its flags over its config file,
//! checked as a whole. Made at start and again on each reload.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reitunnel_hooks::builtin::Secret;
use reitunnel_transport::tls::ServerTls;

use super::Args;
use crate::file_config::FileConfig;
use crate::hook_config::kinds::http_auth::{HttpAuth, WhenUnanswered};
use crate::hook_config::kinds::{metrics::Metrics, policy::Policy, sampled::Sampled};
use crate::hook_config::HookTable;
use crate::ServerConfig;

/// Everything the server runs with, from the flags over the config file:
/// made at start and again on each SIGHUP.
pub(super) struct Settings {
    pub(super) config: ServerConfig,
    /// The file's hooks, then the flags'.
    pub(super) hooks: Vec<HookTable>,
    /// The config file (or a placeholder), for messages.
    pub(super) path: PathBuf,
    pub(super) stats_interval: u64,
    pub(super) drain: Duration,
    pub(super) metrics_listen: Option<SocketAddr>,
    /// Where the admin endpoint listens (a restart changes it).
    pub(super) admin_listen: Option<SocketAddr>,
    /// The token the admin endpoint requires (a reload changes it).
    pub(super) admin_token: Option<Secret>,
}

impl Settings {
    /// Reads the config file (if any) and checks the combination.
    pub(super) fn load(args: &Args) -> anyhow::Result<Settings> {
        let (file, path) = match &args.config {
            Some(path) => (FileConfig::load(path)?, path.clone()),
            None => (FileConfig::default(), PathBuf::from("(no config file)")),
        };
        let s = file.settings;
        let token = args
            .token
            .clone()
            .or(s.token)
            .filter(|t| !t.expose().is_empty());
        let client_ca = args.client_ca.clone().or(s.client_ca);
        let tls = match (
            args.tls_cert.clone().or(s.tls_cert),
            args.tls_key.clone().or(s.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert,
                key,
                client_ca,
            }),
            (None, None) if client_ca.is_some() => {
                anyhow::bail!("client certificates (client_ca) need TLS: give tls_cert and tls_key")
            }
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both tls_cert and tls_key"),
        };
        let listen = args
            .listen
            .or(s.listen)
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7000)));
        let mut config = ServerConfig::new(listen, token);
        config.tls = tls;
        config.ban_file = args.ban_file.clone().or(s.ban_file);
        if let Some(secs) = args.port_lease.or(s.port_lease_secs) {
            config.port_lease = Duration::from_secs(secs);
        }
        s.limits.apply(&mut config);
        let spec_events = s.cluster.as_ref().and_then(|c| c.events);
        config.cluster = super::cluster::fleet(args, s.cluster, &path)?;
        // In a fleet, events and logs name the node unless a name is given.
        let node = config.cluster.as_ref().map(|f| f.node.clone());
        if let Some(name) = args.name.clone().or(s.name).or(node) {
            config.name = name;
        }
        if let Some(ip) = args.bind_ip.or(s.bind_ip) {
            config.default_bind_ip = ip;
        }
        if let Some(ports) = args.allow_ports.clone().or(s.allow_ports) {
            config.allow_ports = ports;
        }
        let balancers = if args.proxy_protocol_from.is_empty() {
            s.proxy_protocol_from
        } else {
            args.proxy_protocol_from.clone()
        };
        config.proxy_protocol_from = balancers.into_iter().map(|net| net.0).collect();
        config.allow_forward = if args.allow_forward.is_empty() {
            s.allow_forward
        } else {
            args.allow_forward.clone()
        };
        let mut hooks = file.hooks;
        hooks.extend(super::args::flag_hooks(args)?);
        if let Some(fleet) = &config.cluster {
            hooks.extend(super::cluster::event_hook(fleet, spec_events, &hooks)?);
        }
        let metrics_listen = args.metrics_listen.or(s.metrics_listen);
        let admin_token = args
            .admin_token
            .clone()
            .or(s.admin_token)
            .filter(|t| !t.expose().is_empty());
        let admin_listen = args.admin.or(s.admin_listen);
        if let Some(addr) = admin_listen {
            check_admin_token(addr, &admin_token)?;
        }
        let settings = Settings {
            admin_listen,
            admin_token,
            config,
            hooks,
            path,
            stats_interval: args.stats_interval.or(s.stats_interval).unwrap_or(10),
            drain: Duration::from_secs(args.drain_timeout.or(s.drain_timeout_secs).unwrap_or(30)),
            metrics_listen,
        };
        if !settings.serves_metrics() && settings.hooks.iter().any(is_metrics) {
            anyhow::bail!(
                "the `metrics` hook needs `metrics_listen` or `admin_listen` in the config file (or --metrics-listen, --admin)"
            );
        }
        settings.check_auth(&settings.config.tls)?;
        Ok(settings)
    }

    /// Whether an HTTP endpoint serves `/metrics`: the metrics port or the admin one.
    pub(super) fn serves_metrics(&self) -> bool {
        self.metrics_listen.is_some() || self.admin_listen.is_some()
    }

    /// Every login must have something to prove: a token, a `policy`
    /// hook's per-client tokens, an `http_auth` service that is asked, or a
    /// client certificate under `tls`
    /// (which a reload cannot change: there the running TLS counts).
    pub(super) fn check_auth(&self, tls: &Option<ServerTls>) -> anyhow::Result<()> {
        let has_policy = self.hooks.iter().any(HookTable::is::<Policy>);
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        // An `http_auth` service is asked about every login (it can check
        // the client's proof of its token itself); but one that lets
        // everyone in when it cannot be reached is no check on its own.
        let services: Vec<_> = self
            .hooks
            .iter()
            .filter_map(HookTable::config::<HttpAuth>)
            .collect();
        let asked = services
            .iter()
            .any(|s| s.on_failure == WhenUnanswered::Deny);
        let other = self.config.token.is_some() || has_policy || mtls;
        if let Some(open) = services
            .iter()
            .find(|s| s.on_failure == WhenUnanswered::Allow)
        {
            if !other && !asked {
                anyhow::bail!(
                    "http_auth {} has on_failure = \"allow\" and is the only login check: whenever the service cannot be reached, anyone would log in as anyone. Set on_failure = \"deny\", or add a token, a `policy` hook or client certificates (--client-ca)",
                    open.url
                );
            }
        }
        match (&self.config.token, has_policy || mtls || asked) {
            (None, false) => anyhow::bail!(
                "a token is required: --token, REITUNNEL_TOKEN, `token` in the config file, a `policy` hook with per-client tokens, an `http_auth` hook, or client certificates (--client-ca)"
            ),
            (Some(_), true) if has_policy => anyhow::bail!(
                "a global token and a `policy` hook's per-client tokens exclude each other: drop one"
            ),
            _ => Ok(()),
        }
    }

    /// The settings that differ from `running`'s and that only a restart applies.
    pub(super) fn restart_only_changes(&self, running: &Settings) -> Vec<&'static str> {
        let (new, old) = (&self.config, &running.config);
        [
            ("listen", new.listen != old.listen),
            ("name", new.name != old.name),
            (
                "proxy_protocol_from",
                new.proxy_protocol_from != old.proxy_protocol_from,
            ),
            ("tls_cert, tls_key, client_ca", new.tls != old.tls),
            (
                "[limits]",
                new.limits != old.limits
                    || new.handshake_timeout != old.handshake_timeout
                    || new.max_frame_len != old.max_frame_len,
            ),
            ("port_lease_secs", new.port_lease != old.port_lease),
            ("ban_file", new.ban_file != old.ban_file),
            ("[cluster]", new.cluster != old.cluster),
            ("drain_timeout_secs", self.drain != running.drain),
            (
                "stats_interval",
                self.stats_interval != running.stats_interval,
            ),
            (
                "metrics_listen",
                self.metrics_listen != running.metrics_listen,
            ),
            ("admin_listen", self.admin_listen != running.admin_listen),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// An admin endpoint off loopback must have a token: anyone who reaches it
/// could otherwise kick clients. At start with the address asked for; on
/// reload with the address the endpoint still listens on.
pub(super) fn check_admin_token(addr: SocketAddr, token: &Option<Secret>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "the admin endpoint {addr} is not on a loopback address: set admin_token (or --admin-token, REITUNNEL_ADMIN_TOKEN) so that not just anyone can kick clients"
        );
    }
    Ok(())
}

/// A `metrics` hook, alone or sampled: the server then adds none of its own.
pub(super) fn is_metrics(table: &HookTable) -> bool {
    table.is::<Metrics>()
        || table
            .config::<Sampled>()
            .is_some_and(|sampled| sampled.hook.0.is::<Metrics>())
}
