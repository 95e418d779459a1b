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
mod login;
mod proxy_header;
mod reconcile;
mod session;
mod spec;
mod status;
mod stream;
mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;

use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login, TunnelId};
use std::time::Duration;

use reitunnel_transport::control::Control;
use reitunnel_transport::heartbeat::Heartbeat;
use reitunnel_transport::tls::{client_connector, explain, server_name, Side};
use reitunnel_transport::{spawn_mux, tune};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

pub use backoff::Backoff;
pub use config::{ClientConfig, MAX_FORWARD_STREAMS};
pub use error::{ClientError, TargetError};
pub use proxy_header::ProxyProtocol;
pub use reconcile::{Kind, Report};
pub use reitunnel_transport::tls::{ClientTls, Fingerprint};
pub use spec::{LocalSpec, RemoteSpec, SpecError, Transport};
pub use supervisor::{Supervised, Supervisor};

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
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<(), ClientError>>,
}

impl Client {
    /// Connects (over TLS if configured), logs in and starts the session.
    pub async fn connect(cfg: ClientConfig, chain: HookChain) -> Result<Client, ClientError> {
        let tls = match &cfg.tls {
            Some(settings) => Some((
                client_connector(settings)?,
                server_name(cfg.tls_server_name())?,
            )),
            None => None,
        };
        let deadline = Instant::now() + cfg.login_timeout;
        let timed_out = || ClientError::Timeout {
            server: cfg.server.clone(),
            after: cfg.login_timeout,
        };
        let connected = timeout_at(deadline, TcpStream::connect(&cfg.server))
            .await
            .map_err(|_| timed_out())?;
        let tcp = connected.map_err(|source| ClientError::Connect {
            server: cfg.server.clone(),
            source,
        })?;
        let _ = tune(&tcp);
        let peer = tcp.peer_addr().map_err(|_| ClientError::ConnectionLost)?;
        match tls {
            None => Client::start(tcp, peer, deadline, cfg, chain).await,
            Some((connector, name)) => {
                let tls = timeout_at(deadline, connector.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ClientError::Tls {
                        server: cfg.server.clone(),
                        reason: explain(&e, Side::Client).unwrap_or_else(|| e.to_string()),
                    })?;
                Client::start(tls, peer, deadline, cfg, chain).await
            }
        }
    }

    /// Logs in over an established transport and starts the session task.
    async fn start<S>(
        mut io: S,
        peer: SocketAddr,
        deadline: Instant,
        cfg: ClientConfig,
        chain: HookChain,
    ) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let logged_in = timeout_at(deadline, login::login(&mut io, &cfg))
            .await
            .map_err(|_| ClientError::Timeout {
                server: cfg.server.clone(),
                after: cfg.login_timeout,
            })??;
        let info = Arc::new(ClientInfo::new(
            logged_in.client_id,
            cfg.name.as_str(),
            peer,
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
        let task = tokio::spawn(session::run(session::Parts {
            cfg,
            chain,
            open,
            mux,
            inbound,
            driver,
            control,
            commands: rx,
        }));
        Ok(Client {
            id: logged_in.client_id,
            info,
            commands,
            task,
        })
    }

    /// The id the server gave this session.
    pub fn id(&self) -> ClientId {
        self.id
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
