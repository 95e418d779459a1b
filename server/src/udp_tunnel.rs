//! A reverse UDP tunnel: its public socket and its flows.
//!
//! Each visitor address is a flow (see `reitunnel_transport::flows`), and
//! each flow a stream to the client and to the hooks: open and close
//! events, the server's limits and gates as for a TCP visitor, `on_data`
//! once per datagram. A flow ends when nothing moved either way for
//! `udp_flow_idle`, when the tunnel closes, or when the client ends it; at
//! most `max_udp_flows_per_tunnel` run at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::datagram::relay_datagrams;
use reitunnel_hooks::{CloseReason, Open, Scope, StreamInfo};
use reitunnel_transport::cut_by_connection;
use reitunnel_transport::datagram::MuxDatagrams;
use reitunnel_transport::flows::{serve_flows, FlowHandler, FlowVisitor, QueuesFull};
use reitunnel_transport::stream::{open_and_await, until_closed, AwaitError};
use tokio::net::UdpSocket;
use tokio_util::task::TaskTracker;

use crate::limits::{Arrival, LimitHit, Slot};
use crate::tunnel::{failed, Tunnel};
use crate::{report_to, StreamError};

impl Tunnel {
    /// Serves flows until the tunnel's closer fires or a drain starts,
    /// then waits for them to end and closes the tunnel. `slot` is the
    /// client's `max_tunnels_per_client` slot. A UDP port is not leased: it
    /// is freed when the tunnel closes.
    pub(crate) async fn run_udp(self, socket: UdpSocket, slot: Slot) {
        let this = Arc::new(self);
        let closer = &this.closer;
        let _abort = closer.close_on_drop(CloseReason::Aborted);
        let flows = TaskTracker::new();
        let max = this.shared.config.limits.max_udp_flows_per_tunnel;
        let stop = async {
            tokio::select! {
                _ = closer.closed() => {}
                _ = this.shared.draining.cancelled() => {}
            }
        };
        let handler = Flows(this.clone());
        serve_flows(Arc::new(socket), max, &handler, &flows, stop).await;
        this.close_after(flows, slot, None).await;
    }

    /// One flow: limits and gate, a stream to the client once it has its
    /// socket, then datagrams both ways until idle or closed.
    async fn flow(self: Arc<Self>, mut visitor: FlowVisitor) {
        let _live = self.shared.streams.token();
        let info = self.stream_info(visitor.peer());
        let idle = self.shared.config.limits.udp_flow_idle;
        let Some(admitted) = self.admit(info, Arrival::Flow).await else {
            // Refused (the hooks heard why): its datagrams are dropped for a
            // while, then its next one asks again.
            let held = async {
                visitor.hold_refused(idle).await;
                CloseReason::Finished
            };
            let _ = until_closed(&self.closer, held).await;
            return;
        };
        let open = &admitted.open;
        let relayed = self.relay_flow(&mut visitor, open, admitted.pending, idle);
        let reason = until_closed(&self.closer, relayed).await;
        drop(admitted.held);
        admitted.open.close(reason);
    }

    /// Opens the flow's stream, waits for the client's answer, and relays.
    async fn relay_flow(
        &self,
        visitor: &mut FlowVisitor,
        open: &Open<StreamInfo>,
        pending: Slot,
        idle: Duration,
    ) -> CloseReason {
        let cfg = &self.shared.config;
        let answer = open_and_await(&self.mux, open, cfg.stream_ack_timeout, cfg.max_frame_len);
        let answer = answer.await;
        drop(pending);
        let up = match answer {
            Ok(up) => up,
            Err(AwaitError::Open(e)) => return failed(open, e.into()),
            Err(AwaitError::Answer(e)) => {
                let target = open.info().tunnel.target.to_string();
                return failed(open, StreamError::from_answer(e, &target));
            }
        };
        let mut up = MuxDatagrams::new(up);
        let reason = relay_datagrams(visitor, &mut up, open, Some(idle)).await;
        reason.unless_cut(cut_by_connection(up.get_ref()))
    }
}

/// A tunnel as the owner of its flows.
struct Flows(Arc<Tunnel>);

impl FlowHandler for Flows {
    type Reserved = Slot;

    fn reserve(&self, bytes: usize) -> Option<Slot> {
        self.0.shared.admission.budget.flow_queue(bytes).ok()
    }

    fn start(
        &self,
        visitor: FlowVisitor,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.0.clone().flow(visitor)
    }

    fn turned_away(&self, peer: SocketAddr, max: usize) {
        let hit = LimitHit {
            name: "max_udp_flows_per_tunnel",
            max,
        };
        self.0
            .turn_away(&self.0.stream_info(peer), Arrival::Flow.noun(), hit);
    }

    fn queues_full(&self, full: QueuesFull) {
        report_to(&self.0.chain, Scope::Tunnel(&self.0.info), &full);
    }

    fn recv_failed(&self, e: io::Error) {
        report_to(&self.0.chain, Scope::Tunnel(&self.0.info), &e);
    }
}
