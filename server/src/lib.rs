//! The Reitunnel server as a library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use reitunnel_hooks::{builtin::Secret, HookChain};
//! use reitunnel_server::{Server, ServerConfig};
//!
//! let config = ServerConfig::new("127.0.0.1:0".parse()?, Some(Secret::new("s3cret")));
//! let server = Server::bind(config, HookChain::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! [`Server::bind`] takes the address first so tests bind port 0 and read the
//! real port before [`Server::run`] starts accepting. One task per client
//! connection does the login (never in the accept loop), then owns the
//! session: its control stream, its tunnels and, through them, its streams.
//! Closing runs leaf first: streams, then tunnels, then the client, then,
//! on shutdown, `on_server_stop` last.
//!
//! [`Reloader::reload`] swaps the token, the hook chain and the allow-lists
//! while the server runs (the binary does it on SIGHUP). Like an nginx
//! reload, new logins get the new settings and a client already logged in
//! keeps, for its whole session, the settings it logged in with: every hook
//! sees each session it admitted from login to disconnect, tunnels and
//! streams included, so per-client counters and limits stay consistent.
//! Nobody is dropped; a client that reconnects picks up the new settings.

#![forbid(unsafe_code)]

mod accept;
mod admin;
pub mod app;
mod bans;
mod config;
mod config_types;
mod error;
pub mod file_config;
mod fleet;
mod forward;
/// Public wrappers over the login code, for the fuzz targets in `fuzz/`
/// only (the `fuzzing` feature): not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
pub mod hook_config;
mod in_use;
mod joins;
mod lease;
mod limits;
mod prelogin;
mod proxied;
mod public;
mod reloader;
mod roster;
mod session;
mod tunnel;
mod udp_tunnel;
mod windows;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::tally::{Tally, SUM_OVER};
use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, HookChain, Reason, Refusal, RefuseCode, Scope, ServerInfo,
    StreamId, TunnelId, TunnelInfo,
};
use reitunnel_transport::flows::FLOW_FRAMING;
use reitunnel_transport::tls::{server_acceptor, TlsAcceptor};
use reitunnel_transport::{listen, Closer, STREAM_CREDIT};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bans::Bans;
use in_use::HooksInUse;
use lease::Leases;
use limits::{Budget, FailedLogins, PerIp, Slots};
use prelogin::PreLoginErrors;
use roster::Roster;

pub use admin::{Admin, AdminError, ClientStatus, Kicked, TunnelStatus};
pub use bans::BanFileError;
pub use config::{ServerConfig, VISITOR_IDLE_TIMEOUT};
pub use error::{ServerError, SessionError, StreamError};
pub use fleet::{
    FleetConfig, LinkConfig, NodeClient, NodeStatus, NodeTunnel, OnDuplicateLogin, StoreError,
    StoreFailure, QUOTA_FLUSH_BYTES,
};
pub use forward::{ForwardRule, ForwardRuleError};
pub use limits::{LimitHit, Limits};
pub use proxied::{Network, ProxiedError};
pub use reitunnel_hooks::ports::{PortRanges, PortRangesError};
use reloader::LoginSettings;
pub use reloader::{Reload, Reloader};

/// Id counters, unique for the life of the server.
#[derive(Debug, Default)]
struct Ids {
    client: AtomicU64,
    tunnel: AtomicU64,
    stream: AtomicU64,
}

impl Ids {
    fn next(c: &AtomicU64) -> u64 {
        c.fetch_add(1, Ordering::Relaxed) + 1
    }
    fn client(&self) -> ClientId {
        ClientId(Ids::next(&self.client))
    }
    fn tunnel(&self) -> TunnelId {
        TunnelId(Ids::next(&self.tunnel))
    }
    fn stream(&self) -> StreamId {
        StreamId(Ids::next(&self.stream))
    }
}

/// What every task of the server shares.
struct ServerState {
    config: ServerConfig,
    /// Swapped whole by a reload; read once per login (and per error
    /// before a login), never on the data path.
    live: RwLock<Arc<LoginSettings>>,
    /// Taken by reloads (one at a time, so new hooks can start outside the
    /// `live` lock) and by the server's start: true once the hooks started.
    started: Mutex<bool>,
    /// Which hooks the settings of live sessions hold: a hook a reload took
    /// out is stopped when its last session ends.
    in_use: Arc<HooksInUse>,
    info: ServerInfo,
    ids: Ids,
    /// Closed on shutdown; every session's closer is its child.
    root: Arc<Closer<CloseReason>>,
    /// Rotates where the search for a free allowed port starts.
    port_hint: AtomicUsize,
    /// Set when the control listener speaks TLS.
    tls: Option<TlsAcceptor>,
    /// Server-wide counts behind [`Limits`].
    admission: Admission,
    /// Cancelled when a graceful shutdown starts: no new visitors, tunnels or forward streams.
    draining: CancellationToken,
    /// Every live stream holds a token, so a drain knows when they are done.
    streams: TaskTracker,
    /// Public listeners of clients that vanished, kept for their return.
    leases: Arc<Leases>,
    /// Failures before login, summed up for the hooks.
    pre_login: PreLoginErrors,
    /// Live sessions and tunnels, and banned names, for [`Admin`].
    roster: Arc<Roster>,
    /// Sessions that more connections may join.
    joins: joins::Joins,
    /// This server's part of a fleet, if it is a node of one.
    fleet: Option<Arc<fleet::Fleet>>,
}

