//! What a session does when its client asks for a tunnel (`-R`: a public
//! port) or a forward (`-L`: a target behind the server): the server's
//! checks, the hooks' gates, then the tasks that serve it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::{Reason, Refusal, RefuseCode, Scope, Transport, TunnelInfo, TunnelKind};
use reitunnel_proto::Frame;
use reitunnel_transport::Bound;

use super::Session;
use crate::forward::{self, ForwardRoute};
use crate::limits::{Slot, Slots};
use crate::{authorize_within, refusal_tally, report_to, tunnel, Owner, SessionError};

/// The answer to request `request_id` that refuses it for `refusal`'s reason.
fn refused(request_id: u32, refusal: Refusal) -> Frame {
    Frame::TunnelRefused {
        request_id,
        code: refusal.reason.code,
        message: refusal.reason.message.into_owned(),
    }
}

impl Session {
    /// Checks policy, binds, asks the hooks (an asynchronous gate awaited
    /// here, in the control loop: the session's data flows on meanwhile),
    /// and starts the tunnel. Returns the answer frame.
    pub(super) async fn open_tunnel(
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
        let refused = |r: Refusal| refused(request_id, r);
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
        let refusals = refusal_tally(&self.live.chain, Owner::Tunnel(open.info().clone()));
        let tunnel = tunnel::Tunnel {
            refusals,
            listed,
            info: open.info().clone(),
            open: Mutex::new(Some(open)),
            shared: self.shared.clone(),
            chain: self.live.chain.clone(),
            client: self.hold.clone(),
            mux: self.mux.clone(),
            closer,
            stream_slots: self.streams.slots.clone(),
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
    pub(super) async fn open_forward(
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
        let refused = |r: Refusal| refused(request_id, r);
        let checked = forward::check_target(&self.live.allow_forward, &target)
            .map_err(|reason| self.live.chain.refuse(Scope::Tunnel(&info), reason))
            .and_then(|()| self.take_tunnel_slot(&info));
        let checked = async {
            let slot = checked?;
            let within = self.shared.config.handshake_timeout;
            authorize_within(&self.live.chain, &Ask::Tunnel(&info), within).await?;
            Ok::<_, Refusal>(slot)
        };
        let checked = checked.await;
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
        self.streams
            .forwards
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
