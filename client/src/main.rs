//! `reitunnel-client`: the command-line front of [`reitunnel_client`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reitunnel_client::file_config::ClientFile;
use reitunnel_client::{
    Backoff, Client, ClientConfig, ClientError, ClientTls, Fingerprint, LocalSpec, RemoteSpec,
    TunnelReady,
};
use reitunnel_hooks::builtin::{Secret, TracingHook};
use reitunnel_hooks::{HookChain, RefuseCode};
use reitunnel_transport::cli::Signals;
use reitunnel_transport::tls::file_identity;

/// Reitunnel client: exposes local TCP services through a Reitunnel server.
#[derive(Debug, Parser)]
#[command(name = "reitunnel-client", version)]
struct Args {
    /// TOML file with any of the options below (`remote = [...]` for -R); flags win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker threads: 0 = one per core, 1 = a single-threaded runtime.
    #[arg(long, value_name = "N", default_value_t = 0, env = "REITUNNEL_THREADS")]
    threads: usize,
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
    /// After losing the server, reconnect (re-login, same tunnels and ports)
    /// with exponential backoff and jitter up to this many seconds between
    /// attempts; 0 = exit instead [default: 30].
    #[arg(long, value_name = "SECS")]
    reconnect_max: Option<u64>,
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
    let runtime = match reitunnel_transport::cli::runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    // Handlers first, so a signal during login still shuts down cleanly.
    let signals = Signals::install();
    let mut reloads = signals.reloads();
    let (cfg, mut tunnels) = match config(&args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let chain = HookChain::builder().hook(TracingHook::new(0)).build();
    let mut backoff = Backoff::new(tunnels.reconnect_max);
    let mut connected_once = false;
    loop {
        let error = match session(&args, &cfg, &chain, &mut tunnels, &signals, &mut reloads).await {
            Ended::Stopped(result) => return result,
            Ended::Lost { error, worked } => {
                if worked {
                    connected_once = true;
                    backoff.reset();
                }
                error
            }
        };
        // The first connection must work (a typo should not loop forever);
        // a refused login is final; anything else is retried.
        let permanent = matches!(
            error,
            ClientError::LoginRefused { .. } | ClientError::TlsSettings(_)
        );
        if !connected_once || permanent || tunnels.reconnect_max.is_zero() {
            return fail(&error.to_string());
        }
        let wait = backoff.next_delay();
        tracing::warn!(%error, attempt = backoff.attempts(), ?wait, "disconnected; reconnecting");
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = signals.nth(1) => return ExitCode::SUCCESS,
                _ = &mut sleep => break,
                // Offline: the new list is what the next login opens.
                Ok(()) = reloads.changed() => reload(&args, &cfg, &mut tunnels, None).await,
            }
        }
    }
}

/// How one connection ended.
enum Ended {
    /// By a signal: the exit code is final.
    Stopped(ExitCode),
    /// Lost or refused; `worked` if it logged in and opened every tunnel.
    Lost { error: ClientError, worked: bool },
}

/// One connection: log in, open every tunnel, then serve until a signal
/// or the loss of the connection, applying config reloads (SIGHUP) on the
/// way. Tunnels that worked keep their port for the next connection (the
/// server holds it on a lease meanwhile).
async fn session(
    args: &Args,
    cfg: &ClientConfig,
    chain: &HookChain,
    tunnels: &mut Tunnels,
    signals: &Signals,
    reloads: &mut tokio::sync::watch::Receiver<u32>,
) -> Ended {
    let lost = |error| Ended::Lost {
        error,
        worked: false,
    };
    let connected = tokio::select! {
        _ = signals.nth(1) => return Ended::Stopped(ExitCode::SUCCESS),
        connected = Client::connect(cfg.clone(), chain.clone()) => connected,
    };
    let client = match connected {
        Ok(client) => client,
        Err(e) => return lost(e),
    };
    let opened = async {
        open_all(&client, &mut tunnels.remote).await?;
        open_all(&client, &mut tunnels.local).await
    };
    if let Err(e) = opened.await {
        let _ = client.shutdown().await;
        return lost(e);
    }
    loop {
        tokio::select! {
            _ = signals.nth(1) => {
                let result = client.shutdown_graceful(tunnels.drain, signals.nth(2)).await;
                return Ended::Stopped(match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e.to_string()),
                });
            }
            _ = client.ended() => return Ended::Lost {
                error: client.shutdown().await.err().unwrap_or(ClientError::ConnectionLost),
                worked: true,
            },
            Ok(()) = reloads.changed() => reload(args, cfg, tunnels, Some(&client)).await,
        }
    }
}

