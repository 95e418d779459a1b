//! What a session does when its client asks for a tunnel (`-R`: a public
//! port) or a forward (`-L`: a target behind the server): the server's
//! checks, the hooks' gates, then the tasks that serve it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::{
    HookChain, Reason, Refusal, RefuseCode, Scope, Transport, TunnelInfo, TunnelKind,
};
use reitunnel_proto::Frame;
use reitunnel_transport::Bound;

use super::Session;
use crate::fleet::{Claim, Fleet};
use crate::forward::{self, ForwardRoute};
use crate::limits::{Slot, Slots};
use crate::{authorize_within, refusal_tally, report_to, tunnel, Owner, ServerState, SessionError};
use reitunnel_hooks::ports::PortRanges;

/// Relayed visitors that may wait for a tunnel's accept loop; more are
/// turned away (their node sees the stream close).
const RELAYED_QUEUE: usize = 128;

/// The answer to request `request_id` that refuses it for `refusal`'s reason.
fn refused(request_id: u32, refusal: Refusal) -> Frame {
    Frame::TunnelRefused {
        request_id,
        code: refusal.reason.code,
        message: refusal.reason.message.into_owned(),
    }
}

/// A tunnel or forward request that passed the server's own checks and
/// waits for the asynchronous gates (an `http_auth` service), which are
/// asked off the control loop: kicks, admin closes and heartbeats go on
/// meanwhile. Holds the request's `max_tunnels_per_client` slot.
pub(super) struct Asking {
    request_id: u32,
    /// The tunnel as the gates see it (for `-R`, at the address asked for).
    info: Arc<TunnelInfo>,
    slot: Slot,
}

/// The public port a fleet node bound and took fleet-wide for an `-R`
/// tunnel, off the control loop like the gates.
pub(super) struct Claimed {
    bound: Bound,
    claim: Claim,
}

/// A fleet node's part of an `-R` request: what takes its port.
pub(super) struct ToClaim {
    shared: Arc<ServerState>,
    fleet: Arc<Fleet>,
    /// The login's allowed ports.
    ports: PortRanges,
}

impl Asking {
    /// Asks the chain's asynchronous gates about the request, within
    /// `within`; then, for an `-R` tunnel asking for port 0, its port
    /// choosers (within what is left; the port checked against `ports`);
    /// then, for a fleet node's `-R` tunnel (`to_claim`), binds its port
    /// and takes it fleet-wide.
    pub(super) async fn ask(
        mut self,
        chain: HookChain,
        within: Duration,
        to_claim: Option<ToClaim>,
        ports: PortRanges,
    ) -> (Asking, Result<Option<Claimed>, Refusal>) {
        let started = tokio::time::Instant::now();
        let answer = authorize_within(&chain, &Ask::Tunnel(&self.info), within).await;
        if answer.is_ok() {
            let left = within.saturating_sub(started.elapsed());
            self.info = chosen_port(&chain, &self.info, &ports, left).await;
        }
        let claimed = match (answer, to_claim) {
            (Err(refusal), _) => Err(refusal),
            (Ok(()), None) => Ok(None),
            (Ok(()), Some(to)) => to
                .shared
                .bind_claimed(&to.fleet, &to.ports, &self.info)
                .await
                .map(|(bound, claim)| Some(Claimed { bound, claim }))
                .map_err(|reason| chain.refuse(Scope::Tunnel(&self.info), reason)),
        };
        (self, claimed)
    }
}

/// `tunnel` at the port a port chooser of `chain` gives it, if it is an
/// `-R` tunnel that asked for port 0 and a chooser answers within `within`
/// with an allowed port; else `tunnel` as it is, and the server picks.
async fn chosen_port(
    chain: &HookChain,
    tunnel: &Arc<TunnelInfo>,
    ports: &PortRanges,
    within: Duration,
) -> Arc<TunnelInfo> {
    if tunnel.kind != TunnelKind::Reverse || tunnel.bind.port() != 0 || !chain.chooses_ports() {
        return tunnel.clone();
    }
    let Ok(Some((port, by))) = tokio::time::timeout(within, chain.choose_port(tunnel)).await else {
        return tunnel.clone();
    };
    if !ports.contains(port) {
        tracing::warn!(client = %tunnel.client.name, port, %by, allowed = %ports,
            "the port chosen is outside the allowed ports; the server picks one");
        return tunnel.clone();
    }
    let bind = SocketAddr::new(tunnel.bind.ip(), port);
    let chosen = TunnelInfo::new(
        tunnel.id,
        tunnel.client.clone(),
        tunnel.kind,
        bind,
        tunnel.target.clone(),
    );
    Arc::new(chosen.over(tunnel.transport))
}

