//! One accepted connection up to a logged-in session: the TLS handshake,
//! the login and the server's admission checks, then [`Session::start`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::{ClientInfo, CloseReason, Login, Reason, Refusal, RefuseCode, Scope};
use reitunnel_proto::auth::new_lane_key;
use reitunnel_proto::login::{ClientHello, JoinRequest, LoginRequest};
use reitunnel_proto::{Frame, Preamble, PREAMBLE_LEN};
use reitunnel_transport::tls::{explain, identity, Side};
use reitunnel_transport::{tune, tune_session, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::handshake::{check_name, read_login};
use crate::limits::Slot;
use crate::proxied::{real_peer, ProxiedError};
use crate::session::{Io, Session};
use crate::{authorize_within, ServerState, SessionError};

/// Serves one accepted connection from its PROXY header (behind a
/// balancer), TLS handshake and login to disconnect. The handshake holds a
/// counted slot (in total and per source IP) and all of it must finish
/// within `handshake_timeout`.
pub(crate) async fn serve(shared: Arc<ServerState>, mut tcp: TcpStream, peer: SocketAddr) {
    let admission = &shared.admission;
    let _ = tune(&tcp);
    // Every connection of a session, not only the one with the control
    // stream and its heartbeats, is found dead within the heartbeat timeout.
    let limits = &shared.config.limits;
    let _ = tune_session(&tcp, limits.heartbeat_interval, limits.heartbeat_timeout);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let trusted = &shared.config.proxy_protocol_from;
    if !trusted.is_empty() && !trusted.iter().any(|net| net.contains(&peer.ip())) {
        return turn_away_untrusted(&shared, tcp, peer).await;
    }
    // The total slot first, so connections waiting on a PROXY header are
    // bounded too; the per-IP one once the real address is known.
    let total = match admission.handshakes.take() {
        Ok(slot) => slot,
        Err(hit) => return shared.pre_login_failed(&SessionError::Limit { peer, hit }),
    };
    let peer = match timeout_at(deadline, real_peer(&mut tcp, peer, trusted)).await {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => return shared.pre_login_failed(&SessionError::Proxied(e)),
        Err(_) => return shared.pre_login_failed(&shared.handshake_timeout(peer)),
    };
    let slots = match admission.handshakes_per_ip.take(peer.ip()) {
        Ok(per_ip) => (total, per_ip),
        Err(hit) => return shared.pre_login_failed(&SessionError::Limit { peer, hit }),
    };
    // An address blocked for failed logins gets no TLS handshake; its
    // handshake slots bound how many such connections it may hold.
    if let Some(wait) = admission.failed_logins.blocked_for(peer.ip()) {
        return turn_away_blocked(&shared, tcp, peer, wait).await;
    }
    match shared.tls.clone() {
        None => admit(shared, tcp, peer, Certificate::None, slots, deadline).await,
        Some(acceptor) => match timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let certificate = match tls.get_ref().1.peer_certificates() {
                    Some([cert, ..]) => Certificate::from_verified(cert),
                    _ => Certificate::None,
                };
                admit(shared, tls, peer, certificate, slots, deadline).await
            }
            Ok(Err(e)) => {
                let reason = explain(&e, Side::Server).unwrap_or_else(|| e.to_string());
                shared.pre_login_failed(&SessionError::Tls { peer, reason });
            }
            Err(_) => shared.pre_login_failed(&shared.handshake_timeout(peer)),
        },
    }
}

/// Turns away a connection that skipped the balancers `proxy_protocol_from`
/// trusts, telling a plain-TCP client why. It takes no total handshake
/// slot, which trusted connections need, only one of its own address's:
/// past `max_handshakes_per_ip` it is closed at once, so untrusted hosts
/// cannot hold more than that each while they are told.
async fn turn_away_untrusted(shared: &ServerState, tcp: TcpStream, peer: SocketAddr) {
    let _slot = match shared.admission.handshakes_per_ip.take(peer.ip()) {
        Ok(slot) => slot,
        Err(hit) => return shared.pre_login_failed(&SessionError::Limit { peer, hit }),
    };
    let e = ProxiedError::Untrusted(peer);
    let message = e.to_string();
    shared.pre_login_failed(&SessionError::Proxied(e));
    turn_away(shared, tcp, RefuseCode::Forbidden, message).await;
}

