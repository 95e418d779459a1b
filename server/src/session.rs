//! A logged-in client's session: its control loop, and the tunnels and
//! forwards it opens. The connection got here through `accept.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::{
    ClientInfo, CloseReason, Open, Reason, Refusal, RefuseCode, Scope, Transport, TunnelId,
    TunnelInfo, TunnelKind,
};
use reitunnel_proto::{CodecError, Frame};
use reitunnel_transport::control::{Control, ControlEnd, Incoming};
use reitunnel_transport::heartbeat::Heartbeat;
use reitunnel_transport::{spawn_mux, Bound, Closer, MuxConfig, MuxHandle, MuxStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::accept::Io;
use crate::forward::{self, ForwardRoute, Forwards};
use crate::lease::ClientHold;
use crate::limits::{Slot, Slots};
use crate::roster::AdminCloses;
use crate::{authorize_within, report_to, tunnel, LoginSettings, ServerState, SessionError};

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
    /// `-L` tunnels, shared with the tasks serving their streams.
    forwards: Forwards,
    tasks: JoinSet<()>,
    /// `max_tunnels_per_client`: each tunnel task holds a slot.
    tunnel_slots: Slots,
    /// `max_streams_per_client`: shared with the tunnels, a slot per visitor.
    stream_slots: Arc<Slots>,
}

impl Session {
    /// Runs the session and closes everything it opened; returns why it ended.
    /// `slot` is the client's `max_clients` slot, given back just before the close event.
    pub(crate) async fn start<S: Io>(
        shared: Arc<ServerState>,
        live: Arc<LoginSettings>,
        open: Open<ClientInfo>,
        io: S,
        slot: Slot,
    ) -> CloseReason {
        let cfg = &shared.config;
        let limits = &cfg.limits;
        // Window growth comes out of the memory budget; what is left of it
        // may be less than the configured headroom, or nothing.
        let (growth, headroom) = shared.admission.budget.growth(cfg.mux.window_headroom);
        if headroom < cfg.mux.window_headroom {
            tracing::warn!(
                client = %open.info().name,
                headroom,
                "max_buffered_bytes is nearly spent: this session's streams get less window to grow into"
            );
        }
        let mux_cfg = MuxConfig {
            window_headroom: headroom,
            ..cfg.mux
        };
        let (mux, mut inbound, driver) = spawn_mux(io, yamux::Mode::Server, &mux_cfg);
        let closer = shared.root.child();
        // Aborted, this task ends its tunnels and streams at once.
        let _abort = closer.close_on_drop(CloseReason::Aborted);
        let mut session = Session {
            client: open.info().clone(),
            hold: ClientHold::new(open, live.clone()),
            closer,
            shared: shared.clone(),
            live,
            mux,
            tunnels: HashMap::new(),
            forwards: Forwards::default(),
            tasks: JoinSet::new(),
            tunnel_slots: Slots::new("max_tunnels_per_client", limits.max_tunnels_per_client),
            stream_slots: Arc::new(Slots::new(
                "max_streams_per_client",
                limits.max_streams_per_client,
            )),
        };
        let (listing, mut admin_closes) = shared
            .roster
            .client(session.client.clone(), session.closer.clone());
        // A ban made between the login's check and this listing still holds.
        if let Some(left) = shared.roster.banned_for(&session.client.name) {
            let why = format!("banned by an operator for another {}s", left.as_secs() + 1);
            session.closer.close(CloseReason::Admin(why));
        }
        let reason = match timeout(cfg.handshake_timeout, inbound.recv()).await {
            Ok(Some(control)) => {
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
        let forwards: Vec<_> = session
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        drop(forwards); // their streams are done: the forward tunnels close now
        session.mux.close();
        drop(inbound);
        driver.finish().await;
        drop((slot, growth, listing));
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
                        let serve = forward::serve(
                            self.shared.clone(),
                            stream,
                            self.forwards.clone(),
                            self.stream_slots.clone(),
                        );
                        self.tasks.spawn(serve);
                        continue;
                    }
                    None => {
                        inbound_done = true;
                        continue;
                    }
                },
                Some(_) = self.tasks.join_next() => continue,
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
                } => Some(self.open_tunnel(request_id, bind, target, transport).await),
                Frame::OpenForward {
                    request_id,
                    target,
                    transport,
                } => Some(self.open_forward(request_id, target, transport).await),
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

