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
//! use reitunnel_transport::cli::Signals;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let args = Args::parse_from(["reitunnel-server", "--listen", "127.0.0.1:0", "--token", "s3cret"]);
//! let app = App::bind(args).await?;
//! println!("clients connect to {}", app.local_addr());
//! app.run(Signals::install()).await
//! # }
//! ```

mod args;
mod chain;
mod meter_log;
mod reload;
mod settings;
mod sinks;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_transport::cli::Signals;

pub use args::Args;
use chain::ChainParts;
use settings::Settings;
use sinks::Sinks;

use crate::Server;

/// Runs the server the flags describe on a runtime of its own until a
/// stop signal (SIGINT, SIGTERM) has been served. The whole binary.
pub fn main(args: Args) -> anyhow::Result<()> {
    let runtime =
        reitunnel_transport::cli::runtime(args.threads).context("starting the async runtime")?;
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
}

impl App {
    /// Reads the settings, builds the hook chain, serves metrics if asked
    /// and binds the control address. Every error names what is wrong.
    pub async fn bind(args: Args) -> anyhow::Result<App> {
        let settings = Settings::load(&args)?;
        let parts = ChainParts::new(&args, &settings)?;
        let chain = parts.chain(&parts.set, &settings);
        tracing::info!(hooks = ?chain.names(), "hook chain");
        if let Some(addr) = settings.metrics_listen {
            PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%addr, "metrics at /metrics");
        }
        let server = Server::bind(settings.config.clone(), chain).await?;
        Ok(App {
            args,
            settings,
            parts,
            server,
        })
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
        } = self;
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
                    match reload::reload(&args, &settings, &mut parts, &reloader) {
                        Ok(()) => sinks.adopt(parts.set.background()),
                        Err(e) => tracing::error!("reload refused, the previous configuration stays in force: {e:#}"),
                    }
                    // Log rotation: every SIGHUP starts the audit files anew,
                    // retired ones too (sessions from before a reload write there).
                    for file in sinks.audit() {
                        if let Err(e) = file.reopen() {
                            tracing::error!(file = %file.path().display(), error = %e, "cannot reopen the audit log; still writing to the old file");
                        }
                    }
                }
            }
        }
        sinks.finish().await;
        Ok(())
    }
}
