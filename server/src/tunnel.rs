//! A reverse tunnel's public listener and its visitors.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::relay::Ended;
use reitunnel_hooks::tally::Tally;
use reitunnel_hooks::{
    CloseReason, HookChain, Open, Reason, RefuseCode, Scope, StreamInfo, TunnelInfo,
};
use reitunnel_transport::stream::{open_and_relay, until_closed, AnswerWait};
use reitunnel_transport::MuxStream;
use reitunnel_transport::{tune, Closer, MuxHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use crate::fleet::Claim;
use crate::lease::{ClientHold, Parked};
use crate::limits::{Arrival, LimitHit, Slot, Slots};
use crate::proxied::{real_peer, ProxiedError};
use crate::roster::{Relayed, StreamListing, TunnelListing};
use crate::{authorize_within, report_to, ServerState, StreamError};

/// A running reverse tunnel: what its visitor tasks share.
pub(crate) struct Tunnel {
    /// The tunnel's open handle, taken by [`Tunnel::run`] to close (or
    /// park) it once its streams are done. If `run` is dropped unfinished
    /// (its session task aborted), the handle goes with the last visitor
    /// task instead, so the tunnel's close still follows its streams'; and,
    /// declared before `client`, it goes before the client's.
    pub open: Mutex<Option<Open<TunnelInfo>>>,
    pub info: Arc<TunnelInfo>,
    pub shared: Arc<ServerState>,
    /// The hooks of the session that opened it.
    pub chain: HookChain,
    /// Its client, kept open while this tunnel is leased.
    pub client: Arc<ClientHold>,
    pub mux: MuxHandle,
    pub closer: Arc<Closer<CloseReason>>,
    /// The client's `max_streams_per_client` slots.
    pub stream_slots: Arc<Slots>,
    /// This tunnel's `max_pending_visitors` slots.
    pub pending: Arc<Slots>,
    /// Its refused visitors, summed for its reports (hooks still hear each).
    pub refusals: Arc<Tally>,
    /// Its entry in the server's roster, where its visitors are counted.
    pub listed: TunnelListing,
    /// In a fleet, its port's fleet-wide entry: let go with the port.
    pub claim: Mutex<Option<Claim>>,
}

impl Tunnel {
    /// Accepts visitors until the tunnel's closer fires, then waits for its
    /// streams to close before closing the tunnel itself.
    /// `slot` is the client's `max_tunnels_per_client` slot, given back just before the close event.
    /// In a fleet, `relayed` brings the visitors other nodes relay here.
    pub(crate) async fn run(
        self,
        listener: TcpListener,
        slot: Slot,
        relayed: Option<mpsc::Receiver<Relayed>>,
    ) {
        let this = Arc::new(self);
        let closer = &this.closer;
        // Aborted, this task ends its visitors' too.
        let _abort = closer.close_on_drop(CloseReason::Aborted);
        let draining = &this.shared.draining;
        let streams = TaskTracker::new();
        let mut relayed = relayed;
        loop {
            tokio::select! {
                _ = closer.closed() => break,
                _ = draining.cancelled() => break,
                Some((stream, peer)) = next_relayed(&mut relayed) => {
                    streams.spawn(this.clone().relayed_visitor(stream, peer));
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        streams.spawn(this.clone().visitor(tcp, peer));
                    }
                    Err(e) => {
                        report_to(&this.chain, Scope::Tunnel(&this.info), &e);
                        tokio::select! {
                            _ = closer.closed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
        // A vanished (or replaced) client's port is leased, with the tunnel kept open,
        // once its streams are done; otherwise the port is freed now,
        // before the close event fires.
        let vanished = matches!(
            closer.reason(),
            Some(CloseReason::ConnectionLost | CloseReason::Timeout(_) | CloseReason::Replaced(_))
        ) && !draining.is_cancelled()
            && this.claim_held();
        this.close_after(streams, slot, vanished.then_some(listener))
            .await;
    }

    /// Waits for the closer (a drain stops new visitors; the tunnel stays
    /// open until its streams are done) and for `streams`, gives `slot`
    /// back, then closes the tunnel, or parks `lease` (a vanished client's
    /// listener) with the tunnel kept open for the client's return.
    pub(crate) async fn close_after(
        &self,
        streams: TaskTracker,
        slot: Slot,
        lease: Option<TcpListener>,
    ) {
        self.closer.closed().await;
        streams.close();
        streams.wait().await;
        drop(slot);
        self.refusals.flush();
        let reason = self.closer.reason().unwrap_or(CloseReason::Finished);
        let open = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(open) = open else { return };
        let claim = self
            .claim
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match lease {
            Some(listener) => {
                let parked = Parked::new(listener, open, reason, self.client.clone(), claim);
                self.shared.leases.park(parked);
            }
            None => {
                drop(claim); // the port is free fleet-wide before the close event
                open.close(reason);
            }
        }
    }

    /// Whether its port is still its own fleet-wide (always, outside a fleet).
    fn claim_held(&self) -> bool {
        self.claim
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(Claim::is_held)
    }

    /// A visitor another node accepted and relayed here, from `peer`: the
    /// same limits, gates, hooks and meters as one of this node's own.
    async fn relayed_visitor(self: Arc<Self>, mut stream: MuxStream, peer: SocketAddr) {
        let _live = self.shared.streams.token();
        self.serve_visitor(&mut stream, peer).await;
    }

    /// One visitor: its real address (behind a balancer), limits, gate,
    /// bridge to the client, close.
    async fn visitor(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let _ = tune(&tcp);
        let shared = &self.shared;
        let _live = shared.streams.token();
        let trusted = &shared.config.proxy_protocol_from;
        let wait = shared.config.handshake_timeout;
        let real = match timeout(wait, real_peer(&mut tcp, peer, trusted)).await {
            Ok(real) => real,
            Err(_) => Err(ProxiedError::Io {
                peer,
                source: io::Error::new(io::ErrorKind::TimedOut, format!("none within {wait:?}")),
            }),
        };
        let real = match real {
            Ok(real) => real,
            Err(e) => {
                // Dropping the socket ends the connection; hooks and logs hear why.
                let info = self.stream_info(peer);
                self.refusals
                    .refused(format_args!("visitor refused: {}", e.per_address()));
                let reason = Reason::new(RefuseCode::Forbidden, e.to_string());
                self.chain.refuse(Scope::Stream(&info), reason);
                return;
            }
        };
        self.serve_visitor(&mut tcp, real).await;
    }

    /// A visitor from `peer` past its PROXY header: limits, gates, the
    /// bridge to the client, the close.
    async fn serve_visitor<S: AsyncRead + AsyncWrite + Unpin>(&self, io: &mut S, peer: SocketAddr) {
        let shared = &self.shared;
        let info = self.stream_info(peer);
        // A refused visitor is simply disconnected; hooks heard on_rejected.
        let Some(admitted) = self.admit(info, Arrival::Connection).await else {
            return;
        };
        let open = &admitted.open;
        let bridged = bridge(shared, io, open, &self.mux, admitted.pending);
        let reason = until_closed(&self.closer, bridged).await;
        // Slots first: whoever sees the close event may open the next stream.
        drop(admitted.held);
        admitted.open.close(reason);
    }

    /// A new visitor's (or UDP flow's) stream of this tunnel, from `peer`.
    pub(crate) fn stream_info(&self, peer: SocketAddr) -> Arc<StreamInfo> {
        Arc::new(StreamInfo::new(
            self.shared.ids.stream(),
            self.info.clone(),
            peer,
        ))
    }

    /// Refuses a `what` (visitor, flow) that found limit `hit` full: the
    /// hooks hear the refusal, which names the limit, and the tunnel's
    /// summed reports count it.
    pub(crate) fn turn_away(&self, info: &StreamInfo, what: &str, hit: LimitHit) {
        let why = format!("{what} turned away: {hit}");
        self.refusals.refused(&why);
        self.chain.refuse(
            Scope::Stream(info),
            Reason::new(RefuseCode::LimitReached, why),
        );
    }

    /// The server's limits, then the asynchronous gates that ask about
    /// visitors (if any), then the hooks' gate, for a new visitor (a TCP
    /// connection or a UDP flow); `None` if refused (the hooks heard why).
    pub(crate) async fn admit(&self, info: Arc<StreamInfo>, arrival: Arrival) -> Option<Admitted> {
        let admission = &self.shared.admission;
        let per_ip = match arrival {
            Arrival::Connection => &admission.visitors_per_ip,
            Arrival::Flow => &admission.udp_flows_per_ip,
        };
        let slots = per_ip.take(info.peer.ip()).and_then(|per_ip| {
            let total = admission.streams.take()?;
            let client = self.stream_slots.take()?;
            let pending = self.pending.take()?;
            let buffers = admission.budget.stream(arrival)?;
            Ok((per_ip, total, client, pending, buffers))
        });
        let (per_ip, total, client, pending, buffers) = match slots {
            Ok(slots) => slots,
            Err(hit) => {
                self.turn_away(&info, arrival.noun(), hit);
                return None;
            }
        };
        if self.chain.authorizes_streams() {
            let within = self.shared.config.handshake_timeout;
            authorize_within(&self.chain, &Ask::Stream(&info), within)
                .await
                .ok()?;
        }
        let listed = self.listed.tunnel.stream(info.clone());
        let open = self.chain.open_stream(info).ok()?;
        Some(Admitted {
            pending,
            held: (per_ip, total, client, buffers, listed),
            open,
        })
    }
}

/// What an admitted visitor holds while its stream is open.
pub(crate) struct Admitted {
    /// Its `max_pending_visitors` slot, given back once the client answers.
    pub pending: Slot,
    /// Its other slots and its roster entry, given back just before the
    /// close event, so whoever sees it may open the next stream.
    pub held: (Slot, Slot, Slot, Slot, StreamListing),
    /// The open stream.
    pub open: Open<StreamInfo>,
}

/// Opens a stream to the client and relays the visitor over it at once
/// (see [`open_and_relay`]); a failure is reported to the stream's hooks.
async fn bridge<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &ServerState,
    tcp: &mut S,
    open: &Open<StreamInfo>,
    mux: &MuxHandle,
    pending: Slot,
) -> CloseReason {
    let cfg = &shared.config;
    let target = open.info().tunnel.target.to_string();
    let answer = AnswerWait {
        max_frame_len: cfg.max_frame_len,
        within: cfg.stream_ack_timeout,
        guard: pending,
        not_accepted: |e| Ended::into_io(failed(open, StreamError::from_answer(e, &target))),
    };
    match open_and_relay(mux, tcp, open, answer, &cfg.relay).await {
        Ok(reason) => reason,
        Err(e) => failed(open, e.into()),
    }
}

/// Reports a failed stream to its hooks and says how it closes.
pub(crate) fn failed(open: &Open<StreamInfo>, e: StreamError) -> CloseReason {
    report_to(open.chain(), Scope::Stream(open.info()), &e);
    match e {
        StreamError::TargetRefused { message, .. } => CloseReason::TargetUnreachable(message),
        other => CloseReason::Error(other.to_string()),
    }
}

/// The next relayed visitor; never, for a tunnel that takes none.
async fn next_relayed(relayed: &mut Option<mpsc::Receiver<Relayed>>) -> Option<Relayed> {
    match relayed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
