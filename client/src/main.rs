//! `reitunnel-client`: the command-line front of [`reitunnel_client`].

use std::process::ExitCode;

use clap::Parser;
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::{Secret, TracingHook};
use reitunnel_hooks::HookChain;

/// Reitunnel client: exposes local TCP services through a Reitunnel server.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-client", version)]
struct Args {
    /// The server's control address, `host:port`.
    #[arg(long)]
    server: String,
    /// Shared secret of the server (only an HMAC proof of it is sent).
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    token: String,
    /// Name to log in with (letters, digits, `. _ - @`).
    #[arg(long, default_value = "reitunnel-client")]
    name: String,
    /// Reverse tunnel `[BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT`; remote port 0 lets the server pick. Repeatable.
    #[arg(short = 'R', long = "remote", value_name = "SPEC", required = true)]
    remote: Vec<RemoteSpec>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    reitunnel_transport::cli::tune_allocator();
    reitunnel_transport::cli::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    // Handlers first, so a signal during login still shuts down cleanly.
    let shutdown = reitunnel_transport::cli::shutdown_signal();
    let cfg = ClientConfig::new(args.server, args.name, Secret::new(args.token));
    let chain = HookChain::builder().hook(TracingHook::new(0)).build();
    let client = match Client::connect(cfg, chain).await {
        Ok(client) => client,
        Err(e) => return fail(&e.to_string()),
    };
    for spec in args.remote {
        match client.open_reverse(spec).await {
            Ok(t) => println!("tunnel {} ready: {} -> {}", t.id.0, t.public_addr, t.target),
            Err(e) => {
                let _ = client.shutdown().await;
                return fail(&e.to_string());
            }
        }
    }
    tokio::select! {
        _ = shutdown => {}
        _ = client.ended() => {}
    }
    match client.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