/// The server-wide counted limits; per-client and per-tunnel ones live with
/// their session and tunnel.
#[derive(Debug)]
struct Admission {
    handshakes: Slots,
    handshakes_per_ip: PerIp,
    visitors_per_ip: PerIp,
    udp_flows_per_ip: PerIp,
    clients: Slots,
    streams: Slots,
    failed_logins: FailedLogins,
    /// `max_buffered_bytes`: every stream and session reserves its share.
    budget: Budget,
}

impl Admission {
    fn new(config: &ServerConfig) -> Admission {
        let limits = &config.limits;
        // What a peer may make one stream hold: its initial yamux window
        // and a full relay buffer each way.
        let per_stream = STREAM_CREDIT + 2 * config.relay.max_chunk;
        // A UDP flow's when it opens: its framing each way. Its queue is
        // reserved as it grows; its stream's window is not, as the flow
        // reads its stream as fast as the stream delivers (sending a
        // datagram does not wait for the visitor to read it).
        let per_flow = FLOW_FRAMING;
        Admission {
            budget: Budget::new(limits.max_buffered_bytes, per_stream, per_flow),
            handshakes: Slots::new("max_handshakes", limits.max_handshakes),
            handshakes_per_ip: PerIp::new("max_handshakes_per_ip", limits.max_handshakes_per_ip),
            visitors_per_ip: PerIp::new("max_visitors_per_ip", limits.max_visitors_per_ip),
            udp_flows_per_ip: PerIp::new("max_udp_flows_per_ip", limits.max_udp_flows_per_ip),
            clients: Slots::new("max_clients", limits.max_clients),
            streams: Slots::new("max_streams", limits.max_streams),
            failed_logins: FailedLogins::new(limits.failed_logins_per_minute),
        }
    }
}

impl ServerState {
    /// The settings for a new login.
    fn live(&self) -> Arc<LoginSettings> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Logs an error from before a login (or of the server itself) and
    /// delivers it to the current hooks; a session's errors go to its own.
    fn report(&self, scope: Scope<'_>, err: &(dyn std::error::Error + Send + Sync + 'static)) {
        report_to(&self.live().chain, scope, err);
    }

    /// `on_server_stop` on the current hooks, then on any other still in use.
    fn stop_hooks(&self) {
        self.in_use.stop_all(&self.live().chain);
    }
}

/// Logs an error and delivers it to `chain`'s hooks.
fn report_to(
    chain: &HookChain,
    scope: Scope<'_>,
    err: &(dyn std::error::Error + Send + Sync + 'static),
) {
    log_error(scope, err);
    chain.error(scope, err);
}

/// Whose refusals a [`Tally`] sums: a session's (streams it opened past its
/// limits, which belong to no tunnel yet) or a tunnel's (its visitors).
pub(crate) enum Owner {
    Client(Arc<ClientInfo>),
    Tunnel(Arc<TunnelInfo>),
}

/// Refusals of `owner`'s, summed per second and reported to `chain` (a
/// log line and `on_error`) at its scope; flush it before its close.
pub(crate) fn refusal_tally(chain: &HookChain, owner: Owner) -> Arc<Tally> {
    let chain = chain.clone();
    Tally::new(SUM_OVER, move |summed| {
        let scope = match &owner {
            Owner::Client(client) => Scope::Client(client),
            Owner::Tunnel(tunnel) => Scope::Tunnel(tunnel),
        };
        report_to(&chain, scope, summed);
    })
}

/// Asks `chain`'s asynchronous gates about `ask` for at most `within`
/// (the handshake timeout: no gate holds a login, a session's control loop
/// or a visitor longer); past it the question is refused, saying so.
async fn authorize_within(
    chain: &HookChain,
    ask: &Ask<'_>,
    within: std::time::Duration,
) -> Result<(), Refusal> {
    match tokio::time::timeout(within, chain.authorize(ask)).await {
        Ok(answer) => answer,
        Err(_) => {
            let why = format!("authorization did not finish within {within:?}");
            let reason = Reason::new(RefuseCode::Unavailable, why);
            Err(chain.refuse(ask.scope(), reason))
        }
    }
}

/// The log line of every error the server reports, delivered to hooks or not.
fn log_error(scope: Scope<'_>, err: &(dyn std::error::Error + Send + Sync + 'static)) {
    tracing::warn!(error = %err, "{scope}");
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<ServerState>,
}

