//! A logged-in client's session: its control loop, and the tunnels and
//! forwards it opens (`open.rs`). The connection got here through `accept.rs`.

mod open;

use open::{Asking, Claimed};

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use reitunnel_hooks::{ClientInfo, CloseReason, Open, Refusal, RefuseCode, Scope, TunnelId};
use reitunnel_proto::auth::LANE_KEY_LEN;
use reitunnel_proto::{CodecError, Frame};
use reitunnel_transport::control::{Control, ControlEnd, Incoming};
use reitunnel_transport::heartbeat::Heartbeat;
use reitunnel_transport::{spawn_mux_pooled, Closer, MuxHandle, MuxStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::forward::{self, ClientStreams, Forwards};
use crate::lease::ClientHold;
use crate::limits::{Slot, Slots};
use crate::roster::AdminCloses;
use crate::{refusal_tally, report_to, LoginSettings, Owner, ServerState, SessionError};

/// What a session's transport must offer: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A logged-in client's state, owned by its connection task.
pub(crate) struct Session {
    shared: Arc<ServerState>,
    /// The settings this session logged in with.
    live: Arc<LoginSettings>,
    client: Arc<ClientInfo>,
    /// The client's open handle, shared with tunnels that may outlive the
    /// session on a port lease.
    hold: Arc<ClientHold>,
    mux: MuxHandle,
    closer: Arc<Closer<CloseReason>>,
    tunnels: HashMap<TunnelId, Arc<Closer<CloseReason>>>,
    /// `-L` tunnels, `max_streams_per_client` and refusals, shared with
    /// the tasks serving the streams the client opens.
    streams: ClientStreams,
    tasks: JoinSet<()>,
    /// Tunnel and forward requests waiting for the asynchronous gates.
    asking: JoinSet<(Asking, Result<Option<Claimed>, Refusal>)>,
    /// `max_tunnels_per_client`: each tunnel task holds a slot.
    tunnel_slots: Slots,
}

impl Session {
    /// Runs the session and closes everything it opened; returns why it ended.
    /// `slot` is the client's `max_clients` slot, given back just before the
    /// close event. With a join key (a version 2 client) the session takes
    /// more connections once its control stream is up.
    pub(crate) async fn start<S: Io>(
        shared: Arc<ServerState>,
        live: Arc<LoginSettings>,
        open: Open<ClientInfo>,
        io: S,
        slot: Slot,
        join_key: Option<[u8; LANE_KEY_LEN]>,
    ) -> CloseReason {
        let cfg = &shared.config;
        let limits = &cfg.limits;
        // Its streams' windows grow by what the budget's growth pool grants
        // them: a fair share of it, whoever came first (see windows.rs).
        let windows = shared.admission.budget.windows().join();
        let (mux, mut inbound, driver) =
            spawn_mux_pooled(io, yamux::Mode::Server, &cfg.mux, windows);
        let closer = shared.root.child();
        // Aborted, this task ends its tunnels and streams at once.
        let _abort = closer.close_on_drop(CloseReason::Aborted);
        let refusals = refusal_tally(&live.chain, Owner::Client(open.info().clone()));
        let mut session = Session {
            client: open.info().clone(),
            hold: ClientHold::new(open, live.clone()),
            closer,
            shared: shared.clone(),
            live,
            mux,
            tunnels: HashMap::new(),
            streams: ClientStreams {
                forwards: Forwards::default(),
                slots: Arc::new(Slots::new(
                    "max_streams_per_client",
                    limits.max_streams_per_client,
                )),
                refusals,
            },
            tasks: JoinSet::new(),
            asking: JoinSet::new(),
            tunnel_slots: Slots::new("max_tunnels_per_client", limits.max_tunnels_per_client),
        };
        let (listing, mut admin_closes) = shared
            .roster
            .client(session.client.clone(), session.closer.clone());
        // A ban made between the login's check and this listing still holds.
        if let Err(banned) = shared.check_ban(&session.client) {
            session
                .closer
                .close(CloseReason::Admin(banned.message.into_owned()));
        }
        let reason = match timeout(cfg.handshake_timeout, inbound.recv()).await {
            Ok(Some(control)) => {
                // Joins come after the control stream, which is the first
                // connection's: a stream on another before it would be taken for it.
                let _joinable = join_key.map(|key| {
                    let max = limits.max_connections_per_client;
                    let (client, mux) = (session.client.clone(), session.mux.clone());
                    shared.joins.list(client, key, mux, max)
                });
                let heartbeat = Heartbeat::new(limits.heartbeat_interval, limits.heartbeat_timeout);
                let control = Control::new(control, cfg.max_frame_len, heartbeat);
                session
                    .control_loop(control, &mut inbound, &mut admin_closes)
                    .await
            }
            ended => {
                let peer = session.client.peer;
                let e = match ended {
                    // The multiplexer died first: not yamux, or malformed yamux.
                    Ok(None) => SessionError::MuxEnded { peer },
                    _ => SessionError::NoControlStream {
                        peer,
                        after: cfg.handshake_timeout,
                    },
                };
                report_to(&session.live.chain, Scope::Client(&session.client), &e);
                CloseReason::Error(e.to_string())
            }
        };
        // Leaf first: streams and tunnels close before the client does.
        session.closer.close(reason.clone());
        while session.tasks.join_next().await.is_some() {}
        session.streams.refusals.flush();
        let forwards: Vec<_> = session
            .streams
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        drop(forwards); // their streams are done: the forward tunnels close now
        session.mux.close();
        drop(inbound);
        driver.finish().await;
        drop((slot, listing));
        // The client's close fires now, or after its last leased tunnel's.
        session.hold.ended(reason.clone());
        drop(session);
        reason
    }

    async fn control_loop(
        &mut self,
        mut control: Control<MuxStream>,
        inbound: &mut reitunnel_transport::Inbound,
        admin_closes: &mut AdminCloses,
    ) -> CloseReason {
        let mut inbound_done = false;
        loop {
            let incoming = tokio::select! {
                _ = self.closer.closed() => {
                    let reason = self.closer.reason().unwrap_or(CloseReason::Shutdown);
                    let (code, why) = match &reason {
                        CloseReason::Admin(why) => (RefuseCode::Forbidden, why.clone()),
                        // Not to be retried: it would push out the session that replaced it.
                        CloseReason::Replaced(why) => (RefuseCode::Forbidden, format!("replaced: {why}")),
                        _ => (RefuseCode::ShuttingDown, "server is shutting down".to_owned()),
                    };
                    control.goodbye(code, why).await;
                    return reason;
                }
                incoming = control.next() => incoming,
                Some(tunnel_id) = admin_closes.recv() => {
                    // Closed already; the client hears it as the server's CloseTunnel.
                    self.forget_tunnel(tunnel_id, CloseReason::Finished);
                    match control.send(Frame::CloseTunnel { tunnel_id }).await {
                        Ok(()) => continue,
                        Err(end) => return self.ended(&mut control, end).await,
                    }
                }
                // The end of the session is concluded from the control stream, so
                // a Goodbye already received there is read first.
                stream = inbound.recv(), if !inbound_done => match stream {
                    Some(stream) => {
                        let serve = forward::serve(self.shared.clone(), stream, self.streams.clone());
                        self.tasks.spawn(serve);
                        continue;
                    }
                    None => {
                        inbound_done = true;
                        continue;
                    }
                },
                Some(_) = self.tasks.join_next() => continue,
                Some(Ok((asking, answer))) = self.asking.join_next() => {
                    let reply = self.answered(asking, answer);
                    match control.send(reply).await {
                        Ok(()) => continue,
                        Err(end) => return self.ended(&mut control, end).await,
                    }
                }
            };
            let frame = match incoming {
                Ok(Incoming::Frame(frame)) => frame,
                Ok(Incoming::RoundTrip(rtt)) => {
                    self.live.chain.heartbeat(&self.client, rtt);
                    continue;
                }
                Ok(Incoming::Goodbye { .. }) => return CloseReason::Finished,
                Err(end) => return self.ended(&mut control, end).await,
            };
            let reply = match frame {
                Frame::OpenTunnel {
                    request_id,
                    bind,
                    target,
                    transport,
                } => {
                    let asking = self.begin_tunnel(request_id, bind, target, transport);
                    self.request(asking)
                }
                Frame::OpenForward {
                    request_id,
                    target,
                    transport,
                } => {
                    let asking = self.begin_forward(request_id, target, transport);
                    self.request(asking)
                }
                Frame::CloseTunnel { tunnel_id } => {
                    self.forget_tunnel(tunnel_id, CloseReason::Finished);
                    None
                }
                other => {
                    let e = SessionError::UnexpectedFrame {
                        peer: self.client.peer,
                        expected: "a control frame",
                        got: other.kind(),
                    };
                    return self.protocol_error(&mut control, e).await;
                }
            };
            if let Some(reply) = reply {
                if let Err(end) = control.send(reply).await {
                    return self.ended(&mut control, end).await;
                }
            }
        }
    }

    /// Closes one of this session's tunnels (if not closed already: the
    /// first reason stays) and drops it from the session's maps.
    fn forget_tunnel(&mut self, tunnel_id: TunnelId, reason: CloseReason) {
        if let Some(closer) = self.tunnels.remove(&tunnel_id) {
            closer.close(reason.clone());
        }
        let forward = self
            .streams
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tunnel_id);
        if let Some(route) = forward {
            route.closer.close(reason);
        }
    }

    /// How the session closes when its control stream ended: a malformed
    /// frame gets a goodbye naming it.
    async fn ended(&self, control: &mut Control<MuxStream>, end: ControlEnd) -> CloseReason {
        match end {
            ControlEnd::Lost => CloseReason::ConnectionLost,
            ControlEnd::Silent(after) => {
                let e = SessionError::HeartbeatTimeout {
                    peer: self.client.peer,
                    after,
                };
                report_to(&self.live.chain, Scope::Client(&self.client), &e);
                CloseReason::Timeout(e.to_string())
            }
            ControlEnd::Malformed(e) => {
                let e = SessionError::Control {
                    peer: self.client.peer,
                    source: CodecError::Decode(e),
                };
                self.protocol_error(control, e).await
            }
        }
    }

    /// Reports a protocol error and says goodbye naming it.
    async fn protocol_error(
        &self,
        control: &mut Control<MuxStream>,
        e: SessionError,
    ) -> CloseReason {
        report_to(&self.live.chain, Scope::Client(&self.client), &e);
        control.goodbye(RefuseCode::BadRequest, e.to_string()).await;
        CloseReason::Error(e.to_string())
    }
}
