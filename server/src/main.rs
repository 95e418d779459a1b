//! `reitunnel-server`: the command-line front of [`reitunnel_server`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_hooks::builtin::{
    BandwidthMeter, Counters, JsonLinesFile, MetricsHook, Secret, TracingHook, Webhook,
};
use reitunnel_hooks::{Hook, HookChain};
use reitunnel_server::file_config::{ByteSize, FileConfig, HookSpec};
use reitunnel_server::hook_config::{Background, HookSet};
use reitunnel_server::{ForwardRule, PortRanges, Reload, Reloader, Server, ServerConfig};
use reitunnel_transport::cli::Signals;
use reitunnel_transport::tls::ServerTls;

/// How long the server waits at exit for webhooks to deliver the last events.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(5);

/// Reitunnel server: clients log in over one multiplexed connection and get
/// public ports that forward visitors to their local services.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-server", version)]
struct Args {
    /// TOML file with any of the options below and the `[[hooks]]` chain; flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker threads: 0 = one per core, 1 = a single-threaded runtime.
    #[arg(long, value_name = "N", default_value_t = 0, env = "REITUNNEL_THREADS")]
    threads: usize,
    /// Address clients connect to [default: 0.0.0.0:7000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Shared secret every client must prove (never sent in clear).
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// Ports clients may open, e.g. `20000-20100,30000` [default: 1024-65535].
    #[arg(long, value_name = "RANGES")]
    allow_ports: Option<PortRanges>,
    /// Target `-L` clients may reach, `HOST:PORTS` (`db.internal:5432`, `*.internal:*`,
    /// `10.0.0.0/8:22`); repeatable [default: none].
    #[arg(long, value_name = "RULE")]
    allow_forward: Vec<ForwardRule>,
    /// IP tunnels listen on when the client does not name one [default: 0.0.0.0].
    #[arg(long)]
    bind_ip: Option<IpAddr>,
    /// Server name in events and logs [default: reitunnel].
    #[arg(long)]
    name: Option<String>,
    /// On SIGINT/SIGTERM, seconds open streams may take to finish before they
    /// are closed; a second signal closes them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<u64>,
    /// Seconds a vanished client's public ports stay reserved for its
    /// reconnect, 0 = free them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    port_lease: Option<u64>,
    /// Seconds between metering lines in the log, 0 = never [default: 10].
    #[arg(long)]
    stats_interval: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (adds the metrics hook).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Distinct client names labelled in metrics; later ones share `client="other"`.
    #[arg(long, default_value_t = 100)]
    metrics_client_labels: usize,
    /// Append every event as a JSON line to FILE (an `audit` hook after the file's hooks).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Limit each client to this many bytes/s each way, e.g. `10MiB` (a `rate_limit` hook).
    #[arg(long, value_name = "BYTES")]
    rate_limit: Option<ByteSize>,
    /// Allow each client this many bytes per day, e.g. `50GiB` (a `quota` hook).
    #[arg(long, value_name = "BYTES")]
    quota: Option<ByteSize>,
    /// POST signed events to this http:// URL (a `webhook` hook; needs --webhook-secret).
    #[arg(long, value_name = "URL", requires = "webhook_secret")]
    webhook: Option<String>,
    /// HMAC secret for --webhook.
    #[arg(long, env = "REITUNNEL_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<Secret>,
    /// TLS certificate chain (PEM); with --tls-key, clients must connect with TLS 1.3.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); the certificate's
    /// name becomes the client's name, and replaces the token unless one is set.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Log one in N data chunks at debug level, 0 = none (when the file configures no hooks).
    #[arg(long, default_value_t = 0)]
    log_data_every: u64,
}

