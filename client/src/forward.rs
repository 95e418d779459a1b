//! `-L` on the client: accept local connections and carry each one to the
//! server in a stream of its own, which the server connects to the target;
//! for `-L udp:…`, each local source address is a flow, a stream of its own
//! whose datagrams the server sends to the target.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::datagram::relay_datagrams;
use reitunnel_hooks::relay::Ended;
use reitunnel_hooks::{
    CloseReason, HookChain, Open, Reason, RefuseCode, Scope, StreamId, StreamInfo,
};
use reitunnel_transport::answer::AnswerError;
use reitunnel_transport::datagram::MuxDatagrams;
use reitunnel_transport::flows::{serve_flows, FlowHandler, FlowVisitor, QueuesFull};
use reitunnel_transport::stream::{
    open_and_await, open_and_relay, until_closed, AnswerWait, AwaitError,
};
use reitunnel_transport::{cut_by_connection, tune, Bound, MuxHandle};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::Route;
use crate::{ClientConfig, TargetError};

/// Client-numbered stream ids carry this bit, so they never equal the
/// server-numbered ids of reverse streams in the same client's hooks.
const FORWARD_ID_BIT: u64 = 1 << 63;

/// Most UDP flows one local forward carries at once.
pub const MAX_LOCAL_FLOWS: usize = 1024;

/// What a forward tunnel's accept loop and its streams share.
pub(crate) struct Forward {
    /// A graceful shutdown closes the local listener.
    pub draining: CancellationToken,
    pub route: Arc<Route>,
    pub mux: MuxHandle,
    pub chain: HookChain,
    pub cfg: Arc<ClientConfig>,
    pub streams: TaskTracker,
    pub ids: Arc<AtomicU64>,
    /// The session's `max_forward_streams` slots.
    pub slots: Arc<Semaphore>,
}

impl Forward {
    /// Serves the local socket until the tunnel closes (or a drain starts).
    pub(crate) async fn serve(self, local: Bound) {
        match local {
            Bound::Tcp(listener) => self.accept(listener).await,
            Bound::Udp(socket) => self.serve_flows(socket).await,
        }
    }

    /// Carries each local source address's datagrams in a flow of its own.
    async fn serve_flows(self, socket: UdpSocket) {
        let this = Arc::new(self);
        let stop = async {
            tokio::select! {
                _ = this.route.closer.closed() => {}
                _ = this.draining.cancelled() => {}
            }
        };
        let handler = LocalFlows(this.clone());
        serve_flows(
            Arc::new(socket),
            MAX_LOCAL_FLOWS,
            &handler,
            &this.streams,
            stop,
        )
        .await;
    }

    /// One flow: gate, a stream to the server once it has its socket, then
    /// datagrams both ways until idle or closed.
    async fn flow(self: Arc<Self>, mut local: FlowVisitor) {
        let idle = self.cfg.udp_flow_idle;
        let Some((slot, open)) = self.admit(local.peer()) else {
            // Refused (the hooks heard why): dropped for a while, then asked again.
            local.hold_refused(idle).await;
            return;
        };
        let relayed = async {
            let within = self.cfg.target_connect_timeout * 2;
            let answer = open_and_await(&self.mux, &open, within, self.cfg.max_frame_len).await;
            let up = match answer {
                Ok(up) => up,
                Err(AwaitError::Answer(e)) => return self.not_accepted(open.info(), e),
                Err(AwaitError::Open(e)) => return CloseReason::Error(e.to_string()),
            };
            let mut up = MuxDatagrams::new(up);
            let reason = relay_datagrams(&mut local, &mut up, &open, Some(idle)).await;
            reason.unless_cut(cut_by_connection(up.get_ref()))
        };
        let reason = until_closed(&self.route.closer, relayed).await;
        // The slot is free by the time the hooks hear the close.
        drop(slot);
        open.close(reason);
    }

