//! The server program: everything `reitunnel-server` does between parsing
//! its flags and exiting, as a library so that tests run it in-process.
//!
//! [`Args`] are the flags. `settings.rs` lays them over the config file
//! and checks the whole; `chain.rs` builds the hook chain from it;
//! [`App::bind`] starts the server and [`App::run`] serves until a stop
//! signal, putting the config file in force again on each SIGHUP
//! (`reload.rs`); `sinks.rs` follows what the hooks run in the background
//! and finishes it at exit.
//!
//! ```no_run
//! use clap::Parser;
//! use reitunnel_server::app::{App, Args};
//! use reitunnel_program::Signals;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let args = Args::parse_from(["reitunnel-server", "--listen", "127.0.0.1:0", "--token", "s3cret"]);
//! let app = App::bind(args).await?;
//! println!("clients connect to {}", app.local_addr());
//! app.run(Signals::install()).await
//! # }
//! ```

mod admin;
mod args;
mod chain;
mod cluster;
mod meter_log;
mod reload;
mod settings;
mod sinks;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reitunnel_program::Signals;
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

use admin::{AdminParts, Endpoint, Feed};
pub use args::Args;
use chain::ChainParts;
use settings::Settings;
use sinks::Sinks;

use crate::Server;

/// Runs the server the flags describe on a runtime of its own until a
/// stop signal (SIGINT, SIGTERM) has been served. The whole binary.
pub fn main(args: Args) -> anyhow::Result<()> {
    let runtime = reitunnel_program::runtime(args.threads).context("starting the async runtime")?;
    runtime.block_on(async move {
        // Handlers first, so a signal during start-up still shuts down cleanly.
        let signals = Signals::install();
        App::bind(args).await?.run(signals).await
    })
}

/// A bound server with the settings, hook chain and sinks it was started
/// with, ready to serve.
pub struct App {
    args: Args,
    /// The settings at start: a reload compares against them to warn about
    /// what only a restart changes.
    settings: Settings,
    parts: ChainParts,
    server: Server,
    /// The HTTP endpoints (metrics alone, the admin API), bound.
    endpoints: Vec<(TcpListener, Arc<Endpoint>)>,
    /// The admin endpoint's state, when it is on.
    admin: Option<Arc<AdminParts>>,
}

/// The process's Prometheus recorder, installed once and shared by every
/// endpoint (and by servers started again in the same process, as tests do).
/// Installed inside the `OnceLock`, so two servers starting at once cannot
/// both try (the second would fail: a process has one recorder); a failure
/// is kept, as a second attempt could only fail the same way.
fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("installing the Prometheus recorder")
}

/// Binds an HTTP endpoint's listener, saying which one failed.
async fn bind_http(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving {what} on {addr}"))
}

impl App {
    /// Reads the settings, builds the hook chain, serves metrics if asked
    /// and binds the control address. Every error names what is wrong.
    pub async fn bind(args: Args) -> anyhow::Result<App> {
        let settings = Settings::load(&args)?;
        let feed = settings.admin_listen.map(|_| Feed::new());
        let parts = ChainParts::new(&args, &settings, feed.clone())?;
        let chain = parts.chain(&parts.set, &settings);
        tracing::info!(hooks = ?chain.names(), "hook chain");
        let mut endpoints = Vec::new();
        if let Some(addr) = settings.metrics_listen {
            let listener = bind_http(addr, "metrics").await?;
            endpoints.push((listener, Endpoint::metrics_only(prometheus()?)));
            tracing::info!(%addr, "metrics at /metrics");
        }
        let server = Server::bind(settings.config.clone(), chain).await?;
        let mut admin = None;
        if let (Some(addr), Some(feed)) = (settings.admin_listen, feed) {
            let listener = bind_http(addr, "the admin API").await?;
            let token = settings.admin_token.clone();
            let state = Arc::new(AdminParts::new(
                server.admin(),
                token.clone(),
                parts.set.background(),
                feed,
            ));
            endpoints.push((listener, Endpoint::admin(prometheus()?, state.clone())));
            tracing::info!(addr = %listener_addr(&endpoints), token = token.is_some(), "admin API and status page");
            admin = Some(state);
        }
        Ok(App {
            args,
            settings,
            parts,
            server,
            endpoints,
            admin,
        })
    }

    /// The admin endpoint's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref()?;
        self.endpoints.last()?.0.local_addr().ok()
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until the first stop signal, then drains (a second one cuts
    /// the drain short); reloads on each reload signal. At exit the
    /// meters report once more and webhooks deliver what is queued.
    pub async fn run(self, signals: Signals) -> anyhow::Result<()> {
        let App {
            args,
            settings,
            mut parts,
            server,
            endpoints,
            admin,
        } = self;
        // Aborted on return, which ends their connections too.
        let mut background: Vec<_> = endpoints
            .into_iter()
            .map(|(listener, endpoint)| AbortOnDropHandle::new(endpoint.serve(listener)))
            .collect();
        if let Some(admin) = &admin {
            background.push(AbortOnDropHandle::new(
                admin.feed.clone().measure(admin.admin.clone()),
            ));
        }
        let mut reloads = signals.reloads();
        let reloader = server.reloader();
        if settings.stats_interval > 0 {
            tokio::spawn(meter_log::log_counters(
                parts.counters.clone(),
                Duration::from_secs(settings.stats_interval),
            ));
        }
        let mut sinks = Sinks::default();
        sinks.adopt(parts.set.background());
        // In a fleet, quotas count every node's bytes.
        let fleet = server.admin();
        fleet.share_quotas(&parts.set.background().quotas);
        let serving = server.run_graceful(signals.nth(1), signals.nth(2), settings.drain);
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
                    let reloaded = reload::reload(&args, &settings, &mut parts, &reloader);
                    if let Ok(reloaded) = &reloaded {
                        sinks.adopt(parts.set.background());
                        fleet.share_quotas(&parts.set.background().quotas);
                        if let Some(admin) = &admin {
                            admin.set_hooks(parts.set.background());
                            admin.set_token(reloaded.admin_token.clone());
                        }
                    }
                    // Log rotation: every SIGHUP starts the audit files anew,
                    // retired ones too (sessions from before a reload write there).
                    for file in sinks.audit() {
                        if let Err(e) = file.reopen() {
                            tracing::error!(file = %file.path().display(), error = %e, "cannot reopen the audit log; still writing to the old file");
                        }
                    }
                    match reloaded {
                        Ok(reloaded) => reload::announce(&reloaded, &settings, &reloader),
                        Err(e) => tracing::error!("reload refused, the previous configuration stays in force: {e:#}"),
                    }
                }
            }
        }
        drop(background);
        sinks.finish().await;
        Ok(())
    }
}

/// The last endpoint's address (for the log line right after binding it).
fn listener_addr(endpoints: &[(TcpListener, Arc<Endpoint>)]) -> String {
    endpoints
        .last()
        .and_then(|(l, _)| l.local_addr().ok())
        .map_or_else(String::new, |a| a.to_string())
}
