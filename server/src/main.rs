//! `reitunnel-server`: the command-line front of [`reitunnel_server`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use reitunnel_hooks::builtin::{Counters, Secret, TracingHook};
use reitunnel_hooks::HookChain;
use reitunnel_server::{PortRanges, Server, ServerConfig};

/// Reitunnel server: clients log in over one multiplexed connection and get
/// public ports that forward visitors to their local services.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-server", version)]
struct Args {
    /// Address clients connect to.
    #[arg(long, default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// Shared secret every client must prove (never sent in clear).
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    token: String,
    /// Ports clients may open, e.g. `20000-20100,30000` (default: 1024-65535).
    #[arg(long, value_name = "RANGES")]
    allow_ports: Option<PortRanges>,
    /// IP tunnels listen on when the client does not name one.
    #[arg(long, default_value = "0.0.0.0")]
    bind_ip: IpAddr,
    /// Server name in events and logs.
    #[arg(long, default_value = "reitunnel")]
    name: String,
    /// Seconds between metering lines in the log (0 = never).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// Log one in N data chunks at debug level (0 = none).
    #[arg(long, default_value_t = 0)]
    log_data_every: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    reitunnel_transport::cli::tune_allocator();
    reitunnel_transport::cli::init_logging();
    if args.token.is_empty() {
        anyhow::bail!("--token (or REITUNNEL_TOKEN) must not be empty");
    }
    let mut config = ServerConfig::new(args.listen, Some(Secret::new(args.token)));
    config.name = args.name;
    config.default_bind_ip = args.bind_ip;
    if let Some(ports) = args.allow_ports {
        config.allow_ports = ports;
    }
    let counters = Arc::new(Counters::new());
    let chain = HookChain::builder()
        .hook(TracingHook::new(args.log_data_every))
        .shared(counters.clone())
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config, chain).await?;
        if args.stats_interval > 0 {
            tokio::spawn(reitunnel_server::cli::log_counters(
                counters,
                Duration::from_secs(args.stats_interval),
            ));
        }
        server
            .run(reitunnel_transport::cli::shutdown_signal())
            .await?;
        Ok(())
    })
}
