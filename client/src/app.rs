//! The client program: everything `reitunnel-client` does between parsing
//! its flags and exiting, as a library so that tests run it in-process:
//! its flags over its config file, then a [`Supervisor`] that keeps the
//! tunnels open, showing them as `status.rs` says: a live block on a
//! terminal, a line for each tunnel that opens or closes elsewhere.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use reitunnel_hooks::builtin::{BandwidthMeter, MeterSink, Secret, TracingHook};
use reitunnel_hooks::HookChain;
use reitunnel_program::Signals;
use reitunnel_transport::tls::file_identity;

use crate::file_config::ClientFile;
use crate::reconcile::Report;
use crate::status::{self, Rates, Status};
use crate::{
    ClientConfig, ClientTls, Fingerprint, LocalSpec, ProxyProtocol, RemoteSpec, Supervised,
    Supervisor, Transport,
};

/// Reitunnel client: exposes local TCP services through a Reitunnel server.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-client", version)]
pub struct Args {
    /// TOML file with any of the options below (`remote = [...]` for -R); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Worker threads: 0 = one per core, 1 = a single-threaded runtime.
    #[arg(long, value_name = "N", default_value_t = 0, env = "REITUNNEL_THREADS")]
    pub(crate) threads: usize,
    /// The server's control address, `host:port`; for a fleet several,
    /// separated by commas (`a:7000,b:7000`): each login tries every
    /// address they resolve to, from a random one, moving on from one that
    /// cannot be reached, and a reconnect begins with the next server.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub(crate) server: Option<String>,
    /// Shared secret of the server (only an HMAC proof of it is sent).
    /// Optional with --cert when the server authenticates by certificate alone.
    #[arg(long, env = "REITUNNEL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<Secret>,
    /// Name to log in with (letters, digits, `. _ - @`) [default: the
    /// identity of --cert, else reitunnel-client].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Connect with TLS 1.3, trusting the system roots unless --ca or --fingerprint says otherwise.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Trust only this CA (PEM) for the server's certificate. Implies --tls.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (printed by the server at start), for self-signed servers. Implies --tls.
    #[arg(long, value_name = "SHA256")]
    pub(crate) fingerprint: Option<Fingerprint>,
    /// Name every server's certificate must be valid for [default: the host
    /// of the --server entry connected to].
    #[arg(long, value_name = "NAME")]
    pub(crate) server_name: Option<String>,
    /// After losing the server, or a login it refuses for now (full, a
    /// limit, shutting down), log in again (same tunnels and ports) with
    /// exponential backoff and jitter up to this many seconds between
    /// attempts; 0 = exit instead [default: 30]. A wrong token or a ban exits.
    #[arg(long, value_name = "SECS")]
    pub(crate) reconnect_max: Option<u64>,
    /// On SIGINT/SIGTERM, seconds open streams may take to finish; a second
    /// signal closes them at once [default: 30].
    #[arg(long, value_name = "SECS")]
    pub(crate) drain_timeout: Option<u64>,
    /// TCP (or TLS) connections the session runs over, where the server
    /// allows that many: across a long path each adds its kernel window,
    /// and a loss stalls only the streams of one; 1 = one connection
    /// [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) connections: Option<u16>,
    /// Client certificate (PEM) for servers that require one (mTLS). Implies --tls.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Send each -R target a PROXY protocol header (v1 text, v2 binary) with the
    /// visitor's address before its bytes (a tunnel in the config file may set its own).
    #[arg(long, value_name = "VERSION")]
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
    /// Reverse tunnel `[BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT`; remote port 0 lets the server pick. Repeatable.
    #[arg(short = 'R', long = "remote", value_name = "SPEC")]
    pub(crate) remote: Vec<RemoteSpec>,
    /// Local forward `[BIND_ADDR:]LOCAL_PORT:TARGET_HOST:TARGET_PORT`: listen
    /// here (127.0.0.1 unless named), the server dials the target (it must
    /// be in the server's allow_forward). Repeatable.
    #[arg(short = 'L', long = "local", value_name = "SPEC")]
    pub(crate) local: Vec<LocalSpec>,
}

