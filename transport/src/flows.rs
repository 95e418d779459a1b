//! UDP flows on one socket, the same on both ends of a session: the
//! server's public socket of a reverse UDP tunnel and the client's local
//! socket of a UDP forward both receive datagrams from many visitors.
//!
//! UDP has no connections, so [`serve_flows`] makes them: each source
//! address is a flow, started by the caller's [`FlowHandler`] (a stream to
//! the far side and to the hooks) and fed through a queue of at most
//! [`FLOW_QUEUE_BYTES`] (a flow that falls further behind loses datagrams,
//! as a congested network would); answers go
//! back from the same socket. At most `max_flows` run at once; a datagram
//! from a new address past that is turned away.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reitunnel_hooks::datagram::Datagrams;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::datagram::{MAX_DATAGRAM, WRITE_BURST};

/// The most one flow's queue holds, in bytes (each datagram counted with
/// 64 bytes of overhead); a datagram that would pass it is dropped.
/// Queued datagrams are copies of their own size, not receive buffers.
///
/// It is slack for the moments the flow's task is not running: at
/// 1 Gbit/s of 1,400-byte datagrams on a busy 2-core machine, a queue of
/// 64 datagrams (90 KB) lost 27 % of them, 192 (270 KB) or more 0.6 %.
pub const FLOW_QUEUE_BYTES: usize = 256 * 1024;

/// What one flow's framing holds besides its queue: a burst each way.
/// A datagram larger than a burst stretches it for as long as it takes to
/// pass (at most [`MAX_DATAGRAM`] each way, only while one that large does).
pub const FLOW_FRAMING: usize = 2 * WRITE_BURST;

/// How long a refused flow keeps its place (see [`FlowVisitor::hold_refused`]).
pub const REFUSED_FLOW_HOLD: Duration = Duration::from_secs(1);

/// How much a flow's queue reserves at a time as it grows (see
/// [`FlowHandler::reserve`]): a flow holds what it queued at its peak,
/// in steps of this, not its worst case from its first datagram on.
pub const QUEUE_STEP: usize = 16 * 1024;

/// What a queued datagram costs beyond its bytes (its handle and queue
/// slot), so that a flood of tiny datagrams is bounded too.
const DATAGRAM_OVERHEAD: usize = 64;

/// A full flow table, and datagrams dropped by full queues, are reported
/// to the handler at most this often, so a flood is one event a second,
/// not one per datagram.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Datagrams dropped because their flows' queues were full, since the
/// last report: the far side (or the flow's own hooks) is not keeping up.
#[derive(Debug, Error)]
#[error(
    "{dropped} datagram(s) dropped, the last from {last_peer}: their flow's queue was full \
     ({FLOW_QUEUE_BYTES} bytes; the far side is not keeping up)"
)]
pub struct QueuesFull {
    /// How many were dropped.
    pub dropped: u64,
    /// The visitor of the last one.
    pub last_peer: SocketAddr,
}

/// What the owner of a flow socket does with its flows.
pub trait FlowHandler {
    /// Memory reserved for a flow's queue, given back when dropped.
    type Reserved: Send + 'static;
    /// Reserves `bytes` more for a flow's queue, which grows in steps of
    /// [`QUEUE_STEP`] up to [`FLOW_QUEUE_BYTES`] and holds them until the
    /// flow ends; `None` when none is to be had: the datagram is dropped,
    /// as by a full queue.
    fn reserve(&self, bytes: usize) -> Option<Self::Reserved>;
    /// A new flow's work, run as a task of its own until the flow ends.
    fn start(&self, visitor: FlowVisitor) -> impl Future<Output = ()> + Send + 'static;
    /// A datagram from `peer` found `max` flows running already.
    fn turned_away(&self, peer: SocketAddr, max: usize);
    /// Flows' queues were full: datagrams were dropped (at most one report
    /// a second, counting every drop).
    fn queues_full(&self, full: QueuesFull);
    /// Receiving failed (the loop goes on).
    fn recv_failed(&self, e: io::Error);
}

