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

/// One side of a flow: whole datagrams in, whole datagrams out.
pub trait Datagrams: Send {
    /// The next datagram, or `None` once this side has ended. Cancel-safe:
    /// the relay waits on both sides at once and drops the loser.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;

    /// Sends one datagram, whole.
    fn send(&mut self, datagram: Bytes) -> impl Future<Output = io::Result<()>> + Send;
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
        let datagram = match got {
            Ok(Some(datagram)) => datagram,
            Ok(None) => return CloseReason::Finished,
            Err(source) => {
                let from = match dir {
                    Direction::Ingress => "visitor",
                    Direction::Egress => "service",
                };
                return failed(stream, from, "read", source);
            }
        };
        last = Instant::now();
        stream.info().meter.add(dir, datagram.len() as u64);
        if stream.wants_data() {
            match stream.on_data(dir, &datagram) {
                Verdict::Continue => {}
                Verdict::Throttle(wait) => sleep(wait).await,
                Verdict::Close(reason) => return CloseReason::Hook(reason),
            }
        }
        let sent = match dir {
            Direction::Ingress => service.send(datagram).await,
            Direction::Egress => visitor.send(datagram).await,
        };
        if let Err(source) = sent {
            let to = match dir {
                Direction::Ingress => "service",
                Direction::Egress => "visitor",
            };
            return failed(stream, to, "write", source);
        }
    }
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