/// Runs the client the flags describe on a runtime of its own until a stop
/// signal or an error reconnecting cannot cure (see [`Supervisor::run`]):
/// exit status 1 means retrying would not help, so a service manager's
/// restart is for those alone. The whole binary.
pub fn main(args: Args) -> ExitCode {
    let runtime = match reitunnel_program::runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    runtime.block_on(async move {
        // Handlers first, so a signal during login still shuts down cleanly.
        let signals = Signals::install();
        let wanted = match settings(&args) {
            Ok(wanted) => wanted,
            Err(e) => return fail(&e),
        };
        // On a terminal, a status block with live rates from a meter of
        // every tunnel; elsewhere plain lines, and no meter to feed.
        let terminal = std::io::stdout().is_terminal();
        let rates = Arc::new(Rates::default());
        let mut chain = HookChain::builder().hook(TracingHook::new(0));
        let mut redraw = None;
        let status = Arc::new(Mutex::new(Status::new(&wanted, rates.clone(), terminal)));
        if terminal {
            let meter = BandwidthMeter::new(vec![rates as Arc<dyn MeterSink>]);
            chain = chain.shared(meter.clone());
            redraw = Some((
                meter.spawn_reporter(status::EVERY),
                redraw_every_second(status.clone()),
            ));
        }
        let supervisor = Supervisor::new(wanted, chain.build());
        let show = |report: Report<'_>| {
            status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .report(report)
        };
        let result = supervisor.run(signals, || settings(&args), show).await;
        if let Some((reporter, redraw)) = redraw {
            reporter.abort();
            redraw.abort();
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        }
    })
}

/// What to keep up, from the flags over the config file;
/// the name defaults to the certificate's identity.
pub fn settings(args: &Args) -> Result<Supervised, String> {
    let file = match &args.config {
        Some(path) => ClientFile::load(path).map_err(|e| e.to_string())?,
        None => ClientFile::default(),
    };
    let server = args
        .server
        .clone()
        .or(file.server)
        .ok_or("the server address is required (--server or `server` in the config file)")?;
    let cert = args.cert.clone().or(file.cert);
    let name = match (args.name.clone().or(file.name), &cert) {
        (Some(name), _) => name,
        (None, Some(cert)) => file_identity(cert).map_err(|e| e.to_string())?,
        (None, None) => "reitunnel-client".to_owned(),
    };
    let token = match (args.token.clone().or(file.token), &cert) {
        (Some(token), _) => token,
        (None, Some(_)) => Secret::new(""),
        (None, None) => {
            return Err("a token is required (--token, REITUNNEL_TOKEN or `token` in the config file), or a client certificate (--cert)".to_owned())
        }
    };
    let mut remote = if args.remote.is_empty() {
        file.remote
    } else {
        args.remote.clone()
    };
    // The flag covers every TCP tunnel that does not say otherwise.
    let tcp = |s: &&mut RemoteSpec| s.transport == Transport::Tcp;
    for spec in remote
        .iter_mut()
        .filter(tcp)
        .filter(|s| s.proxy_protocol.is_none())
    {
        spec.proxy_protocol = args.proxy_protocol;
    }
    let local = if args.local.is_empty() {
        file.local
    } else {
        args.local.clone()
    };
    if remote.is_empty() && local.is_empty() {
        return Err(
            "no tunnels: give -R or -L at least once (or `remote`/`local` in the config file)"
                .to_owned(),
        );
    }
    let mut cfg = ClientConfig::new(server, name, token);
    // A malformed list stops the client here, not at its first login.
    cfg.servers().map_err(|e| e.to_string())?;
    if let Some(ms) = file.heartbeat_timeout_ms {
        cfg.heartbeat_timeout = Duration::from_millis(ms);
    }
    if let Some(secs) = file.udp_flow_idle_secs {
        cfg.udp_flow_idle = Duration::from_secs(secs.max(1));
    }
    match args.connections.or(file.connections) {
        Some(0) => return Err("connections must be at least 1".to_owned()),
        Some(n) => cfg.connections = usize::from(n),
        None => {}
    }
    let ca = args.ca.clone().or(file.ca);
    let fingerprint = args.fingerprint.or(file.fingerprint);
    if args.tls || file.tls || ca.is_some() || fingerprint.is_some() || cert.is_some() {
        cfg.tls = Some(ClientTls {
            ca,
            fingerprint,
            cert,
            key: args.key.clone().or(file.key),
        });
        cfg.server_name = args.server_name.clone().or(file.server_name);
    }
    let drain = Duration::from_secs(args.drain_timeout.or(file.drain_timeout_secs).unwrap_or(30));
    let reconnect_max =
        Duration::from_secs(args.reconnect_max.or(file.reconnect_max_secs).unwrap_or(30));
    Ok(Supervised {
        client: cfg,
        remote,
        local,
        drain,
        reconnect_max,
    })
}

/// Redraws the status block each second: countdowns and rates move.
fn redraw_every_second(status: Arc<Mutex<Status>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(status::EVERY);
        loop {
            tick.tick().await;
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            status.draw(&mut std::io::stdout().lock());
        }
    })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