/// The visitor's side of one flow: datagrams its queue hands over, answers
/// sent from the shared socket.
pub struct FlowVisitor {
    queue: mpsc::UnboundedReceiver<Bytes>,
    /// Bytes in `queue`, as [`cost`] counts them.
    queued: Arc<AtomicUsize>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
}

impl FlowVisitor {
    /// The visitor's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// For a refused flow: drops what arrives for [`REFUSED_FLOW_HOLD`] (or
    /// `idle`, if shorter), or until the queue ends. The flow keeps its
    /// place meanwhile, so its visitor is refused once per hold, not once
    /// per datagram; then it ends, and the visitor's next datagram is asked
    /// about again: a refusal lasts no longer than what caused it.
    pub async fn hold_refused(&mut self, idle: Duration) {
        let drain = async { while let Ok(Some(_)) = self.recv().await {} };
        let _ = tokio::time::timeout(REFUSED_FLOW_HOLD.min(idle), drain).await;
    }

    /// Takes `datagram` off the queue's count.
    fn taken(&self, datagram: Bytes) -> Bytes {
        self.queued.fetch_sub(cost(&datagram), Ordering::Relaxed);
        datagram
    }
}

/// What `datagram` counts for in a flow's queue.
fn cost(datagram: &Bytes) -> usize {
    datagram.len() + DATAGRAM_OVERHEAD
}