/// The hooks the command-line flags ask for, in a fixed order: limits
/// before the quota, notifiers last. They follow the config file's hooks.
fn flag_hooks(args: &Args) -> Vec<HookSpec> {
    let mut hooks = Vec::new();
    if let Some(rate) = args.rate_limit {
        hooks.push(HookSpec::RateLimit {
            per_client_bytes_per_sec: Some(rate),
            per_tunnel_bytes_per_sec: None,
            burst: None,
            streams_per_client_per_sec: None,
            visitors_per_ip_per_sec: None,
            logins_per_ip_per_sec: None,
        });
    }
    if let Some(bytes) = args.quota {
        hooks.push(HookSpec::Quota {
            bytes,
            period_secs: 86_400,
        });
    }
    if let Some(path) = &args.audit_log {
        hooks.push(HookSpec::Audit {
            path: path.clone(),
            streams: false,
        });
    }
    if let (Some(url), Some(secret)) = (&args.webhook, &args.webhook_secret) {
        hooks.push(HookSpec::Webhook {
            url: url.clone(),
            secret: secret.clone(),
            events: Vec::new(),
            timeout_secs: 5,
            retries: 3,
            streams: false,
        });
    }
    hooks
}

/// Everything the server runs with, from the flags over the config file:
/// made at start and again on each SIGHUP.
struct Plan {
    config: ServerConfig,
    /// The file's hooks, then the flags'.
    hooks: Vec<HookSpec>,
    /// The config file (or a placeholder), for messages.
    path: PathBuf,
    stats_interval: u64,
    drain: Duration,
    metrics_listen: Option<SocketAddr>,
}

impl Plan {
    /// Reads the config file (if any) and checks the combination.
    fn load(args: &Args) -> anyhow::Result<Plan> {
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
        if let Some(secs) = args.port_lease.or(s.port_lease_secs) {
            config.port_lease = Duration::from_secs(secs);
        }
        s.limits.apply(&mut config);
        if let Some(name) = args.name.clone().or(s.name) {
            config.name = name;
        }
        if let Some(ip) = args.bind_ip.or(s.bind_ip) {
            config.default_bind_ip = ip;
        }
        if let Some(ports) = args.allow_ports.clone().or(s.allow_ports) {
            config.allow_ports = ports;
        }
        config.allow_forward = if args.allow_forward.is_empty() {
            s.allow_forward
        } else {
            args.allow_forward.clone()
        };
        let mut hooks = file.hooks;
        hooks.extend(flag_hooks(args));
        let metrics_listen = args.metrics_listen.or(s.metrics_listen);
        if metrics_listen.is_none() && hooks.iter().any(is_metrics) {
            anyhow::bail!(
                "the `metrics` hook needs `metrics_listen` in the config file (or --metrics-listen)"
            );
        }
        let plan = Plan {
            config,
            hooks,
            path,
            stats_interval: args.stats_interval.or(s.stats_interval).unwrap_or(10),
            drain: Duration::from_secs(args.drain_timeout.or(s.drain_timeout_secs).unwrap_or(30)),
            metrics_listen,
        };
        plan.check_auth(&plan.config.tls)?;
        Ok(plan)
    }

    /// Every login must have something to prove: a token, a `policy`
    /// hook's per-client tokens, or a client certificate under `tls`
    /// (which a reload cannot change: there the running TLS counts).
    fn check_auth(&self, tls: &Option<ServerTls>) -> anyhow::Result<()> {
        let has_policy = self
            .hooks
            .iter()
            .any(|h| matches!(h, HookSpec::Policy { .. }));
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        match (&self.config.token, has_policy || mtls) {
            (None, false) => anyhow::bail!(
                "a token is required: --token, REITUNNEL_TOKEN, `token` in the config file, a `policy` hook with per-client tokens, or client certificates (--client-ca)"
            ),
            (Some(_), true) if has_policy => anyhow::bail!(
                "a global token and a `policy` hook's per-client tokens exclude each other: drop one"
            ),
            _ => Ok(()),
        }
    }