impl Session {
    /// Starts a request: the server's checks, then (with asynchronous gates
    /// in the chain) a task that asks them, whose answer the control loop
    /// hands to [`Session::answered`]; without any, the answer at once.
    pub(super) fn request(&mut self, asking: Result<Asking, Frame>) -> Option<Frame> {
        let asking = match asking {
            Ok(asking) => asking,
            Err(refusal) => return Some(refusal),
        };
        // A fleet node takes an `-R` tunnel's port in the store, off the loop too.
        let to_claim = match (&self.shared.fleet, asking.info.kind) {
            (Some(fleet), TunnelKind::Reverse) => Some(ToClaim {
                shared: self.shared.clone(),
                fleet: fleet.clone(),
                ports: self.live.allow_ports.clone(),
            }),
            _ => None,
        };
        if !self.live.chain.has_authorizers() && to_claim.is_none() {
            return Some(self.answered(asking, Ok(None)));
        }
        let within = self.shared.config.handshake_timeout;
        let ports = self.live.allow_ports.clone();
        self.asking
            .spawn(asking.ask(self.live.chain.clone(), within, to_claim, ports));
        None
    }

    /// Finishes a request the gates answered: the tunnel or forward opens,
    /// or is refused. Returns the answer frame.
    pub(super) fn answered(
        &mut self,
        asking: Asking,
        answer: Result<Option<Claimed>, Refusal>,
    ) -> Frame {
        let Asking {
            request_id,
            info,
            slot,
        } = asking;
        // A drain that started while the gates were asked refuses it too.
        let answer = answer.and_then(|claimed| {
            self.refuse_if_draining(&info)?;
            Ok(claimed)
        });
        let claimed = match answer {
            Ok(claimed) => claimed,
            Err(r) => {
                tracing::warn!(client = %self.client.name, target = %info.target, by = %r.by, reason = %r.reason, "tunnel refused");
                return refused(request_id, r);
            }
        };
        match info.kind {
            TunnelKind::Reverse => self.open_tunnel(request_id, &info, slot, claimed),
            TunnelKind::Forward => self.open_forward(request_id, &info, slot),
        }
    }

    /// `-R`: the tunnel as asked, and its slot, or the refusal.
    pub(super) fn begin_tunnel(
        &self,
        request_id: u32,
        bind: SocketAddr,
        target: String,
        transport: Transport,
    ) -> Result<Asking, Frame> {
        let ip = if bind.ip().is_unspecified() {
            self.live.default_bind_ip
        } else {
            bind.ip()
        };
        let requested = SocketAddr::new(ip, bind.port());
        let id = self.shared.ids.tunnel();
        let info = TunnelInfo::new(
            id,
            self.client.clone(),
            TunnelKind::Reverse,
            requested,
            target,
        );
        // Asked before binding: a refused tunnel takes no port (nor a
        // reconnecting client's lease); the service sees the address asked for.
        let info = Arc::new(info.over(transport));
        match self.take_tunnel_slot(&info) {
            Ok(slot) => Ok(Asking {
                request_id,
                info,
                slot,
            }),
            Err(r) => Err(refused(request_id, r)),
        }
    }

