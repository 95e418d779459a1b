//! `reitunnel-client`: the command-line front of [`reitunnel_client`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reitunnel_client::file_config::ClientFile;
use reitunnel_client::{Client, ClientConfig, ClientTls, Fingerprint, LocalSpec, RemoteSpec};
use reitunnel_hooks::builtin::{Secret, TracingHook};
use reitunnel_hooks::HookChain;
use reitunnel_transport::cli::Signals;
use reitunnel_transport::tls::file_identity;

/// Reitunnel client: exposes local TCP services through a Reitunnel server.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-client", version)]
struct Args {
    /// TOML file with any of the options below (`remote = [...]` for -R); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The server's control address, `host:port`.
    #[arg(long)]
    server: Option<String>,
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
    /// On SIGINT/SIGTERM, seconds open streams may take to finish; a second
    /// signal closes them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<u64>,
    /// Client certificate (PEM) for servers that require one (mTLS). Implies --tls.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Reverse tunnel `[BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT`; remote port 0 lets the server pick. Repeatable.
    #[arg(short = 'R', long = "remote", value_name = "SPEC")]
    remote: Vec<RemoteSpec>,
    /// Local forward `[BIND_ADDR:]LOCAL_PORT:TARGET_HOST:TARGET_PORT`: listen
    /// here (127.0.0.1 unless named), the server dials the target (it must
    /// be in the server's allow_forward). Repeatable.
    #[arg(short = 'L', long = "local", value_name = "SPEC")]
    local: Vec<LocalSpec>,
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
    let signals = Signals::install();
    let (cfg, tunnels) = match config(args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let chain = HookChain::builder().hook(TracingHook::new(0)).build();
    let client = match Client::connect(cfg, chain).await {
        Ok(client) => client,
        Err(e) => return fail(&e.to_string()),
    };
    let mut opened = Vec::new();
    for spec in tunnels.remote {
        opened.push(client.open_reverse(spec).await.map(|t| ("tunnel", t)));
    }
    for spec in tunnels.local {
        opened.push(client.open_forward(spec).await.map(|t| ("forward", t)));
    }
    for result in opened {
        match result {
            Ok((what, t)) => println!("{what} {} ready: {} -> {}", t.id.0, t.public_addr, t.target),
            Err(e) => {
                let _ = client.shutdown().await;
                return fail(&e.to_string());
            }
        }
    }
    let shutdown = tokio::select! {
        _ = signals.nth(1) => client.shutdown_graceful(tunnels.drain, signals.nth(2)).await,
        _ = client.ended() => client.shutdown().await,
    };
    match shutdown {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// The client's settings and tunnels from the flags over the config file;
/// the name defaults to the certificate's identity.
fn config(args: Args) -> Result<(ClientConfig, Tunnels), String> {
    let file = match &args.config {
        Some(path) => ClientFile::load(path).map_err(|e| e.to_string())?,
        None => ClientFile::default(),
    };
    let server = args
        .server
        .or(file.server)
        .ok_or("the server address is required (--server or `server` in the config file)")?;
    let cert = args.cert.or(file.cert);
    let name = match (args.name.or(file.name), &cert) {
        (Some(name), _) => name,
        (None, Some(cert)) => file_identity(cert).map_err(|e| e.to_string())?,
        (None, None) => "reitunnel-client".to_owned(),
    };
    let token = match (args.token.or(file.token), &cert) {
        (Some(token), _) => token,
        (None, Some(_)) => Secret::new(""),
        (None, None) => {
            return Err("a token is required (--token, REITUNNEL_TOKEN or `token` in the config file), or a client certificate (--cert)".to_owned())
        }
    };
    let remote = if args.remote.is_empty() {
        file.remote
    } else {
        args.remote
    };
    let local = if args.local.is_empty() {
        file.local
    } else {
        args.local
    };
    if remote.is_empty() && local.is_empty() {
        return Err(
            "no tunnels: give -R or -L at least once (or `remote`/`local` in the config file)"
                .to_owned(),
        );
    }
    let mut cfg = ClientConfig::new(server, name, token);
    if let Some(ms) = file.heartbeat_timeout_ms {
        cfg.heartbeat_timeout = Duration::from_millis(ms);
    }
    let ca = args.ca.or(file.ca);
    let fingerprint = args.fingerprint.or(file.fingerprint);
    if args.tls || file.tls || ca.is_some() || fingerprint.is_some() || cert.is_some() {
        cfg.tls = Some(ClientTls {
            ca,
            fingerprint,
            cert,
            key: args.key.or(file.key),
        });
        cfg.server_name = args.server_name.or(file.server_name);
    }
    let drain = Duration::from_secs(args.drain_timeout.or(file.drain_timeout_secs).unwrap_or(30));
    Ok((
        cfg,
        Tunnels {
            remote,
            local,
            drain,
        },
    ))
}

/// The tunnels to open once logged in, and how long open streams may
/// finish at shutdown.
struct Tunnels {
    remote: Vec<RemoteSpec>,
    local: Vec<LocalSpec>,
    drain: Duration,
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
