//! `reitunnel-client`: the command-line front of [`reitunnel_client`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use reitunnel_client::{Client, ClientConfig, ClientTls, Fingerprint, RemoteSpec};
use reitunnel_hooks::builtin::{Secret, TracingHook};
use reitunnel_hooks::HookChain;
use reitunnel_transport::tls::file_identity;

/// Reitunnel client: exposes local TCP services through a Reitunnel server.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-client", version)]
struct Args {
    /// The server's control address, `host:port`.
    #[arg(long)]
    server: String,
    /// Shared secret of the server (only an HMAC proof of it is sent).
    /// Optional with --cert when the server authenticates by certificate alone.
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// Name to log in with (letters, digits, `. _ - @`) [default: the
    /// identity of --cert, else reitunnel-client].
    #[arg(long)]
    name: Option<String>,
    /// Connect with TLS 1.3, trusting the system roots unless --ca or --fingerprint says otherwise.
    #[arg(long)]
    tls: bool,
    /// Trust only this CA (PEM) for the server's certificate. Implies --tls.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (printed by the server at start), for self-signed servers. Implies --tls.
    #[arg(long, value_name = "SHA256")]
    fingerprint: Option<Fingerprint>,
    /// Name the server's certificate must be valid for [default: the host of --server].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Client certificate (PEM) for servers that require one (mTLS). Implies --tls.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
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
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => return fail(&e),
    };
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

/// The client's settings from the flags; the name defaults to the certificate's identity.
fn config(args: &Args) -> Result<ClientConfig, String> {
    let name = match (&args.name, &args.cert) {
        (Some(name), _) => name.clone(),
        (None, Some(cert)) => file_identity(cert).map_err(|e| e.to_string())?,
        (None, None) => "reitunnel-client".to_owned(),
    };
    let token = match (&args.token, &args.cert) {
        (Some(token), _) => token.clone(),
        (None, Some(_)) => Secret::new(""),
        (None, None) => return Err(
            "a token is required (--token or REITUNNEL_TOKEN), or a client certificate (--cert)"
                .to_owned(),
        ),
    };
    let mut cfg = ClientConfig::new(args.server.clone(), name, token);
    let tls = args.tls || args.ca.is_some() || args.fingerprint.is_some() || args.cert.is_some();
    if tls {
        cfg.tls = Some(ClientTls {
            ca: args.ca.clone(),
            fingerprint: args.fingerprint,
            cert: args.cert.clone(),
            key: args.key.clone(),
        });
        cfg.server_name = args.server_name.clone();
    }
    Ok(cfg)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