    /// Binds the public port of `asked`, opens the tunnel and starts it.
    /// Returns the answer frame.
    fn open_tunnel(
        &mut self,
        request_id: u32,
        asked: &TunnelInfo,
        slot: Slot,
        claimed: Option<Claimed>,
    ) -> Frame {
        let requested = asked.bind;
        let (id, target, transport) = (asked.id, asked.target.clone(), asked.transport);
        let info = |addr| {
            let info =
                TunnelInfo::new(id, self.client.clone(), TunnelKind::Reverse, addr, &*target);
            Arc::new(info.over(transport))
        };
        let (ports, name) = (&self.live.allow_ports, &self.client.name);
        let (public, claim) = match claimed {
            Some(Claimed { bound, claim }) => (Ok(bound), Some(claim)),
            None => (
                self.shared.bind_public(ports, name, requested, transport),
                None,
            ),
        };
        let public = match public {
            Ok(public) => public,
            Err(reason) => {
                let pending = info(requested);
                tracing::warn!(client = %self.client.name, %requested, %reason, "tunnel refused");
                return refused(
                    request_id,
                    self.live.chain.refuse(Scope::Tunnel(&pending), reason),
                );
            }
        };
        let bound = public.local_addr().unwrap_or(requested);
        let open = match self.live.chain.open_tunnel(info(bound)) {
            Ok(open) => open,
            Err(r) => {
                tracing::warn!(client = %self.client.name, %bound, by = %r.by, reason = %r.reason, "tunnel refused");
                return refused(request_id, r);
            }
        };
        tracing::info!(client = %self.client.name, tunnel = %id, %bound, %target, %transport, "tunnel open");
        let closer = self.closer.child();
        self.tunnels.insert(id, closer.clone());
        // In a fleet, a TCP tunnel also takes the visitors other nodes relay.
        let (relay_tx, relay_rx) = match (&self.shared.fleet, &public) {
            (Some(_), Bound::Tcp(_)) => {
                let (tx, rx) = tokio::sync::mpsc::channel(RELAYED_QUEUE);
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let listed = self
            .shared
            .roster
            .tunnel(open.info().clone(), closer.clone(), relay_tx);
        let refusals = refusal_tally(&self.live.chain, Owner::Tunnel(open.info().clone()));
        let tunnel = tunnel::Tunnel {
            refusals,
            listed,
            claim: Mutex::new(claim),
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
            Bound::Tcp(listener) => self.tasks.spawn(tunnel.run(listener, slot, relay_rx)),
            Bound::Udp(socket) => self.tasks.spawn(tunnel.run_udp(socket, slot)),
        };
        Frame::TunnelOpened {
            request_id,
            tunnel_id: id,
            bound,
        }
    }

    /// Refuses `pending` (reported to the hooks) once a drain has started.
    fn refuse_if_draining(&self, pending: &TunnelInfo) -> Result<(), Refusal> {
        if !self.shared.draining.is_cancelled() {
            return Ok(());
        }
        let reason = Reason::new(RefuseCode::ShuttingDown, "the server is shutting down");
        Err(self.live.chain.refuse(Scope::Tunnel(pending), reason))
    }

    /// A `max_tunnels_per_client` slot for `pending`, or the refusal (reported to the hooks).
    /// Also refuses every new tunnel once a drain has started.
    fn take_tunnel_slot(&self, pending: &TunnelInfo) -> Result<Slot, Refusal> {
        self.refuse_if_draining(pending)?;
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

    /// `-L`: the forward as asked (its target checked against
    /// `allow_forward`), and its slot, or the refusal.
    pub(super) fn begin_forward(
        &self,
        request_id: u32,
        target: String,
        transport: Transport,
    ) -> Result<Asking, Frame> {
        let id = self.shared.ids.tunnel();
        let info = TunnelInfo::new(
            id,
            self.client.clone(),
            TunnelKind::Forward,
            forward::NO_BIND,
            target.as_str(),
        );
        let info = Arc::new(info.over(transport));
        let checked = forward::check_target(&self.live.allow_forward, &target)
            .map_err(|reason| self.live.chain.refuse(Scope::Tunnel(&info), reason))
            .and_then(|()| self.take_tunnel_slot(&info));
        match checked {
            Ok(slot) => Ok(Asking {
                request_id,
                info,
                slot,
            }),
            Err(r) => {
                tracing::warn!(client = %self.client.name, %target, by = %r.by, reason = %r.reason, "forward refused");
                Err(refused(request_id, r))
            }
        }
    }

    /// Opens the forward `asked` and registers it for the streams the
    /// client will open. Returns the answer frame.
    fn open_forward(&mut self, request_id: u32, asked: &Arc<TunnelInfo>, slot: Slot) -> Frame {
        let open = match self.live.chain.open_tunnel(asked.clone()) {
            Ok(open) => open,
            Err(r) => {
                tracing::warn!(client = %self.client.name, target = %asked.target, by = %r.by, reason = %r.reason, "forward refused");
                return refused(request_id, r);
            }
        };
        let (id, target, transport) = (asked.id, &asked.target, asked.transport);
        tracing::info!(client = %self.client.name, tunnel = %id, %target, %transport, "forward open");
        let closer = self.closer.child();
        let listed = self
            .shared
            .roster
            .tunnel(open.info().clone(), closer.clone(), None);
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