    /// The settings that differ from `running`'s and that only a restart applies.
    fn restart_only_changes(&self, running: &Plan) -> Vec<&'static str> {
        let (new, old) = (&self.config, &running.config);
        [
            ("listen", new.listen != old.listen),
            ("name", new.name != old.name),
            ("tls_cert, tls_key, client_ca", new.tls != old.tls),
            (
                "[limits]",
                new.limits != old.limits
                    || new.handshake_timeout != old.handshake_timeout
                    || new.max_frame_len != old.max_frame_len,
            ),
            ("port_lease_secs", new.port_lease != old.port_lease),
            ("drain_timeout_secs", self.drain != running.drain),
            (
                "stats_interval",
                self.stats_interval != running.stats_interval,
            ),
            (
                "metrics_listen",
                self.metrics_listen != running.metrics_listen,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

fn is_metrics(spec: &HookSpec) -> bool {
    matches!(spec, HookSpec::Metrics { .. })
}

/// The hook chain: the config's hooks (kept across reloads when their table
/// did not change) between the fixed hooks the binary adds itself.
struct Hooks {
    set: HookSet,
    /// Logs every event when the config names no hooks at all.
    fallback_log: Arc<dyn Hook>,
    /// What `--metrics-listen` adds when the config has no `metrics` hook.
    metrics: Option<Arc<dyn Hook>>,
    /// Feeds the periodic `meter` log line.
    counters: Arc<Counters>,
}

impl Hooks {
    fn new(args: &Args, plan: &Plan) -> anyhow::Result<Hooks> {
        Ok(Hooks {
            set: HookSet::build(&plan.hooks, &plan.config.name, &plan.path)?,
            fallback_log: Arc::new(TracingHook::new(args.log_data_every)),
            metrics: plan
                .metrics_listen
                .map(|_| Arc::new(MetricsHook::new(args.metrics_client_labels)) as Arc<dyn Hook>),
            counters: Arc::new(Counters::new()),
        })
    }

    /// The chain for `plan` with the config's hooks from `set`.
    fn chain(&self, set: &HookSet, plan: &Plan) -> HookChain {
        let mut builder = HookChain::builder();
        if plan.hooks.is_empty() {
            builder = builder.shared(self.fallback_log.clone());
        }
        builder = set.append_to(builder);
        if let Some(metrics) = self
            .metrics
            .as_ref()
            .filter(|_| !plan.hooks.iter().any(is_metrics))
        {
            builder = builder.shared(metrics.clone());
        }
        builder.shared(self.counters.clone()).build()
    }
}

/// What the hooks run in the background, over every reload, held weakly:
/// a meter, audit file or webhook that a reload took out ends with the last
/// hook using it (the server stops such hooks when their last session
/// ends), and what is left is flushed, drained and reported at exit.
#[derive(Default)]
struct Running {
    meters: Vec<(Weak<BandwidthMeter>, tokio::task::JoinHandle<()>)>,
    audit: Vec<Weak<JsonLinesFile>>,
    webhooks: Vec<Weak<Webhook>>,
}

impl Running {
    /// Starts reporters for the meters of `bg` not yet running, takes in
    /// its sinks and forgets those gone.
    fn adopt(&mut self, bg: &Background) {
        self.meters.retain(|(m, _)| m.strong_count() > 0);
        for (meter, every) in &bg.meters {
            if !self
                .meters
                .iter()
                .any(|(m, _)| m.ptr_eq(&Arc::downgrade(meter)))
            {
                self.meters
                    .push((Arc::downgrade(meter), meter.spawn_reporter(*every)));
            }
        }
        add_new(&mut self.audit, &bg.audit);
        add_new(&mut self.webhooks, &bg.webhooks);
    }

    /// The audit files still written to.
    fn audit(&self) -> impl Iterator<Item = Arc<JsonLinesFile>> + '_ {
        self.audit.iter().filter_map(Weak::upgrade)
    }

    /// Last meter reports, webhook drains and drop counts.
    async fn finish(self) {
        for (meter, reporter) in &self.meters {
            if let Some(meter) = meter.upgrade() {
                meter.report_now();
            }
            reporter.abort();
        }
        for hook in self.webhooks.iter().filter_map(Weak::upgrade) {
            if !hook.drain(WEBHOOK_DRAIN).await {
                tracing::warn!(url = hook.url(), "webhook events still pending at exit");
            }
            let h = hook.health();
            tracing::info!(delivered = h.delivered, failed_attempts = h.failed_attempts, dropped = h.dropped,
                healthy = h.healthy, last_error = ?h.last_error, "webhook");
        }
        for audit in self.audit() {
            if audit.dropped() > 0 {
                tracing::warn!(file = %audit.path().display(), dropped = audit.dropped(), "audit lines dropped (queue full)");
            }
        }
    }
}

/// Drops the items of `have` that are gone and adds those of `new` not in it (the same instance).
fn add_new<T>(have: &mut Vec<Weak<T>>, new: &[Arc<T>]) {
    have.retain(|h| h.strong_count() > 0);
    for item in new {
        let item = Arc::downgrade(item);
        if !have.iter().any(|h| h.ptr_eq(&item)) {
            have.push(item);
        }
    }
}

/// SIGHUP: reads the config again and puts the new token, hooks and
/// allow-lists in force for new logins; sessions already logged in keep
/// theirs. On any error nothing changes, and the error has reached the
/// hooks' `on_error`. `running` is the plan the process started with, for
/// the settings only a restart applies.
fn reload(
    args: &Args,
    running: &Plan,
    hooks: &mut Hooks,
    reloader: &Reloader,
) -> anyhow::Result<()> {
    let prepared = Plan::load(args).and_then(|plan| {
        plan.check_auth(&running.config.tls)
            .context("with the TLS settings in force (TLS changes need a restart)")?;
        let set = hooks
            .set
            .rebuild(&plan.hooks, &running.config.name, &plan.path)?;
        Ok((plan, set))
    });
    let (plan, set) = prepared.inspect_err(|e| reloader.report(e.as_ref()))?;
    let chain = hooks.chain(&set, &plan);
    reloader.reload(Reload::from_config(&plan.config, chain))?;
    hooks.set = set;
    tracing::info!(config = %plan.path.display(), hooks = ?reloader.chain().names(), "configuration reloaded: new logins use it, connected clients keep theirs");
    for name in plan.restart_only_changes(running) {
        tracing::warn!(config = %plan.path.display(), "{name} changed: it takes effect only after a restart");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    reitunnel_transport::cli::tune_allocator();
    reitunnel_transport::cli::init_logging();
    let plan = Plan::load(&args)?;
    let mut hooks = Hooks::new(&args, &plan)?;
    let chain = hooks.chain(&hooks.set, &plan);
    tracing::info!(hooks = ?chain.names(), "hook chain");

    let runtime =
        reitunnel_transport::cli::runtime(args.threads).context("starting the async runtime")?;
    runtime.block_on(async move {
        // Handlers first, so a signal during start-up still shuts down cleanly.
        let signals = Signals::install();
        let mut reloads = signals.reloads();
        if let Some(addr) = plan.metrics_listen {
            PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%addr, "metrics at /metrics");
        }
        let server = Server::bind(plan.config.clone(), chain).await?;
        let reloader = server.reloader();
        if plan.stats_interval > 0 {
            tokio::spawn(reitunnel_server::cli::log_counters(
                hooks.counters.clone(),
                Duration::from_secs(plan.stats_interval),
            ));
        }
        let mut background = Running::default();
        background.adopt(hooks.set.background());
        let serving = server.run_graceful(signals.nth(1), signals.nth(2), plan.drain);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                // The server first: its first poll starts the hooks, before any reload.
                biased;
                served = &mut serving => {
                    served?;
                    break;
                }
                Ok(()) = reloads.changed() => {
                    match reload(&args, &plan, &mut hooks, &reloader) {
                        Ok(()) => background.adopt(hooks.set.background()),
                        Err(e) => tracing::error!("reload refused, the previous configuration stays in force: {e:#}"),
                    }
                    // Log rotation: every SIGHUP starts the audit files anew,
                    // retired ones too (sessions from before a reload write there).
                    for file in background.audit() {
                        if let Err(e) = file.reopen() {
                            tracing::error!(file = %file.path().display(), error = %e, "cannot reopen the audit log; still writing to the old file");
                        }
                    }
                }
            }
        }
        background.finish().await;
        Ok(())
    })
}
