//! A session's extra connections (protocol version 2).
//!
//! Across a long path one TCP connection moves at most its kernel send
//! buffer per round trip, whatever the streams above it do; a loss stalls
//! every stream on it. So once logged in, a client whose server offers it
//! (`Lanes`) adds up to [`ClientConfig::connections`] − 1 connections to
//! the same server, each joining the session with the session's key, and
//! the multiplexer spreads new streams over them (see the transport's
//! `mux`). A connection that ends takes only its streams with it and is
//! dialed again, with backoff, while the session lives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_proto::login::{ClientLogin, LaneGrant};
use reitunnel_proto::ClientId;
use reitunnel_proto::RefuseCode;
use reitunnel_transport::tls::{explain, ClientTlsStream, ServerName, Side, TlsConnector};
use reitunnel_transport::{tune, tune_session, MuxHandle};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};
use tokio_util::either::Either;

use crate::login::hello;
use crate::{Backoff, ClientConfig, ClientError};

/// A connection to the server: plain TCP, or TLS over it.
pub(crate) type Link = Either<TcpStream, ClientTlsStream<TcpStream>>;

/// How the connections of a session are made: to the address its login
/// reached, with TLS where that one had it.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) addr: SocketAddr,
    /// The server as errors and logs name it.
    pub(crate) shown: String,
    pub(crate) tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Connect, TLS and login (or join) must finish within this.
    pub(crate) login_timeout: Duration,
    /// The kernel's probing of each connection: the server's heartbeat
    /// interval and our heartbeat timeout.
    pub(crate) keep_alive: (Duration, Duration),
}

impl Dialer {
    /// Connects, with TLS if on, by `deadline`.
    pub(crate) async fn dial(&self, deadline: Instant) -> Result<Link, ClientError> {
        let timed_out = || ClientError::Timeout {
            server: self.shown.clone(),
            after: self.login_timeout,
        };
        let tcp = timeout_at(deadline, TcpStream::connect(self.addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ClientError::Connect {
                server: self.shown.clone(),
                source,
            })?;
        let _ = tune(&tcp);
        let _ = tune_session(&tcp, self.keep_alive.0, self.keep_alive.1);
        let Some((connector, name)) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        let tls = timeout_at(deadline, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| ClientError::Tls {
                server: self.shown.clone(),
                reason: explain(&e, Side::Client).unwrap_or_else(|| e.to_string()),
            })?;
        Ok(Either::Right(tls))
    }
}

/// Keeps `cfg.connections` − 1 more connections joined to the session of
/// `client_id` (as many as `grant` allows), until the session ends.
pub(crate) async fn keep(
    dialer: Dialer,
    cfg: Arc<ClientConfig>,
    client_id: ClientId,
    grant: LaneGrant,
    mux: MuxHandle,
) {
    let more = cfg
        .connections
        .min(usize::from(grant.max))
        .saturating_sub(1);
    let joins = Arc::new(Joins {
        dialer,
        cfg,
        client_id,
        grant,
        one_at_a_time: Semaphore::new(1),
    });
    let mut lanes = JoinSet::new();
    for _ in 0..more {
        lanes.spawn(one_lane(joins.clone(), mux.clone()));
    }
    while lanes.join_next().await.is_some() {}
}

/// What each of a session's extra connections joins with.
struct Joins {
    dialer: Dialer,
    cfg: Arc<ClientConfig>,
    client_id: ClientId,
    grant: LaneGrant,
    /// One join at a time: a join holds one of the server's handshake
    /// slots for this address while it runs, and a burst of logins from one
    /// address (a NAT, a restart of many clients) must not find them all
    /// taken by joins.
    one_at_a_time: Semaphore,
}

/// One extra connection, dialed again whenever it ends, while the session
/// lives. Gives up on a refusal that will not pass (a wrong key, the
/// server's limit on connections per session).
async fn one_lane(joins: Arc<Joins>, mux: MuxHandle) {
    let shown = &joins.dialer.shown;
    let mut backoff = Backoff::new(Duration::from_secs(5));
    while !mux.is_closed() {
        let Ok(turn) = joins.one_at_a_time.acquire().await else {
            return;
        };
        // The session may have ended while this one waited its turn.
        if mux.is_closed() {
            return;
        }
        match joins.join().await {
            Ok(link) => {
                drop(turn);
                let Ok(lane) = mux.add_lane(link) else {
                    return; // the session is over
                };
                backoff.reset();
                tracing::debug!(server = %shown, lanes = mux.lanes(), "connection added to the session");
                let ended = lane.ended().await;
                tracing::debug!(server = %shown, ?ended, "a connection of the session ended");
            }
            Err(e @ ClientError::LoginRefused { .. }) if !e.is_temporary_refusal() || limit(&e) => {
                tracing::warn!(server = %shown, "no more connections for this session: {e}");
                return;
            }
            // The turn is kept through the wait: a server that failed one
            // join would fail the next, and a server that went away takes
            // its session with it meanwhile.
            Err(e) => tracing::debug!(server = %shown, "adding a connection failed: {e}"),
        }
        tokio::select! {
            _ = mux.closed() => return,
            _ = sleep(backoff.next_delay()) => {}
        }
    }
}

impl Joins {
    /// Dials and joins the session.
    async fn join(&self) -> Result<Link, ClientError> {
        let dialer = &self.dialer;
        let deadline = Instant::now() + dialer.login_timeout;
        let mut link = dialer.dial(deadline).await?;
        let machine = ClientLogin::join(self.client_id, &self.grant.key, self.cfg.max_frame_len);
        let joined = timeout_at(deadline, hello(&mut link, machine, &dialer.shown));
        joined.await.map_err(|_| ClientError::Timeout {
            server: dialer.shown.clone(),
            after: dialer.login_timeout,
        })??;
        Ok(link)
    }
}

/// Whether the server refused for its limit on connections per session,
/// which the next try would hit too.
fn limit(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::LoginRefused {
            code: RefuseCode::LimitReached,
            ..
        }
    )
}
