//! The hooked relay for UDP flows: whole datagrams between the visitor side
//! and the service side of one flow, each offered to the chain on its own
//! (`on_data` once per datagram, with its size), metered like TCP chunks,
//! so rate limits, quotas and meters apply to datagrams as they do to
//! bytes. A flow has no end of its own: it ends when a side does (the
//! server drops a tunnel's flows when it closes) or when no datagram went
//! either way for the idle time.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, sleep_until, Instant};

use crate::info::{Direction, Scope, StreamInfo};
use crate::open::Open;
use crate::relay::RelayError;
use crate::verdict::{CloseReason, Verdict};

/// How many datagrams one side hands over in a burst before the relay
/// flushes and looks at the other side again.
const BURST: usize = 64;

/// One side of a flow: whole datagrams in, whole datagrams out.
///
/// The relay moves bursts: after a datagram arrives it takes the ones that
/// are already waiting ([`try_recv`](Datagrams::try_recv)), writes each
/// ([`feed`](Datagrams::feed)) and then [`flush`](Datagrams::flush)es once,
/// so a side that frames datagrams into a stream (the mux) carries a burst
/// in one write instead of one per datagram.
pub trait Datagrams: Send {
    /// The next datagram, or `None` once this side has ended. Cancel-safe:
    /// the relay waits on both sides at once and drops the loser.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;

    /// A datagram that is already here, without waiting; `None` when there
    /// is none yet (or this side never has one ready).
    fn try_recv(&mut self) -> Option<io::Result<Bytes>>;

    /// Writes one datagram, whole; it may wait in a buffer until [`flush`](Datagrams::flush).
    fn feed(&mut self, datagram: Bytes) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends whatever [`feed`](Datagrams::feed) left buffered.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Relays datagrams between `visitor` and `service` until a side ends or
/// fails, a hook closes the flow, or nothing moved for `idle` (if set). A `Throttle`
/// verdict holds the flow for its wait before the datagram goes on. Returns
/// the close reason (the caller closes `stream` with it); I/O failures are
/// also reported through the chain's `on_error`.
pub async fn relay_datagrams<V, S>(
    visitor: &mut V,
    service: &mut S,
    stream: &Open<StreamInfo>,
    idle: Option<Duration>,
) -> CloseReason
where
    V: Datagrams + ?Sized,
    S: Datagrams + ?Sized,
{
    let mut last = Instant::now();
    loop {
        let (dir, got) = tokio::select! {
            got = visitor.recv() => (Direction::Ingress, got),
            got = service.recv() => (Direction::Egress, got),
            Some(idle) = quiet_for(last, idle) => {
                let idle = idle.as_secs_f64();
                return CloseReason::Timeout(format!("idle: no datagram either way for {idle}s"));
            }
        };
        last = Instant::now();
        let moved = match dir {
            Direction::Ingress => burst(visitor, service, dir, got, stream).await,
            Direction::Egress => burst(service, visitor, dir, got, stream).await,
        };
        if let Err(reason) = moved {
            return reason;
        }
    }
}

/// Carries `first` and the datagrams already waiting behind it (up to
/// [`BURST`]) from `from` to `to`, each offered to the hooks, then flushes
/// `to`. An error is the flow's close reason.
async fn burst<F, T>(
    from: &mut F,
    to: &mut T,
    dir: Direction,
    first: io::Result<Option<Bytes>>,
    stream: &Open<StreamInfo>,
) -> Result<(), CloseReason>
where
    F: Datagrams + ?Sized,
    T: Datagrams + ?Sized,
{
    let (from_side, to_side) = match dir {
        Direction::Ingress => ("visitor", "service"),
        Direction::Egress => ("service", "visitor"),
    };
    let write_failed = |e| failed(stream, to_side, "write", e);
    let mut next = first.transpose();
    let mut carried = 0;
    while let Some(got) = next {
        let datagram = got.map_err(|e| failed(stream, from_side, "read", e))?;
        stream.info().meter.add(dir, datagram.len() as u64);
        if stream.wants_data() {
            match stream.on_data(dir, &datagram) {
                Verdict::Continue => {}
                Verdict::Throttle(wait) => {
                    // What is buffered goes now, not after the wait.
                    to.flush().await.map_err(write_failed)?;
                    sleep(wait).await;
                }
                Verdict::Close(reason) => return Err(CloseReason::Hook(reason)),
            }
        }
        to.feed(datagram).await.map_err(write_failed)?;
        carried += 1;
        next = if carried < BURST {
            from.try_recv()
        } else {
            None
        };
    }
    if carried == 0 {
        return Err(CloseReason::Finished);
    }
    to.flush().await.map_err(write_failed)
}

/// Resolves to `idle` once `idle` has passed since `last`; never without one.
async fn quiet_for(last: Instant, idle: Option<Duration>) -> Option<Duration> {
    match idle {
        Some(idle) => {
            sleep_until(last + idle).await;
            Some(idle)
        }
        None => std::future::pending().await,
    }
}

/// Reports a side's I/O failure and names it as the close reason.
fn failed(
    stream: &Open<StreamInfo>,
    side: &'static str,
    op: &'static str,
    source: io::Error,
) -> CloseReason {
    let err = RelayError { side, op, source };
    stream.chain().error(Scope::Stream(stream.info()), &err);
    CloseReason::Error(err.to_string())
}