impl Datagrams for FlowVisitor {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.queue.recv().await.map(|d| self.taken(d)))
    }

    fn try_recv(&mut self) -> Option<io::Result<Bytes>> {
        let datagram = self.queue.try_recv().ok()?;
        Some(Ok(self.taken(datagram)))
    }

    async fn feed(&mut self, datagram: Bytes) -> io::Result<()> {
        self.socket.send_to(&datagram, self.peer).await.map(drop)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A running flow, as the loop knows it.
struct Flow<R> {
    /// Tells this flow from a later one of the same visitor.
    serial: u64,
    queue: mpsc::UnboundedSender<Bytes>,
    /// Bytes in the queue: only this loop adds, only the flow takes away.
    queued: Arc<AtomicUsize>,
    /// Memory reserved for the queue, [`QUEUE_STEP`] each.
    reserved: Vec<R>,
}

/// What became of a datagram offered to a flow.
#[derive(Debug, PartialEq)]
enum Offered {
    Queued,
    /// The queue was full.
    Dropped,
    /// The flow has ended: here is the datagram back.
    Ended(Bytes),
}

impl<R> Flow<R> {
    /// Flow `serial` of `peer` on `socket`: the loop's side and the visitor's.
    fn open(serial: u64, socket: Arc<UdpSocket>, peer: SocketAddr) -> (Flow<R>, FlowVisitor) {
        let (queue, inbox) = mpsc::unbounded_channel();
        let queued = Arc::<AtomicUsize>::default();
        let visitor = FlowVisitor {
            queue: inbox,
            queued: queued.clone(),
            socket,
            peer,
        };
        let flow = Flow {
            serial,
            queue,
            queued,
            reserved: Vec::new(),
        };
        (flow, visitor)
    }

    /// Queues `datagram` unless that would pass [`FLOW_QUEUE_BYTES`] or
    /// the memory `reserve` can give.
    fn offer(&mut self, datagram: Bytes, reserve: impl Fn(usize) -> Option<R>) -> Offered {
        let cost = cost(&datagram);
        let after = self.queued.load(Ordering::Relaxed) + cost;
        if after > FLOW_QUEUE_BYTES {
            return Offered::Dropped;
        }
        while after > self.reserved.len() * QUEUE_STEP {
            match reserve(QUEUE_STEP) {
                Some(more) => self.reserved.push(more),
                None => return Offered::Dropped,
            }
        }
        self.queued.fetch_add(cost, Ordering::Relaxed);
        match self.queue.send(datagram) {
            Ok(()) => Offered::Queued,
            Err(returned) => {
                self.queued.fetch_sub(cost, Ordering::Relaxed);
                Offered::Ended(returned.0)
            }
        }
    }
}

/// Counts a drop from `peer` into the drops not yet reported.
fn count_drop(unreported: &mut Option<QueuesFull>, peer: SocketAddr) {
    let full = unreported.get_or_insert(QueuesFull {
        dropped: 0,
        last_peer: peer,
    });
    full.dropped += 1;
    full.last_peer = peer;
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
    let mut running: HashMap<SocketAddr, Flow<H::Reserved>> = HashMap::new();
    let (ended, mut ends) = mpsc::unbounded_channel();
    let mut serial = 0u64;
    let mut last_turned_away: Option<Instant> = None;
    // Drops are reported when this fires (at once after a quiet second),
    // then it is set a second ahead; one timer, reset, not one per drop.
    let mut unreported: Option<QueuesFull> = None;
    let report = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(report);
    // One receive buffer, reused; each datagram leaves it as a copy of its
    // own size (a split-off `Bytes` would pin the whole buffer while queued).
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(stop);
    loop {
        let (peer, datagram) = tokio::select! {
            () = &mut stop => {
                if let Some(full) = unreported.take() {
                    handler.queues_full(full);
                }
                return;
            }
            () = &mut report, if unreported.is_some() => {
                if let Some(full) = unreported.take() {
                    handler.queues_full(full);
                }
                report.as_mut().reset((Instant::now() + REPORT_EVERY).into());
                continue;
            }
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
        let reserve = |bytes| handler.reserve(bytes);
        let datagram = match running.get_mut(&peer) {
            None => datagram,
            Some(flow) => match flow.offer(datagram, reserve) {
                Offered::Queued => continue,
                Offered::Dropped => {
                    count_drop(&mut unreported, peer);
                    continue;
                }
                // Its flow just ended: a new one starts.
                Offered::Ended(datagram) => datagram,
            },
        };
        if running.len() >= max_flows && !running.contains_key(&peer) {
            if last_turned_away.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                last_turned_away = Some(Instant::now());
                handler.turned_away(peer, max_flows);
            }
            continue;
        }
        serial += 1;
        let (mut flow, visitor) = Flow::open(serial, socket.clone(), peer);
        if flow.offer(datagram, reserve) == Offered::Dropped {
            count_drop(&mut unreported, peer);
        }
        running.insert(peer, flow);
        let work = handler.start(visitor);
        let (ended, done) = (ended.clone(), serial);
        flows.spawn(async move {
            work.await;
            let _ = ended.send((peer, done));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A flow of a visitor at 127.0.0.1:9, on a socket of its own.
    async fn flow() -> (Flow<()>, FlowVisitor) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Flow::open(1, Arc::new(socket), "127.0.0.1:9".parse().unwrap())
    }

    /// Memory without end.
    fn unlimited(_: usize) -> Option<()> {
        Some(())
    }

    /// Offers `datagram` `n` times: how many were queued.
    fn offer_times(flow: &mut Flow<()>, datagram: &Bytes, n: usize) -> usize {
        (0..n)
            .filter(|_| flow.offer(datagram.clone(), unlimited) == Offered::Queued)
            .count()
    }

    #[tokio::test]
    async fn a_flow_queues_up_to_its_bytes_then_drops_until_its_reader_catches_up() {
        let (mut flow, mut visitor) = flow().await;
        let datagram = Bytes::from(vec![7u8; 1400]);
        let fits = FLOW_QUEUE_BYTES / cost(&datagram);
        assert_eq!(offer_times(&mut flow, &datagram, fits + 10), fits);
        assert_eq!(visitor.queue.len(), fits);
        assert_eq!(flow.queued.load(Ordering::Relaxed), fits * cost(&datagram));

        // The reader takes two: two more fit.
        assert!(visitor.try_recv().is_some() && visitor.try_recv().is_some());
        assert_eq!(offer_times(&mut flow, &datagram, 3), 2);
        assert_eq!(visitor.queue.len(), fits);
    }

    #[tokio::test]
    async fn tiny_datagrams_are_bounded_too_and_an_ended_flow_gives_the_datagram_back() {
        let (mut flow, visitor) = flow().await;
        let tiny = Bytes::from_static(b"x");
        let fits = FLOW_QUEUE_BYTES / (1 + DATAGRAM_OVERHEAD);
        assert_eq!(offer_times(&mut flow, &tiny, FLOW_QUEUE_BYTES), fits);
        assert_eq!(visitor.queue.len(), fits);
        let (mut flow, visitor) = self::flow().await;
        drop(visitor);
        let again = Bytes::from_static(b"again");
        assert_eq!(flow.offer(again.clone(), unlimited), Offered::Ended(again));
        assert_eq!(flow.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_queue_reserves_memory_as_it_grows_and_drops_what_none_is_left_for() {
        let (mut flow, _visitor) = flow().await;
        let datagram = Bytes::from(vec![7u8; 1000]);
        let steps = std::cell::Cell::new(0);
        // Room for three steps, then no more.
        let reserve = |bytes: usize| {
            assert_eq!(bytes, QUEUE_STEP);
            (steps.get() < 3).then(|| steps.set(steps.get() + 1))
        };
        assert_eq!(flow.offer(datagram.clone(), reserve), Offered::Queued);
        assert_eq!(flow.reserved.len(), 1, "one datagram, one step");
        let fits = 3 * QUEUE_STEP / cost(&datagram);
        let queued = (1..fits + 5)
            .filter(|_| flow.offer(datagram.clone(), reserve) == Offered::Queued)
            .count();
        assert_eq!(queued + 1, fits);
        assert_eq!(flow.reserved.len(), 3);
    }

    /// Hands each new flow's visitor side to the test, unread, and passes
    /// reports of full queues on.
    struct Handing {
        started: mpsc::UnboundedSender<FlowVisitor>,
        reports: mpsc::UnboundedSender<QueuesFull>,
    }

    impl FlowHandler for Handing {
        type Reserved = ();
        fn reserve(&self, _: usize) -> Option<()> {
            Some(())
        }
        fn start(&self, visitor: FlowVisitor) -> impl Future<Output = ()> + Send + 'static {
            let _ = self.started.send(visitor);
            // The flow runs (its place in the table kept) until the test ends.
            std::future::pending()
        }
        fn queues_full(&self, full: QueuesFull) {
            let _ = self.reports.send(full);
        }
        fn turned_away(&self, peer: SocketAddr, max: usize) {
            panic!("{peer} turned away ({max} flows)");
        }
        fn recv_failed(&self, e: io::Error) {
            panic!("{e}");
        }
    }

    #[tokio::test]
    async fn every_datagram_a_full_queue_drops_is_counted_in_the_reports() {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let to = socket.local_addr().unwrap();
        let (started, mut flows_started) = mpsc::unbounded_channel();
        let (reports, mut reported) = mpsc::unbounded_channel();
        let handler = Handing { started, reports };
        let tasks = TaskTracker::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = serve_flows(socket, 100, &handler, &tasks, async {
            let _ = stopped.await;
        });
        let big = vec![1u8; 60_000];
        let fits = FLOW_QUEUE_BYTES / (big.len() + DATAGRAM_OVERHEAD);
        let drive = async {
            let visitor = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut first = None;
            for _ in 0..fits + 3 {
                visitor.send_to(&big, to).await.unwrap();
                // A probe from a new address is a new flow: once it starts,
                // the loop has handled the datagram sent before it.
                let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                probe.send_to(b"probe", to).await.unwrap();
                let probe = probe.local_addr().unwrap();
                loop {
                    let flow = flows_started.recv().await.unwrap();
                    if flow.peer() == probe {
                        break;
                    }
                    first.get_or_insert(flow);
                }
            }
            stop.send(()).unwrap();
            (visitor.local_addr().unwrap(), first.unwrap())
        };
        let ((), (visitor, flow)) = tokio::join!(serve, drive);
        assert_eq!(flow.peer(), visitor);
        assert_eq!(flow.queue.len(), fits, "the first {fits} were queued");
        let mut dropped = 0;
        while let Ok(full) = reported.try_recv() {
            assert_eq!(full.last_peer, visitor);
            dropped += full.dropped;
        }
        assert_eq!(dropped, 3, "every drop reported, by the time the loop ends");
    }
}
