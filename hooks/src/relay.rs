//! The hooked relay: a bidirectional copy between the visitor side and the
//! service side of one stream, asking the chain about every chunk.
//!
//! Both directions are driven by one future without splitting the streams
//! (no lock, as in tokio's `copy_bidirectional`). Each direction owns one
//! buffer that starts small and grows once to `max_chunk` when a read fills
//! it, so idle connections stay cheap and bulk ones get large writes. A
//! `Throttle` verdict holds the chunk back on a reused, pinned `Sleep`
//! (allocated on the first throttle only). EOF on one side becomes a
//! half-close (`shutdown`) of the other, so request/response protocols that
//! close their write side still get their answer.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::event::{CloseReason, Direction, Reason, Scope, StreamInfo, Verdict};
use crate::open::Open;

/// Buffer sizes of the relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Buffer size a direction starts with.
    pub initial_chunk: usize,
    /// Largest chunk read (and offered to hooks) at once.
    pub max_chunk: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            initial_chunk: 8 * 1024,
            max_chunk: 64 * 1024,
        }
    }
}

/// An I/O failure on one side of a relay, reported through `on_error`.
#[derive(Debug, thiserror::Error)]
#[error("{side} {op} failed: {source}")]
pub struct RelayError {
    /// `"visitor"` or `"service"`.
    pub side: &'static str,
    /// `"read"`, `"write"` or `"shutdown"`.
    pub op: &'static str,
    /// The error.
    pub source: io::Error,
}

/// An I/O error a side's stream may return to end the relay with a close
/// reason of its own. The relay closes with that reason and does not report
/// the error to `on_error`: whoever raised it has reported what happened.
/// (A server stream that learns mid-relay that the far end refused it uses
/// this to close as "target unreachable" rather than as an I/O failure.)
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Ended(pub CloseReason);

impl Ended {
    /// As an `io::Error`, for a side's `poll_read` or `poll_write` to return.
    pub fn into_io(reason: CloseReason) -> io::Error {
        io::Error::other(Ended(reason))
    }
}

enum End {
    Hook(Reason),
    Io(RelayError),
}

fn sides(dir: Direction) -> (&'static str, &'static str) {
    match dir {
        Direction::Ingress => ("visitor", "service"),
        Direction::Egress => ("service", "visitor"),
    }
}

/// One direction's copy state.
struct Pump {
    dir: Direction,
    buf: Vec<u8>,
    max: usize,
    start: usize,
    end: usize,
    read_done: bool,
    need_flush: bool,
    finished: bool,
    throttled: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pump {
    fn new(dir: Direction, cfg: &RelayConfig) -> Self {
        Pump {
            dir,
            buf: vec![0; cfg.initial_chunk.min(cfg.max_chunk).max(1)],
            max: cfg.max_chunk.max(1),
            start: 0,
            end: 0,
            read_done: false,
            need_flush: false,
            finished: false,
            throttled: false,
            sleep: None,
        }
    }

    fn io_err(&self, reading: bool, op: &'static str, source: io::Error) -> End {
        let (from, to) = sides(self.dir);
        End::Io(RelayError {
            side: if reading { from } else { to },
            op,
            source,
        })
    }

    fn throttle(&mut self, wait: Duration) {
        // A hook may throttle "forever" (Duration::MAX); adding that to now
        // would overflow, so cap it where tokio's own sleep does (~30 years).
        let now = Instant::now();
        let deadline = now
            .checked_add(wait)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.throttled = true;
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        stream: &Open<StreamInfo>,
    ) -> Poll<Result<(), End>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.start < self.end {
                if self.throttled {
                    if let Some(sleep) = &mut self.sleep {
                        if sleep.as_mut().poll(cx).is_pending() {
                            // Bytes already written must not wait on this chunk's throttle.
                            if self.need_flush {
                                ready!(writer.as_mut().poll_flush(cx))
                                    .map_err(|e| self.io_err(false, "write", e))?;
                                self.need_flush = false;
                            }
                            return Poll::Pending;
                        }
                    }
                    self.throttled = false;
                }
                let chunk = &self.buf[self.start..self.end];
                let n = ready!(writer.as_mut().poll_write(cx, chunk))
                    .map_err(|e| self.io_err(false, "write", e))?;
                if n == 0 {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote zero bytes");
                    return Poll::Ready(Err(self.io_err(false, "write", e)));
                }
                self.start += n;
                stream.info().meter.add(self.dir, n as u64);
                self.need_flush = true;
                continue;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_shutdown(cx))
                    .map_err(|e| self.io_err(false, "shutdown", e))?;
                return Poll::Ready(Ok(()));
            }
            if self.end == self.buf.len() && self.buf.len() < self.max {
                // The last read filled the buffer: this is a bulk stream; grow once.
                self.buf.resize(self.max, 0);
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match reader.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => {
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))
                            .map_err(|e| self.io_err(false, "write", e))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_err(true, "read", e))),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                self.read_done = true;
                continue;
            }
            self.start = 0;
            self.end = n;
            if stream.wants_data() {
                match stream.on_data(self.dir, &self.buf[..n]) {
                    Verdict::Continue => {}
                    Verdict::Throttle(wait) => self.throttle(wait),
                    Verdict::Reject(r) | Verdict::Close(r) => {
                        return Poll::Ready(Err(End::Hook(r)))
                    }
                }
            }
        }
    }
}

/// Relays between `visitor` and `service` until both directions reached EOF,
/// a side fails, or a hook closes the stream. Returns the close reason (the
/// caller closes `stream` with it); I/O failures are also reported through
/// the chain's `on_error`. Cancel by dropping the future (both sockets are
/// borrowed, not consumed).
pub async fn relay<V, S>(
    visitor: &mut V,
    service: &mut S,
    stream: &Open<StreamInfo>,
    cfg: &RelayConfig,
) -> CloseReason
where
    V: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ingress = Pump::new(Direction::Ingress, cfg);
    let mut egress = Pump::new(Direction::Egress, cfg);
    let result = poll_fn(|cx| {
        if !ingress.finished {
            if let Poll::Ready(r) =
                ingress.poll_copy(cx, Pin::new(&mut *visitor), Pin::new(&mut *service), stream)
            {
                r?;
                ingress.finished = true;
            }
        }
        if !egress.finished {
            if let Poll::Ready(r) =
                egress.poll_copy(cx, Pin::new(&mut *service), Pin::new(&mut *visitor), stream)
            {
                r?;
                egress.finished = true;
            }
        }
        if ingress.finished && egress.finished {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    match result {
        Ok(()) => CloseReason::Finished,
        Err(End::Hook(reason)) => CloseReason::Hook(reason),
        Err(End::Io(err)) => {
            if let Some(Ended(reason)) = err.source.get_ref().and_then(|e| e.downcast_ref()) {
                return reason.clone();
            }
            let reason = CloseReason::Error(err.to_string());
            stream.chain().error(Scope::Stream(stream.info()), &err);
            reason
        }
    }
}
