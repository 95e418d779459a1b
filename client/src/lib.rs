//! The Reitunnel client as a library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use reitunnel_client::{Client, ClientConfig, RemoteSpec};
//! use reitunnel_hooks::{builtin::Secret, HookChain};
//!
//! let cfg = ClientConfig::new("127.0.0.1:7000", "laptop", Secret::new("s3cret"));
//! let client = Client::connect(cfg, HookChain::default()).await?;
//! let tunnel = client.open_reverse("0:127.0.0.1:3000".parse()?).await?;
//! println!("public address: {}", tunnel.public_addr);
//! client.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The client runs its own hook chain: it sees its session, its tunnels and
//! their streams with the same events and the same open/close guarantees as
//! the server's hooks.

#![forbid(unsafe_code)]

pub mod app;
mod backoff;
mod config;
mod error;
pub mod file_config;
mod forward;
/// Public wrappers over the login code, for the fuzz targets in `fuzz/`
/// only (the `fuzzing` feature): not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod lanes;
mod login;
mod proxy_header;
mod reconcile;
mod servers;
mod session;
mod spec;
mod status;
mod stream;
mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;

use lanes::{Dialer, Link};
use servers::{Candidate, Rotation};

use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login, TunnelId};
use std::time::Duration;

use reitunnel_transport::control::Control;
use reitunnel_transport::heartbeat::Heartbeat;
use reitunnel_transport::tls::{client_connector, server_name, TlsConnector};
use reitunnel_transport::{spawn_mux, MuxHandle};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

pub use backoff::Backoff;
pub use config::{ClientConfig, CONNECTIONS, MAX_FORWARD_STREAMS};
pub use error::{ClientError, TargetError};
pub use proxy_header::ProxyProtocol;
pub use reconcile::{Kind, Report};
pub use reitunnel_transport::tls::{ClientTls, Fingerprint};
pub use servers::{ServerEntry, ServerListError};
pub use spec::{LocalSpec, RemoteSpec, SpecError, Transport};
pub use supervisor::{Supervised, Supervisor};

/// Logs where a login goes: on from the server that just failed it, or,
/// first, on from the one the previous login ended with (lost or refused).
fn announce(candidate: Candidate<'_>, failed: Option<&ClientError>, last: Option<Candidate<'_>>) {
    match (failed, last) {
        (Some(e), _) => tracing::warn!("{e}; trying server {candidate}"),
        (None, Some(last)) if last.addr != candidate.addr => {
            tracing::info!("moving on from server {last} to server {candidate}")
        }
        _ => {}
    }
}

/// A tunnel the server opened for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelReady {
    /// The server's id for it.
    pub id: TunnelId,
    /// Where visitors connect.
    pub public_addr: SocketAddr,
    /// Where the client forwards them.
    pub target: String,
}

pub(crate) enum Command {
    OpenReverse {
        spec: RemoteSpec,
        reply: oneshot::Sender<Result<TunnelReady, ClientError>>,
    },
    OpenForward {
        spec: LocalSpec,
        listener: reitunnel_transport::Bound,
        reply: oneshot::Sender<Result<TunnelReady, ClientError>>,
    },
    CloseTunnel(TunnelId),
    /// Stop taking streams; say goodbye once they are done or at the deadline.
    Drain(Instant),
    Shutdown,
}

/// A logged-in client session. Dropping it ends the session like [`Client::shutdown`].
pub struct Client {
    id: ClientId,
    info: Arc<ClientInfo>,
    /// The session's multiplexer, for its count of connections.
    mux: MuxHandle,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<(), ClientError>>,
}

impl Client {
    /// Connects (over TLS if configured) to one of the servers of
    /// `cfg.server`, logs in and starts the session. Every address the
    /// entries resolve to is tried in turn, from a random one, moving on
    /// when one cannot be reached or spoken to; a refused login ends the
    /// attempt at once (the fleet shares its tokens and bans). When no
    /// server answers, the error is the last one's (each earlier one is
    /// logged as a warning).
    pub async fn connect(cfg: ClientConfig, chain: HookChain) -> Result<Client, ClientError> {
        Client::connect_in_turn(cfg, chain, &mut Rotation::default()).await
    }

    /// [`Client::connect`], beginning where `rotation` says and noting in
    /// it each server tried, so that the next login moves on from the last.
    pub(crate) async fn connect_in_turn(
        cfg: ClientConfig,
        chain: HookChain,
        rotation: &mut Rotation,
    ) -> Result<Client, ClientError> {
        let entries = cfg.servers()?;
        let tls = cfg.tls.as_ref().map(client_connector).transpose()?;
        let candidates = servers::resolve(&entries, cfg.login_timeout).await?;
        let last = rotation.last_in(&candidates).copied();
        let mut failed = None;
        for &candidate in rotation.order(&candidates) {
            announce(candidate, failed.as_ref(), last);
            rotation.trying(candidate.addr);
            match Client::connect_to(candidate, tls.as_ref(), &cfg, &chain).await {
                Ok(client) => {
                    tracing::info!("logged in to server {candidate}");
                    return Ok(client);
                }
                Err(e) if e.fails_over() => failed = Some(e),
                Err(e) => return Err(e),
            }
        }
        // `resolve` gives at least one candidate, so one of them failed.
        Err(failed.unwrap_or(ClientError::ConnectionLost))
    }