    /// Checks policy, binds, asks the hooks (an asynchronous gate awaited
    /// here, in the control loop: the session's data flows on meanwhile),
    /// and starts the tunnel. Returns the answer frame.
    async fn open_tunnel(
        &mut self,
        request_id: u32,
        bind: SocketAddr,
        target: String,
        transport: Transport,
    ) -> Frame {
        let ip = if bind.ip().is_unspecified() {
            self.live.default_bind_ip
        } else {
            bind.ip()
        };
        let requested = SocketAddr::new(ip, bind.port());
        let id = self.shared.ids.tunnel();
        let info = |addr| {
            let info = TunnelInfo::new(
                id,
                self.client.clone(),
                TunnelKind::Reverse,
                addr,
                target.as_str(),
            );
            Arc::new(info.over(transport))
        };
        let refused = |r: Refusal| Frame::TunnelRefused {
            request_id,
            code: r.reason.code,
            message: r.reason.message.into_owned(),
        };
        let slot = match self.take_tunnel_slot(&info(requested)) {
            Ok(slot) => slot,
            Err(r) => return refused(r),
        };
        // Asked before binding: a refused tunnel takes no port (nor a
        // reconnecting client's lease); the service sees the address asked for.
        let within = self.shared.config.handshake_timeout;
        let asked = info(requested);
        if let Err(r) = authorize_within(&self.live.chain, &Ask::Tunnel(&asked), within).await {
            tracing::warn!(client = %self.client.name, %requested, by = %r.by, reason = %r.reason, "tunnel refused");
            return refused(r);
        }
        let (ports, name) = (&self.live.allow_ports, &self.client.name);
        let public = match self.shared.bind_public(ports, name, requested, transport) {
            Ok(public) => public,
            Err(reason) => {
                let pending = info(requested);
                tracing::warn!(client = %self.client.name, %requested, %reason, "tunnel refused");
                return refused(self.live.chain.refuse(Scope::Tunnel(&pending), reason));
            }
        };
        let bound = public.local_addr().unwrap_or(requested);
        let open = match self.live.chain.open_tunnel(info(bound)) {
            Ok(open) => open,
            Err(r) => {
                tracing::warn!(client = %self.client.name, %bound, by = %r.by, reason = %r.reason, "tunnel refused");
                return refused(r);
            }
        };
        tracing::info!(client = %self.client.name, tunnel = %id, %bound, %target, %transport, "tunnel open");
        let closer = self.closer.child();
        self.tunnels.insert(id, closer.clone());
        let listed = self
            .shared
            .roster
            .tunnel(open.info().clone(), closer.clone());
        let tunnel = tunnel::Tunnel {
            listed,
            info: open.info().clone(),
            open: Mutex::new(Some(open)),
            shared: self.shared.clone(),
            chain: self.live.chain.clone(),
            client: self.hold.clone(),
            mux: self.mux.clone(),
            closer,
            stream_slots: self.stream_slots.clone(),
            pending: Arc::new(Slots::new(
                "max_pending_visitors",
                self.shared.config.limits.max_pending_visitors,
            )),
        };
        match public {
            Bound::Tcp(listener) => self.tasks.spawn(tunnel.run(listener, slot)),
            Bound::Udp(socket) => self.tasks.spawn(tunnel.run_udp(socket, slot)),
        };
        Frame::TunnelOpened {
            request_id,
            tunnel_id: id,
            bound,
        }
    }

    /// A `max_tunnels_per_client` slot for `pending`, or the refusal (reported to the hooks).
    /// Also refuses every new tunnel once a drain has started.
    fn take_tunnel_slot(&self, pending: &TunnelInfo) -> Result<Slot, Refusal> {
        if self.shared.draining.is_cancelled() {
            let reason = Reason::new(RefuseCode::ShuttingDown, "the server is shutting down");
            return Err(self.live.chain.refuse(Scope::Tunnel(pending), reason));
        }
        self.tunnel_slots.take().map_err(|hit| {
            let e = SessionError::Limit {
                peer: self.client.peer,
                hit,
            };
            report_to(&self.live.chain, Scope::Tunnel(pending), &e);
            let reason = Reason::new(RefuseCode::LimitReached, format!("too many tunnels: {hit}"));
            self.live.chain.refuse(Scope::Tunnel(pending), reason)
        })
    }

    /// `-L`: checks the target against `allow_forward`, asks the hooks, and
    /// registers the tunnel for the streams the client will open.
    async fn open_forward(
        &mut self,
        request_id: u32,
        target: String,
        transport: Transport,
    ) -> Frame {
        let id = self.shared.ids.tunnel();
        let info = TunnelInfo::new(
            id,
            self.client.clone(),
            TunnelKind::Forward,
            forward::NO_BIND,
            target.as_str(),
        );
        let info = Arc::new(info.over(transport));
        let refused = |r: Refusal| Frame::TunnelRefused {
            request_id,
            code: r.reason.code,
            message: r.reason.message.into_owned(),
        };
        let checked = forward::check_target(&self.live.allow_forward, &target)
            .map_err(|reason| self.live.chain.refuse(Scope::Tunnel(&info), reason))
            .and_then(|()| self.take_tunnel_slot(&info));
        let checked = match checked {
            Ok(slot) => {
                let within = self.shared.config.handshake_timeout;
                let ask = Ask::Tunnel(&info);
                authorize_within(&self.live.chain, &ask, within)
                    .await
                    .map(|()| slot)
            }
            Err(refusal) => Err(refusal),
        };
        let checked =
            checked.and_then(|slot| Ok((slot, self.live.chain.open_tunnel(info.clone())?)));
        let (slot, open) = match checked {
            Ok(opened) => opened,
            Err(r) => {
                tracing::warn!(client = %self.client.name, %target, by = %r.by, reason = %r.reason, "forward refused");
                return refused(r);
            }
        };
        tracing::info!(client = %self.client.name, tunnel = %id, %target, %transport, "forward open");
        let closer = self.closer.child();
        let listed = self
            .shared
            .roster
            .tunnel(open.info().clone(), closer.clone());
        let route = ForwardRoute::new(open, closer, slot, listed);
        self.forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::new(route));
        Frame::TunnelOpened {
            request_id,
            tunnel_id: id,
            bound: forward::NO_BIND,
        }
    }
}