/// SIGHUP: reads the config again and applies the tunnel lists: tunnels no
/// longer listed close (with their streams), new ones open, unchanged ones
/// are not touched. A broken file changes nothing. Other settings (server,
/// name, token, TLS) apply only after a restart.
async fn reload(args: &Args, cfg: &ClientConfig, tunnels: &mut Tunnels, client: Option<&Client>) {
    let (new_cfg, new) = match config(args) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("reload refused, the current tunnels stay as they are: {e}");
            return;
        }
    };
    if format!("{new_cfg:?}") != format!("{cfg:?}") || new_cfg.token.expose() != cfg.token.expose()
    {
        tracing::warn!("connection settings changed (server, name, token or TLS): they take effect only after a restart");
    }
    apply(client, &mut tunnels.remote, new.remote).await;
    apply(client, &mut tunnels.local, new.local).await;
    tracing::info!(
        remote = tunnels.remote.len(),
        local = tunnels.local.len(),
        "configuration reloaded"
    );
}

/// Makes `list` the tunnels of `wanted`: closes those no longer asked for,
/// opens the new ones (if connected; otherwise the next login does), keeps
/// the rest as they are.
async fn apply<S: Spec>(
    client: Option<&Client>,
    list: &mut Vec<Wanted<S>>,
    wanted: Vec<Wanted<S>>,
) {
    let mut kept = Vec::with_capacity(wanted.len());
    let mut spare = std::mem::take(list);
    for new in wanted {
        match spare.iter().position(|w| w.written == new.written) {
            Some(at) => kept.push(spare.remove(at)),
            None => kept.push(new),
        }
    }
    let mut freed = Vec::new();
    for gone in spare {
        if let (Some(client), Some(ready)) = (client, gone.ready) {
            match client.close_tunnel(ready.id).await {
                Ok(()) => {
                    freed.push(ready.public_addr.port());
                    println!(
                        "{} {} closed: {} -> {}",
                        S::WHAT,
                        ready.id.0,
                        ready.public_addr,
                        ready.target
                    );
                }
                Err(e) => tracing::warn!(error = %e, tunnel = ready.id.0, "closing a tunnel"),
            }
        }
    }
    if let Some(client) = client {
        for wanted in kept.iter_mut().filter(|w| w.ready.is_none()) {
            let mut opened = wanted.open(client).await;
            // A tunnel moved to another target on the same port: the port is
            // let go a moment after the close was sent (by the server for
            // -R, by our listener task for -L), so retry briefly.
            let reused = freed.contains(&wanted.written.port());
            for _ in 0..PORT_RELEASE_TRIES {
                match &opened {
                    Err(e) if reused && port_still_closing(e) => {
                        tokio::time::sleep(PORT_RELEASE_WAIT).await;
                        opened = wanted.open(client).await;
                    }
                    _ => break,
                }
            }
            if let Err(e) = opened {
                // A refused new tunnel is reported and left out; one cut by a
                // lost connection stays for the next login to open.
                eprintln!("error: {e}");
                if is_refusal(&e) {
                    wanted.refused = true;
                }
            }
        }
        kept.retain(|w| !w.refused);
    }
    *list = kept;
}