/// Turns away a connection from an address blocked for failed logins,
/// without a hook call of its own (the failures are counted for the hooks).
async fn turn_away_blocked(shared: &ServerState, tcp: TcpStream, peer: SocketAddr, wait: Duration) {
    let failed_logins = &shared.admission.failed_logins;
    shared.pre_login_failed(&SessionError::Blocked {
        peer,
        per_minute: failed_logins.per_minute(),
        wait,
    });
    let message = shared.blocked_message(peer.ip(), wait);
    turn_away(shared, tcp, RefuseCode::LimitReached, message).await;
}

/// Tells a connection refused before its handshake why, where that is
/// cheap. Plain TCP: after the client's preamble (read, so closing sends no
/// reset that could eat the answer), ours, then the refusal where the
/// challenge would come. TLS would need a handshake, so it is just closed.
async fn turn_away(shared: &ServerState, tcp: TcpStream, code: RefuseCode, message: String) {
    if shared.tls.is_some() {
        return;
    }
    let refusal = Frame::LoginRefused { code, message };
    let mut tcp = tcp;
    let _ = timeout(shared.config.handshake_timeout, async {
        let mut theirs = [0u8; PREAMBLE_LEN];
        tcp.read_exact(&mut theirs).await?;
        let ours = Preamble::answer(&Preamble::decode_and_check(theirs));
        tcp.write_all(&ours.encode()).await?;
        write_frame(&mut tcp, &refusal)
            .await
            .map_err(io::Error::other)?;
        tcp.shutdown().await
    })
    .await;
}

/// What a verified client certificate (mTLS) says about who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Certificate {
    /// None was presented (plain TCP, or TLS without client certificates).
    None,
    /// Its name: the first DNS subject alternative name, else the common name.
    Names(String),
    /// It names no one (only a URI or IP SAN, no CN: SPIFFE certificates,
    /// say). It cannot tell whose it is, so it vouches for no name and the
    /// login is refused: taken as "no name to check", it would let its
    /// holder log in as anyone where the certificate is the only credential.
    Nameless,
}

impl Certificate {
    fn from_verified(der: &[u8]) -> Certificate {
        identity(der).map_or(Certificate::Nameless, Certificate::Names)
    }

    /// The name it vouches for, if any.
    fn name(&self) -> Option<&str> {
        match self {
            Certificate::Names(name) => Some(name),
            Certificate::None | Certificate::Nameless => None,
        }
    }
}

/// Reads the login (or a join), runs the admission checks and the hooks'
/// gate, answers, and runs the session (or the joined connection).
/// `certificate` is the verified client certificate's.
async fn admit<S: Io>(
    shared: Arc<ServerState>,
    mut io: S,
    peer: SocketAddr,
    certificate: Certificate,
    handshake_slots: (Slot, Slot),
    deadline: Instant,
) {
    let cfg = &shared.config;
    let hello = match timeout_at(deadline, read_login(&mut io, peer, cfg.max_frame_len)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return shared.pre_login_failed(&e),
        Err(_) => return shared.pre_login_failed(&shared.handshake_timeout(peer)),
    };
    match hello {
        ClientHello::Login(login) => {
            log_in(
                shared,
                io,
                peer,
                certificate,
                login,
                handshake_slots,
                deadline,
            )
            .await
        }
        ClientHello::Join(join) => {
            join_session(
                shared,
                io,
                peer,
                &certificate,
                &join,
                handshake_slots,
                deadline,
            )
            .await
        }
    }
}