impl Server {
    /// Binds the control listener. If `config.token` is set, a [`TokenAuth`](reitunnel_hooks::builtin::TokenAuth)
    /// hook is put in front of `chain`, so every hook sees the login's verdict.
    pub async fn bind(config: ServerConfig, chain: HookChain) -> Result<Server, ServerError> {
        let listener = listen(config.listen).map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let info = ServerInfo {
            name: config.name.as_str().into(),
            listen: local,
        };
        let bans = Bans::load(config.ban_file.as_deref())?;
        let fleet = config
            .cluster
            .clone()
            .map(|cluster| fleet::Fleet::new(cluster, config.tls.as_ref()))
            .transpose()?;
        let in_use = HooksInUse::new(info.clone());
        let (live, _) = Reload::from_config(&config, chain).into_settings(None, &in_use);
        let tls = match &config.tls {
            None => None,
            Some(settings) => {
                let (acceptor, fingerprint) = server_acceptor(settings)?;
                tracing::info!(%fingerprint, client_certificates = settings.client_ca.is_some(), "TLS 1.3 on; clients may pin this sha256 fingerprint");
                Some(acceptor)
            }
        };
        Ok(Server {
            listener,
            shared: Arc::new(ServerState {
                live: RwLock::new(Arc::new(live)),
                started: Mutex::default(),
                in_use,
                info,
                ids: Ids::default(),
                root: Closer::root(),
                port_hint: AtomicUsize::new(0),
                tls,
                admission: Admission::new(&config),
                draining: CancellationToken::new(),
                streams: TaskTracker::new(),
                leases: Leases::new(config.port_lease),
                pre_login: PreLoginErrors::new(config.pre_login_summary),
                roster: Arc::new(Roster::new(bans)),
                joins: joins::Joins::default(),
                fleet,
                config,
            }),
        })
    }

    /// The control listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.info.listen
    }

    /// A handle to list sessions and tunnels and to kick or close them while the server runs.
    pub fn admin(&self) -> Admin {
        Admin(self.shared.clone())
    }

    /// A handle to change the token, hooks and allow-lists while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.shared.clone())
    }

    /// Serves until `shutdown` resolves, then closes every session (streams,
    /// tunnels, clients, in that order) at once, waits for them, and runs
    /// `on_server_stop`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.run_graceful(shutdown, std::future::pending(), Duration::ZERO)
            .await
    }

    /// Like [`Server::run`], but drains first: once `shutdown` resolves the
    /// server stops accepting clients, visitors, tunnels and forward
    /// streams, and lets open streams finish for up to `drain` (or until
    /// `force` resolves, say a second signal) before closing everything.
    pub async fn run_graceful(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
        drain: Duration,
    ) -> Result<(), ServerError> {
        let Server { listener, shared } = self;
        let info = &shared.info;
        {
            let mut started = shared
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // All or nothing: hooks that started before a failing one are
            // stopped again, so none is left running by a server that never ran.
            shared.live().chain.server_start_or_undo(info)?;
            shared.in_use.started();
            *started = true;
        }
        tracing::info!(listen = %info.listen, "server started");
        if let Some(fleet) = &shared.fleet {
            fleet.run(Admin(shared.clone()));
            tracing::info!(node = fleet.node(), "a node of the fleet");
        }
        let sessions = TaskTracker::new();
        let every = shared.pre_login.interval();
        let mut summary = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = summary.tick() => shared.pre_login.summarize(&shared.live().chain),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        sessions.spawn(accept::serve(shared.clone(), tcp, peer));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        shared.report(Scope::Server, &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        shared.draining.cancel();
        shared.streams.close();
        if !drain.is_zero() {
            tracing::info!(
                streams = shared.streams.len(),
                ?drain,
                "draining: waiting for open streams (a second signal forces)"
            );
            tokio::select! {
                _ = shared.streams.wait() => tracing::info!("drained"),
                _ = tokio::time::sleep(drain) => tracing::warn!(streams = shared.streams.len(), "drain deadline passed; closing open streams"),
                _ = force => tracing::warn!(streams = shared.streams.len(), "forced: closing open streams"),
            }
        }
        tracing::info!("server shutting down");
        shared.root.close(CloseReason::Shutdown);
        sessions.close();
        sessions.wait().await;
        // Tunnels of vanished clients waiting on a lease close last, before the hooks stop.
        shared.leases.end_all();
        if let Some(fleet) = &shared.fleet {
            fleet.finish().await;
        }
        shared.pre_login.summarize(&shared.live().chain);
        shared.stop_hooks();
        tracing::info!("server stopped");
        Ok(())
    }
}