    /// Connects to one server and logs in, within `cfg.login_timeout`.
    async fn connect_to(
        candidate: Candidate<'_>,
        tls: Option<&TlsConnector>,
        cfg: &ClientConfig,
        chain: &HookChain,
    ) -> Result<Client, ClientError> {
        let tls = match tls {
            Some(connector) => Some((
                connector.clone(),
                server_name(cfg.tls_server_name(candidate.entry))?,
            )),
            None => None,
        };
        let dialer = Dialer {
            addr: candidate.addr,
            shown: candidate.to_string(),
            tls,
            login_timeout: cfg.login_timeout,
            keep_alive: (cfg.heartbeat_timeout / 3, cfg.heartbeat_timeout),
        };
        let deadline = Instant::now() + cfg.login_timeout;
        let link = dialer.dial(deadline).await?;
        Client::start(link, dialer, deadline, cfg.clone(), chain.clone()).await
    }

    /// Logs in over an established connection and starts the session task.
    async fn start(
        mut io: Link,
        mut dialer: Dialer,
        deadline: Instant,
        cfg: ClientConfig,
        chain: HookChain,
    ) -> Result<Client, ClientError> {
        let logged_in = timeout_at(deadline, login::login(&mut io, &cfg, &dialer.shown))
            .await
            .map_err(|_| ClientError::Timeout {
                server: dialer.shown.clone(),
                after: cfg.login_timeout,
            })??;
        let info = Arc::new(ClientInfo::new(
            logged_in.client_id,
            cfg.name.as_str(),
            dialer.addr,
        ));
        let login = Login {
            nonce: &logged_in.nonce,
            proof: &logged_in.proof,
        };
        let open =
            chain
                .open_client(info.clone(), &login)
                .map_err(|r| ClientError::RefusedLocally {
                    by: r.by,
                    message: r.reason.message.into_owned(),
                })?;
        let (mux, inbound, driver) = spawn_mux(io, yamux::Mode::Client, &cfg.mux);
        let control = mux.open().await.map_err(|_| ClientError::ConnectionLost)?;
        let heartbeat = Heartbeat::new(
            Duration::from_millis(u64::from(logged_in.heartbeat_ms)),
            cfg.heartbeat_timeout,
        );
        let control = Control::new(control, cfg.max_frame_len, heartbeat);
        let (commands, rx) = mpsc::channel(16);
        let interval = Duration::from_millis(u64::from(logged_in.heartbeat_ms));
        dialer.keep_alive = (interval, cfg.heartbeat_timeout);
        let lanes = logged_in
            .lanes
            .filter(|_| cfg.connections > 1)
            .map(|grant| session::MoreLanes {
                dialer,
                client_id: logged_in.client_id,
                grant,
            });
        let lanes_mux = mux.clone();
        let task = tokio::spawn(session::run(session::Parts {
            cfg,
            chain,
            open,
            mux,
            inbound,
            driver,
            control,
            commands: rx,
            lanes,
        }));
        Ok(Client {
            id: logged_in.client_id,
            info,
            mux: lanes_mux,
            commands,
            task,
        })
    }

    /// The id the server gave this session.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The TCP (or TLS) connections the session runs over now: one, and
    /// more as they join (see [`ClientConfig::connections`]).
    pub fn connections(&self) -> usize {
        self.mux.lanes()
    }

    /// The latest heartbeat round trip to the server, once one was measured.
    pub fn round_trip(&self) -> Option<Duration> {
        self.info.rtt()
    }

    /// Asks the server for a public listener forwarding to `spec.target`.
    pub async fn open_reverse(&self, spec: RemoteSpec) -> Result<TunnelReady, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::OpenReverse { spec, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// `-L`: listens on `spec.bind` here and has the server dial
    /// `spec.target` for each connection. `public_addr` in the answer is
    /// the local address; the server refuses targets outside its
    /// `allow_forward` list, with the reason.
    pub async fn open_forward(&self, spec: LocalSpec) -> Result<TunnelReady, ClientError> {
        let local = reitunnel_transport::Bound::bind(spec.bind, spec.transport);
        let listener = local.map_err(|source| ClientError::LocalListen {
            addr: spec.bind,
            source,
        })?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::OpenForward {
                spec,
                listener,
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Closes one tunnel; its open streams are closed too.
    pub async fn close_tunnel(&self, id: TunnelId) -> Result<(), ClientError> {
        self.commands
            .send(Command::CloseTunnel(id))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Says goodbye to the server, closes every stream and tunnel, and waits
    /// until all close events fired.
    pub async fn shutdown(self) -> Result<(), ClientError> {
        let _ = self.commands.send(Command::Shutdown).await;
        self.task.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Graceful shutdown: refuses new streams and closes local `-L`
    /// listeners at once, lets open streams finish for up to `drain` (or
    /// until `force` resolves), then says goodbye like [`Client::shutdown`].
    pub async fn shutdown_graceful(
        self,
        drain: Duration,
        force: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        let _ = self
            .commands
            .send(Command::Drain(Instant::now() + drain))
            .await;
        let Client { commands, task, .. } = self;
        tokio::pin!(task);
        tokio::select! {
            done = &mut task => return done.unwrap_or(Err(ClientError::Closed)),
            _ = force => {}
        }
        let _ = commands.send(Command::Shutdown).await;
        task.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Resolves when the session ended on its own (the server closed it or
    /// the connection was lost); [`Client::shutdown`] then returns why.
    pub async fn ended(&self) {
        self.commands.closed().await
    }
}