/// A login's checks, gates and answer, then its session.
async fn log_in<S: Io>(
    shared: Arc<ServerState>,
    mut io: S,
    peer: SocketAddr,
    certificate: Certificate,
    login: LoginRequest,
    handshake_slots: (Slot, Slot),
    deadline: Instant,
) {
    let cfg = &shared.config;
    // A name that fails the check reaches logs and hooks only escaped
    // (quoted, control characters spelled out), so it cannot forge log lines.
    let named = check_name(&login.name).map_err(|why| Reason::new(RefuseCode::BadRequest, why));
    let shown = match named {
        Ok(()) => login.name.clone(),
        Err(_) => format!("{:?}", login.name),
    };
    let mut client = ClientInfo::new(shared.ids.client(), shown.as_str(), peer);
    if certificate.name().is_some() {
        client = client.certified();
    }
    let client = Arc::new(client);
    // This login's settings, for the whole session (see the crate docs on reload).
    let live = shared.live();
    let version = login.version;
    let login = Login {
        nonce: &login.nonce,
        proof: &login.proof,
    };
    let checked = named
        .and_then(|()| shared.check_login(&client, &certificate))
        .map_err(|reason| live.chain.refuse(Scope::Client(&client), reason));
    let authorized = async {
        let slot = checked?;
        let ask = Ask::Login {
            client: &client,
            login: &login,
            certificate: certificate.name(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        authorize_within(&live.chain, &ask, left).await?;
        // In a fleet, the name once fleet-wide: taken only by a client
        // whose credentials passed, so no one else can push it out.
        let claim = match &shared.fleet {
            None => None,
            Some(fleet) => Some(
                fleet
                    .claim(&client)
                    .await
                    .map_err(|reason| live.chain.refuse(Scope::Client(&client), reason))?,
            ),
        };
        Ok((slot, claim))
    };
    let authorized = authorized.await;
    // The ban last: only a client whose credentials passed may learn of it.
    let banned = |client: &ClientInfo| shared.check_ban(client);
    let admitted = authorized.and_then(|(slot, claim)| {
        let open = live
            .chain
            .open_client_then(client.clone(), &login, banned)?;
        Ok((slot, claim, open))
    });
    let (client_slot, claim, open) = match admitted {
        Ok(admitted) => admitted,
        Err(Refusal { reason, by }) => {
            tracing::warn!(client = %client.name, %peer, %by, %reason, "login refused");
            return shared.refuse(&mut io, peer, reason, deadline).await;
        }
    };
    // From version 2 the client may add connections to its session.
    let lanes = (version >= 2).then(new_lane_key);
    let answered = async {
        write_frame(&mut io, &shared.login_ok(client.id)).await?;
        if let Some(key) = lanes {
            let max =
                u16::try_from(cfg.limits.max_connections_per_client.max(1)).unwrap_or(u16::MAX);
            write_frame(&mut io, &Frame::Lanes { max, key }).await?;
        }
        Ok::<_, reitunnel_transport::FrameIoError>(())
    };
    if !matches!(timeout_at(deadline, answered).await, Ok(Ok(()))) {
        return open.close(CloseReason::ConnectionLost);
    }
    drop(handshake_slots);
    tracing::info!(client = %client.name, id = %client.id, %peer, certified = client.certified, "client logged in");
    let reason = Session::start(shared, live, open, io, client_slot, lanes).await;
    drop(claim); // the name is free again, fleet-wide
    tracing::info!(client = %client.name, id = %client.id, %reason, last_rtt = ?client.rtt(), "client gone");
}

/// A connection joining a logged-in session: its proof and the session's
/// room checked, it becomes one more lane of the session until it ends. A
/// client certificate (mTLS), if any, must be the session's client's.
async fn join_session<S: Io>(
    shared: Arc<ServerState>,
    mut io: S,
    peer: SocketAddr,
    certificate: &Certificate,
    join: &JoinRequest,
    handshake_slots: (Slot, Slot),
    deadline: Instant,
) {
    let admitted = shared
        .joins
        .admit(join)
        .and_then(|admitted| match certificate.name() {
            Some(name) if name != &*admitted.client.name => Err(Reason::auth_failed(format!(
                "the client certificate is for '{name}', not for session {}'s client",
                join.client_id
            ))),
            _ => Ok(admitted),
        });
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(reason) => {
            // A join racing its session's end is no one's fault.
            if reason.code == RefuseCode::Unavailable {
                tracing::debug!(session = %join.client_id, %peer, %reason, "connection refused to join");
            } else {
                tracing::warn!(session = %join.client_id, %peer, %reason, "connection refused to join");
            }
            return shared.refuse(&mut io, peer, reason, deadline).await;
        }
    };
    let ok = shared.login_ok(join.client_id);
    if !matches!(
        timeout_at(deadline, write_frame(&mut io, &ok)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    drop(handshake_slots);
    let client = &admitted.client;
    let Ok(lane) = admitted.mux.add_lane(io) else {
        return; // the session ended meanwhile
    };
    let lanes = admitted.mux.lanes();
    tracing::debug!(client = %client.name, id = %client.id, %peer, lanes, "connection joined the session");
    let ended = lane.ended().await;
    drop(admitted.slot);
    tracing::debug!(client = %client.name, id = %client.id, %peer, ?ended, "a connection of the session ended");
}

impl ServerState {
    /// `LoginOk` for session `id`, with the heartbeat interval.
    fn login_ok(&self, client_id: reitunnel_proto::ClientId) -> Frame {
        let interval = self.config.limits.heartbeat_interval;
        Frame::LoginOk {
            client_id,
            heartbeat_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// Tells a login or join why it was refused; a wrong credential counts
    /// as a failed login of its address.
    async fn refuse<S: Io>(&self, io: &mut S, peer: SocketAddr, reason: Reason, deadline: Instant) {
        if reason.code == RefuseCode::AuthFailed {
            let failed_logins = &self.admission.failed_logins;
            if let Some(wait) = failed_logins.failed(peer.ip()) {
                tracing::warn!(%peer, ?wait, "too many failed logins; refusing this address for a while");
            }
            if let Some(fleet) = &self.fleet {
                fleet.failed_login(peer.ip(), failed_logins.per_minute());
            }
        }
        let refusal = Frame::LoginRefused {
            code: reason.code,
            message: reason.message.into_owned(),
        };
        let _ = timeout_at(deadline, write_frame(io, &refusal)).await;
    }

    /// A failure before login: logged, and summed up for the hooks.
    fn pre_login_failed(&self, e: &SessionError) {
        self.pre_login.report(&self.live().chain, Scope::Server, e);
    }

    /// What an address blocked for failed logins is told.
    fn blocked_message(&self, ip: IpAddr, wait: Duration) -> String {
        format!(
            "too many failed logins from {ip} (limit failed_logins_per_minute = {}); retry in {}s",
            self.admission.failed_logins.per_minute(),
            wait.as_secs() + 1
        )
    }

    fn handshake_timeout(&self, peer: SocketAddr) -> SessionError {
        SessionError::HandshakeTimeout {
            peer,
            after: self.config.handshake_timeout,
        }
    }

    /// An operator's ban on the client's name, checked after every other
    /// check and gate, so that only a client whose credentials passed is
    /// told its name is banned.
    pub(crate) fn check_ban(&self, client: &ClientInfo) -> Result<(), Reason> {
        match self.roster.banned_for(&client.name) {
            None => Ok(()),
            Some(left) => Err(Reason::forbidden(format!(
                "client '{}' is banned by an operator for another {}s",
                client.name,
                left.as_secs() + u64::from(left.subsec_nanos() > 0)
            ))),
        }
    }

    /// The server's own login checks after the name's syntax, before any
    /// hook: failed-login block, certificate identity, client count. Returns the
    /// client's counted slot.
    fn check_login(&self, client: &ClientInfo, certificate: &Certificate) -> Result<Slot, Reason> {
        let admission = &self.admission;
        if let Some(wait) = admission.failed_logins.blocked_for(client.peer.ip()) {
            let message = self.blocked_message(client.peer.ip(), wait);
            return Err(Reason::new(RefuseCode::LimitReached, message));
        }
        if *certificate == Certificate::Nameless {
            return Err(Reason::auth_failed(
                "the client certificate names no one (no DNS subject alternative name and no \
                 common name), so it cannot vouch for a client name: issue it with a DNS SAN \
                 or CN naming the client"
                    .to_owned(),
            ));
        }
        if let Some(identity) = certificate.name() {
            if *client.name != *identity {
                return Err(Reason::auth_failed(format!(
                    "client name '{}' does not match its certificate, which is for '{identity}'",
                    client.name
                )));
            }
        }
        admission.clients.take().map_err(|hit| {
            let e = SessionError::Limit {
                peer: client.peer,
                hit,
            };
            self.pre_login
                .report(&self.live().chain, Scope::Client(client), &e);
            Reason::new(RefuseCode::Unavailable, format!("server is full: {hit}"))
        })
    }
}