    /// Accepts local connections until the tunnel closes.
    async fn accept(self, listener: TcpListener) {
        let this = Arc::new(self);
        let closer = &this.route.closer;
        loop {
            tokio::select! {
                _ = closer.closed() => break,
                _ = this.draining.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        this.streams.spawn(this.clone().stream(tcp, peer));
                    }
                    Err(e) => {
                        this.chain.error(Scope::Tunnel(&this.route.info), &e);
                        tokio::select! {
                            _ = closer.closed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
    }

    /// One local connection: gate, header, the server's answer, relay.
    async fn stream(self: Arc<Self>, mut local: TcpStream, peer: SocketAddr) {
        let _ = tune(&local);
        // Over the limit or refused by a client hook: the local connection
        // is simply closed; the hooks hear why.
        let Some((slot, open)) = self.admit(peer) else {
            return;
        };
        let bridged = self.bridge(&mut local, &open);
        let reason = until_closed(&self.route.closer, bridged).await;
        // The slot is free by the time the hooks hear the close.
        drop(slot);
        open.close(reason);
    }

    /// A local connection's or flow's stream from `peer`, with a fresh id.
    fn stream_info(&self, peer: SocketAddr) -> StreamInfo {
        let id = StreamId(FORWARD_ID_BIT | (self.ids.fetch_add(1, Ordering::Relaxed) + 1));
        StreamInfo::new(id, self.route.info.clone(), peer)
    }

    /// A `max_forward_streams` slot and the hooks' gate for a local
    /// connection or flow from `peer`; `None` if refused (the hooks heard why).
    fn admit(&self, peer: SocketAddr) -> Option<(OwnedSemaphorePermit, Open<StreamInfo>)> {
        let info = Arc::new(self.stream_info(peer));
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let max = self.cfg.max_forward_streams;
            let reason = Reason::new(
                RefuseCode::LimitReached,
                format!("local connection turned away: limit max_forward_streams = {max} reached"),
            );
            self.chain.refuse(Scope::Stream(&info), reason);
            return None;
        };
        let open = self.chain.open_stream(info).ok()?;
        Some((slot, open))
    }

    /// Opens a stream to the server and relays the local connection over
    /// it at once (see [`open_and_relay`]). The server answers once it has
    /// dialled the target (its own timeout applies first).
    async fn bridge(&self, local: &mut TcpStream, open: &Open<StreamInfo>) -> CloseReason {
        let info = open.info();
        let answer = AnswerWait {
            max_frame_len: self.cfg.max_frame_len,
            within: self.cfg.target_connect_timeout * 2,
            guard: (),
            not_accepted: |e| Ended::into_io(self.not_accepted(info, e)),
        };
        open_and_relay(&self.mux, local, open, answer, &self.cfg.relay)
            .await
            .unwrap_or_else(|e| CloseReason::Error(e.to_string()))
    }

    /// Reports why the server did not accept a forward stream; returns how it closes.
    fn not_accepted(&self, info: &StreamInfo, e: AnswerError) -> CloseReason {
        match e {
            AnswerError::Refused(message) => {
                let e = TargetError {
                    target: info.tunnel.target.to_string(),
                    reason: format!("the server could not forward: {message}"),
                };
                self.chain.error(Scope::Stream(info), &e);
                CloseReason::TargetUnreachable(message)
            }
            AnswerError::Unexpected(kind) => CloseReason::Error(format!(
                "server answered a forward stream with a {kind:?} frame"
            )),
            AnswerError::Frame(e) => CloseReason::Error(e.to_string()),
            AnswerError::Timeout(wait) => {
                CloseReason::Error(format!("server did not answer within {wait:?}"))
            }
        }
    }
}

/// A forward as the owner of its local flows.
struct LocalFlows(Arc<Forward>);

impl FlowHandler for LocalFlows {
    /// The client has no memory budget: a flow's queue is bounded by
    /// `FLOW_QUEUE_BYTES` alone, and only local programs feed it.
    type Reserved = ();

    fn reserve(&self, _bytes: usize) -> Option<()> {
        Some(())
    }

    fn start(&self, local: FlowVisitor) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.0.clone().flow(local)
    }

    fn turned_away(&self, peer: SocketAddr, max: usize) {
        let forward = &self.0;
        let info = forward.stream_info(peer);
        let why =
            format!("local flow turned away: {max} flows already (the most one forward carries)");
        let reason = Reason::new(RefuseCode::LimitReached, why);
        forward.chain.refuse(Scope::Stream(&info), reason);
    }

    fn queues_full(&self, full: QueuesFull) {
        self.0.chain.error(Scope::Tunnel(&self.0.route.info), &full);
    }

    fn recv_failed(&self, e: std::io::Error) {
        self.0.chain.error(Scope::Tunnel(&self.0.route.info), &e);
    }
}
