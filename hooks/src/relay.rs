//! The hooked relay: a bidirectional copy between the visitor side and the
//! service side of one stream, asking the chain about every chunk.
//!
//! Both directions are driven by one future without splitting the streams
//! (no lock, as in tokio's `copy_bidirectional`). Each direction reads into
//! a small buffer inside the future (no heap at all for idle and
//! interactive streams) until a read fills it; then it moves to a heap
//! buffer of `max_chunk`, reused for every chunk, so bulk streams get large
//! writes. A stream that stays idle for [`SHRINK_AFTER`] gives the big
//! buffers back: thousands of connections that moved a file once and then
//! idle cost kilobytes, not 128 KiB each. A `Throttle` verdict holds the
//! chunk back on a reused, pinned `Sleep` (allocated on the first throttle
//! only). EOF on one side becomes a half-close (`shutdown`) of the other, so
//! request/response protocols that close their write side still get their
//! answer. With an idle timeout set, a stream that moves no byte either way
//! for that long is closed (`CloseReason::Timeout`); the relay reads the
//! clock at most once per wake-up that moved bytes for it.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::info::{ChunkTime, Direction, Scope, StreamInfo};
use crate::open::Open;
use crate::verdict::{CloseReason, Reason, Verdict};

/// Size of the small buffer each direction holds inline.
pub const INLINE_CHUNK: usize = 2 * 1024;

/// Idle time after which a direction gives its big buffer back.
pub const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// Buffer sizes and the idle timeout of the relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Bytes a direction reads at once until a read fills them (at most
    /// [`INLINE_CHUNK`], the buffer kept inline); then it reads `max_chunk`.
    pub initial_chunk: usize,
    /// Largest chunk read (and offered to hooks) at once.
    pub max_chunk: usize,
    /// Closes a stream that moved no byte either way for this long (none: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            initial_chunk: INLINE_CHUNK,
            max_chunk: 64 * 1024,
            idle_timeout: None,
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
    Idle(Duration),
}

/// The idle timeout's state: when bytes last moved, and the timer that
/// checks it (re-armed only when it fires, not per chunk).
struct Idle {
    after: Duration,
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(after: Duration) -> Idle {
        let now = Instant::now();
        Idle {
            after,
            last_active: now,
            timer: Box::pin(tokio::time::sleep_until(now + after)),
        }
    }

    /// Whether the stream has been idle for `after` (else the timer is re-armed).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last_active + self.after;
            if deadline <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }
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
    /// Where reads go while the stream is not bulk.
    small: [u8; INLINE_CHUNK],
    /// Bytes read into `small` at once.
    small_len: usize,
    /// The bulk buffer: empty until a read fills `small`, emptied after idle.
    big: Vec<u8>,
    /// Reads (and the chunk in flight) use `big`.
    on_big: bool,
    max: usize,
    start: usize,
    end: usize,
    /// The last read found nothing and nothing waits to be written.
    idle: bool,
    /// A read since the relay last looked returned bytes.
    moved: bool,
    read_done: bool,
    need_flush: bool,
    finished: bool,
    throttled: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pump {
    fn new(dir: Direction, cfg: &RelayConfig) -> Self {
        let max = cfg.max_chunk.max(1);
        Pump {
            dir,
            small: [0; INLINE_CHUNK],
            small_len: cfg.initial_chunk.clamp(1, INLINE_CHUNK).min(max),
            big: Vec::new(),
            on_big: false,
            max,
            start: 0,
            end: 0,
            idle: false,
            moved: false,
            read_done: false,
            need_flush: false,
            finished: false,
            throttled: false,
            sleep: None,
        }
    }

    /// The buffer the current chunk is in.
    fn chunk(&self) -> &[u8] {
        if self.on_big {
            &self.big[self.start..self.end]
        } else {
            &self.small[self.start..self.end]
        }
    }

    /// Holds a big buffer that an idle spell could give back.
    fn holds_big(&self) -> bool {
        self.big.capacity() > 0
    }

    /// Gives the big buffer back if nothing is in it.
    fn shrink_if_idle(&mut self) {
        if (self.idle || self.finished) && self.start == self.end {
            self.big = Vec::new();
            self.on_big = false;
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
        time: &ChunkTime,
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
                let n = ready!(writer.as_mut().poll_write(cx, self.chunk()))
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
            if !self.on_big && self.end == self.small_len && self.small_len < self.max {
                // The last read filled the small buffer: this is a bulk stream.
                if self.big.is_empty() {
                    self.big.resize(self.max, 0);
                }
                self.on_big = true;
            }
            let mut rb = if self.on_big {
                ReadBuf::new(&mut self.big)
            } else {
                ReadBuf::new(&mut self.small[..self.small_len])
            };
            match reader.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => {
                    self.idle = true;
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
            self.idle = false;
            self.moved = true;
            if stream.wants_data() {
                match stream.on_data_at(self.dir, self.chunk(), time) {
                    Verdict::Continue => {}
                    Verdict::Throttle(wait) => self.throttle(wait),
                    Verdict::Close(r) => return Poll::Ready(Err(End::Hook(r))),
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
    // Gives big buffers back after an idle spell; allocated the first time
    // a direction goes bulk, reused after.
    let mut shrink: Option<Pin<Box<Sleep>>> = None;
    let mut shrink_armed = false;
    let mut idle = cfg.idle_timeout.map(Idle::new);
    let result = poll_fn(|cx| {
        // One stamp per wake-up, read only if a hook asks.
        let time = ChunkTime::new();
        if !ingress.finished {
            if let Poll::Ready(r) = ingress.poll_copy(
                cx,
                Pin::new(&mut *visitor),
                Pin::new(&mut *service),
                stream,
                &time,
            ) {
                r?;
                ingress.finished = true;
            }
        }
        if !egress.finished {
            if let Poll::Ready(r) = egress.poll_copy(
                cx,
                Pin::new(&mut *service),
                Pin::new(&mut *visitor),
                stream,
                &time,
            ) {
                r?;
                egress.finished = true;
            }
        }
        if ingress.finished && egress.finished {
            return Poll::Ready(Ok(()));
        }
        if let Some(idle) = &mut idle {
            if std::mem::take(&mut ingress.moved) | std::mem::take(&mut egress.moved) {
                idle.last_active = Instant::now();
            }
            if idle.expired(cx) {
                return Poll::Ready(Err(End::Idle(idle.after)));
            }
        }
        if ingress.holds_big() || egress.holds_big() {
            let deadline = Instant::now() + SHRINK_AFTER;
            let timer = shrink.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if !shrink_armed {
                timer.as_mut().reset(deadline);
                shrink_armed = true;
            }
            while timer.as_mut().poll(cx).is_ready() {
                ingress.shrink_if_idle();
                egress.shrink_if_idle();
                if !(ingress.holds_big() || egress.holds_big()) {
                    shrink_armed = false;
                    break;
                }
                timer.as_mut().reset(Instant::now() + SHRINK_AFTER);
            }
        }
        Poll::Pending
    })
    .await;
    match result {
        Ok(()) => CloseReason::Finished,
        Err(End::Hook(reason)) => CloseReason::Hook(reason),
        Err(End::Idle(after)) => CloseReason::Timeout(format!(
            "idle: no bytes either way for {}s",
            after.as_secs_f64()
        )),
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
