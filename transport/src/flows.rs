//! UDP flows on one socket, the same on both ends of a session: the
//! server's public socket of a reverse UDP tunnel and the client's local
//! socket of a UDP forward both receive datagrams from many visitors.
//!
//! UDP has no connections, so [`serve_flows`] makes them: each source
//! address is a flow, started by the caller's [`FlowHandler`] (a stream to
//! the far side and to the hooks) and fed through a small queue (a flow that
//! falls behind loses datagrams, as a congested network would); answers go
//! back from the same socket. At most `max_flows` run at once; a datagram
//! from a new address past that is turned away.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reitunnel_hooks::datagram::Datagrams;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::task::TaskTracker;

use crate::datagram::MAX_DATAGRAM;

/// Datagrams queued for one flow; past it, its datagrams are dropped.
/// Each queued datagram is a copy of its own size, so a flow holds at most
/// this many datagrams' bytes, not a receive buffer each.
const FLOW_QUEUE: usize = 64;

/// A full flow table is reported to the handler at most this often (the
/// datagrams turned away meanwhile are only dropped), so a flood of new
/// addresses is one event a second, not one per datagram.
const TURNED_AWAY_EVERY: Duration = Duration::from_secs(1);

/// What the owner of a flow socket does with its flows.
pub trait FlowHandler {
    /// A new flow's work, run as a task of its own until the flow ends.
    fn start(&self, visitor: FlowVisitor) -> impl Future<Output = ()> + Send + 'static;
    /// A datagram from `peer` found `max` flows running already.
    fn turned_away(&self, peer: SocketAddr, max: usize);
    /// Receiving failed (the loop goes on).
    fn recv_failed(&self, e: io::Error);
}

/// The visitor's side of one flow: datagrams its queue hands over, answers
/// sent from the shared socket.
pub struct FlowVisitor {
    queue: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
}

impl FlowVisitor {
    /// The visitor's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Drops what arrives until nothing did for `idle` or the queue ends:
    /// a refused flow keeps its place this way, so its visitor is refused
    /// once, not once per datagram.
    pub async fn drain_until_quiet(&mut self, idle: Duration) {
        while let Ok(Some(_)) = tokio::time::timeout(idle, self.queue.recv()).await {}
    }
}

impl Datagrams for FlowVisitor {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.queue.recv().await)
    }

    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        self.socket.send_to(&datagram, self.peer).await.map(drop)
    }
}

/// A running flow, as the loop knows it.
struct Flow {
    /// Tells this flow from a later one of the same visitor.
    serial: u64,
    queue: mpsc::Sender<Bytes>,
}

/// Receives datagrams on `socket` until `stop` resolves, handing each to
/// its visitor's flow, started in `flows` through `handler`. Once it
/// returns, the flows' queues end: each flow ends once it drained its
/// queue (wait for `flows` to see them done).
pub async fn serve_flows<H: FlowHandler>(
    socket: Arc<UdpSocket>,
    max_flows: usize,
    handler: &H,
    flows: &TaskTracker,
    stop: impl Future<Output = ()>,
) {
    let mut running: HashMap<SocketAddr, Flow> = HashMap::new();
    let (ended, mut ends) = mpsc::unbounded_channel();
    let mut serial = 0u64;
    let mut last_turned_away: Option<Instant> = None;
    // One receive buffer, reused; each datagram leaves it as a copy of its
    // own size (a split-off `Bytes` would pin the whole buffer while queued).
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(stop);
    loop {
        let (peer, datagram) = tokio::select! {
            () = &mut stop => return,
            Some((peer, done)) = ends.recv() => {
                if running.get(&peer).is_some_and(|f| f.serial == done) {
                    running.remove(&peer);
                }
                continue;
            }
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, peer)) => (peer, Bytes::copy_from_slice(&buf[..n])),
                Err(e) => {
                    handler.recv_failed(e);
                    continue;
                }
            },
        };
        let datagram = match running.get(&peer) {
            None => datagram,
            Some(flow) => match flow.queue.try_send(datagram) {
                Ok(()) | Err(TrySendError::Full(_)) => continue,
                // Its flow just ended: a new one starts.
                Err(TrySendError::Closed(datagram)) => datagram,
            },
        };
        if running.len() >= max_flows && !running.contains_key(&peer) {
            if last_turned_away.is_none_or(|at| at.elapsed() >= TURNED_AWAY_EVERY) {
                last_turned_away = Some(Instant::now());
                handler.turned_away(peer, max_flows);
            }
            continue;
        }
        let (queue, inbox) = mpsc::channel(FLOW_QUEUE);
        let _ = queue.try_send(datagram);
        serial += 1;
        running.insert(peer, Flow { serial, queue });
        let visitor = FlowVisitor {
            queue: inbox,
            socket: socket.clone(),
            peer,
        };
        let work = handler.start(visitor);
        let (ended, done) = (ended.clone(), serial);
        flows.spawn(async move {
            work.await;
            let _ = ended.send((peer, done));
        });
    }
}