/// How often, and how far apart, a reload retries opening a tunnel on a
/// port it just closed.
const PORT_RELEASE_TRIES: usize = 50;
const PORT_RELEASE_WAIT: Duration = Duration::from_millis(20);

/// A failure that means the port is still taken.
fn port_still_closing(e: &ClientError) -> bool {
    match e {
        ClientError::LocalListen { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
        ClientError::TunnelRefused { code, .. } => *code == RefuseCode::Unavailable,
        _ => false,
    }
}

/// The server, a local hook or the OS said no to this tunnel (rather than
/// the connection failing).
fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::TunnelRefused { .. }
            | ClientError::LocalListen { .. }
            | ClientError::RefusedLocally { .. }
    )
}

/// Opens every tunnel of `list` in a new session, each on the port it had.
async fn open_all<S: Spec>(client: &Client, list: &mut [Wanted<S>]) -> Result<(), ClientError> {
    for wanted in list {
        wanted.ready = None;
        wanted.open(client).await?;
    }
    Ok(())
}

/// A tunnel the user asked for.
struct Wanted<S> {
    /// As written in the flags or the file, to tell on reload whether it changed.
    written: S,
    /// The port it got the first time, asked for again after a reconnect
    /// (the server's lease keeps it meanwhile); 0 until then.
    port: u16,
    /// Open in the current session.
    ready: Option<TunnelReady>,
    /// Refused when a reload added it: dropped from the list.
    refused: bool,
}

impl<S: Spec> Wanted<S> {
    fn new(written: S) -> Self {
        Wanted {
            written,
            port: 0,
            ready: None,
            refused: false,
        }
    }

    async fn open(&mut self, client: &Client) -> Result<(), ClientError> {
        let mut spec = self.written.clone();
        if self.port != 0 {
            spec.set_port(self.port);
        }
        let t = spec.open(client).await?;
        self.port = t.public_addr.port();
        println!(
            "{} {} ready: {} -> {}",
            S::WHAT,
            t.id.0,
            t.public_addr,
            t.target
        );
        self.ready = Some(t);
        Ok(())
    }
}

/// `-R` and `-L` specs, opened alike.
trait Spec: Clone + PartialEq {
    /// The word in the client's output lines.
    const WHAT: &'static str;
    /// The port as written (0: any).
    fn port(&self) -> u16;
    fn set_port(&mut self, port: u16);
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError>;
}

impl Spec for RemoteSpec {
    const WHAT: &'static str = "tunnel";
    fn port(&self) -> u16 {
        self.bind.port()
    }
    fn set_port(&mut self, port: u16) {
        self.bind.set_port(port);
    }
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError> {
        client.open_reverse(self).await
    }
}

impl Spec for LocalSpec {
    const WHAT: &'static str = "forward";
    fn port(&self) -> u16 {
        self.bind.port()
    }
    fn set_port(&mut self, port: u16) {
        self.bind.set_port(port);
    }
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError> {
        client.open_forward(self).await
    }
}

/// The client's settings and tunnels from the flags over the config file;
/// the name defaults to the certificate's identity.
fn config(args: &Args) -> Result<(ClientConfig, Tunnels), String> {
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
    let remote = if args.remote.is_empty() {
        file.remote
    } else {
        args.remote.clone()
    };
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
    if let Some(ms) = file.heartbeat_timeout_ms {
        cfg.heartbeat_timeout = Duration::from_millis(ms);
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
    Ok((
        cfg,
        Tunnels {
            remote: remote.into_iter().map(Wanted::new).collect(),
            local: local.into_iter().map(Wanted::new).collect(),
            drain,
            reconnect_max,
        },
    ))
}

/// The tunnels to open once logged in, how long open streams may finish
/// at shutdown, and the longest wait between reconnect attempts.
struct Tunnels {
    remote: Vec<Wanted<RemoteSpec>>,
    local: Vec<Wanted<LocalSpec>>,
    drain: Duration,
    reconnect_max: Duration,
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
