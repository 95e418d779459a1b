//! The yamux session driver.
//!
//! yamux does all socket I/O inside `Connection::poll_next_inbound`, and
//! opening a stream needs `&mut Connection`; an unpolled connection stalls
//! every stream once a few frames queue. So one task owns the connection,
//! polls it without pause, hands inbound streams to a channel and opens
//! outbound streams on request. Handles are cheap clones that talk to it.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::session_io::SessionIo;

/// A multiplexed stream, usable with tokio's I/O traits.
pub type MuxStream = Compat<yamux::Stream>;

/// The session died or refused to open a stream.
#[derive(Debug, Error)]
pub enum MuxError {
    /// yamux reported an error (connection reset, protocol violation, too many streams).
    #[error("multiplexer: {0}")]
    Connection(#[from] yamux::ConnectionError),
    /// The session is closed; no stream can be opened.
    #[error("session closed")]
    Closed,
}

/// How long either side waits for a goodbye frame to go out and for the
/// session's transport to close before giving up on a clean close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The receive window every yamux stream starts with (the yamux spec's
/// initial credit): what the peer may send on a new stream before we read.
pub const STREAM_CREDIT: usize = yamux::DEFAULT_CREDIT as usize;

/// Tuning of a yamux session.
///
/// Across a link, one stream moves at most one receive window per round
/// trip. yamux starts every stream at [`STREAM_CREDIT`] (256 KiB: 42 Mbit/s
/// at 50 ms) and, as patched here, quadruples a stream's window whenever its
/// reader drains half of it within two round trips, so a bulk stream grows
/// to between two and eight times the bandwidth-delay product in a few
/// round trips (about 1 s at 150 ms). The growth comes out of `window_headroom`,
/// which the session's streams share; the `STREAM_CREDIT` of each stream is
/// on top. So what one session can make us buffer is at most
/// `open streams x STREAM_CREDIT + window_headroom`, and that is what the
/// server's memory budget accounts for.
#[derive(Debug, Clone, Copy)]
pub struct MuxConfig {
    /// Largest yamux data frame; 16 KiB default costs half the throughput. Max 1 MiB.
    pub split_send_size: usize,
    /// Streams per session, a hard protocol limit: yamux ends the whole
    /// session when it is crossed, so keep it well above the limits that
    /// refuse a single stream with a reason (the server's
    /// `max_streams_per_client`). It costs no memory by itself.
    pub max_streams: usize,
    /// Read buffer between the socket and yamux; frames smaller than this
    /// are queued for the next flush, larger ones go to the socket at once
    /// (see `session_io.rs`).
    pub io_buffer: usize,
    /// Bytes of small frames (acks, resets, pongs) that may queue while the
    /// socket is full. yamux stops reading while it cannot write such an
    /// answer, so this slack keeps two busy peers from waiting on each
    /// other. Memory is taken only while the queue is in use.
    pub io_slack: usize,
    /// Receive window the session's streams may grow into beyond their
    /// initial credit, together. 256 MiB lets one stream fill 10 Gbit/s at
    /// 100 ms, or a few streams share it.
    pub window_headroom: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            split_send_size: 256 * 1024,
            max_streams: 65_536,
            io_buffer: 16 * 1024,
            io_slack: 512 * 1024,
            window_headroom: 256 << 20,
        }
    }
}

impl MuxConfig {
    fn yamux(&self) -> yamux::Config {
        let mut cfg = yamux::Config::default();
        // yamux keeps STREAM_CREDIT per possible stream out of the
        // connection window and lets streams grow into the rest. On a
        // 32-bit target the product may not fit: fewer streams then.
        let streams = self
            .max_streams
            .min((usize::MAX - self.window_headroom) / STREAM_CREDIT)
            .max(1);
        // Window first: yamux asserts window >= STREAM_CREDIT x streams on each setter.
        cfg.set_max_connection_receive_window(Some(streams * STREAM_CREDIT + self.window_headroom));
        cfg.set_max_num_streams(streams);
        cfg.set_split_send_size(self.split_send_size.clamp(16 * 1024, 1024 * 1024));
        cfg
    }
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, MuxError>>;

/// Whether `stream` was closed because its session's connection ended or
/// failed, not by the peer: its end of stream was made up, so a relay that
/// "finished" on it did not finish in order.
pub fn cut_by_connection(stream: &MuxStream) -> bool {
    stream.get_ref().is_lost()
}

/// Opens streams on a session; clone freely. Dropping every handle does not
/// end the session; [`MuxHandle::close`] or dropping the session's
/// [`Inbound`] does.
#[derive(Debug, Clone)]
pub struct MuxHandle {
    open_tx: mpsc::Sender<OpenReply>,
    close: CancellationToken,
}

impl MuxHandle {
    /// Opens a new outbound stream. It reaches the peer with its first write.
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).await.map_err(|_| MuxError::Closed)?;
        let stream = rx.await.map_err(|_| MuxError::Closed)??;
        Ok(stream.compat())
    }

    /// Asks the driver to close the session (a yamux GoAway, then EOF).
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Resolves once the session is closed (by either side, or by [`MuxHandle::close`]).
    pub async fn closed(&self) {
        self.open_tx.closed().await
    }
}

/// Streams the peer opened, in order. `recv` returns `None` once the session is over.
/// Dropping it closes the session.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::UnboundedReceiver<yamux::Stream>,
    _close_on_drop: DropGuard,
}

impl Inbound {
    /// The next stream the peer opened, or `None` when the session ended.
    pub async fn recv(&mut self) -> Option<MuxStream> {
        self.rx.recv().await.map(|s| s.compat())
    }
}

/// Starts a yamux session over `io` (a TCP or TLS stream) on a new task.
/// The task ends, returning why, when the peer goes away or the session is closed.
pub fn spawn_mux<T>(io: T, mode: yamux::Mode, cfg: &MuxConfig) -> (MuxHandle, Inbound, MuxDriver)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn(io, mode, cfg, cfg.yamux())
}

/// [`spawn_mux`] for a session whose streams' windows grow (within
/// `cfg.window_headroom`) only by what `pool` grants: a pool shared by many
/// sessions bounds their windows together and can share the bound fairly.
pub fn spawn_mux_pooled<T>(
    io: T,
    mode: yamux::Mode,
    cfg: &MuxConfig,
    pool: Arc<dyn yamux::WindowPool>,
) -> (MuxHandle, Inbound, MuxDriver)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut yamux = cfg.yamux();
    yamux.set_window_pool(pool);
    spawn(io, mode, cfg, yamux)
}

fn spawn<T>(
    io: T,
    mode: yamux::Mode,
    cfg: &MuxConfig,
    yamux: yamux::Config,
) -> (MuxHandle, Inbound, MuxDriver)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = yamux::Connection::new(SessionIo::new(io, cfg.io_buffer, cfg.io_slack), yamux, mode);
    let (open_tx, open_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let close = CancellationToken::new();
    let task = tokio::spawn(drive(conn, open_rx, in_tx, close.clone()));
    let handle = MuxHandle {
        open_tx,
        close: close.clone(),
    };
    let inbound = Inbound {
        rx: in_rx,
        _close_on_drop: close.drop_guard(),
    };
    (handle, inbound, MuxDriver(task))
}

/// The task that drives a session's I/O.
#[derive(Debug)]
pub struct MuxDriver(JoinHandle<Result<(), MuxError>>);

impl MuxDriver {
    /// After [`MuxHandle::close`]: waits up to [`CLOSE_GRACE`] for the
    /// session to close cleanly, then aborts the task. A peer that stopped
    /// reading would otherwise keep the task, its socket and its buffers
    /// alive for good. `None` if it had to be aborted.
    pub async fn finish(self) -> Option<Result<(), MuxError>> {
        let abort = self.0.abort_handle();
        match tokio::time::timeout(CLOSE_GRACE, self.0).await {
            Ok(joined) => joined.ok(),
            Err(_) => {
                abort.abort();
                None
            }
        }
    }
}

/// The waker yamux gets when asked to open a stream: it records that yamux
/// woke it (an outbound stream was acknowledged) and wakes the driver.
#[derive(Default)]
struct OpenWake {
    ready: AtomicBool,
    task: AtomicWaker,
}

impl Wake for OpenWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.task.wake();
    }
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::UnboundedSender<yamux::Stream>,
    close: CancellationToken,
) -> Result<(), MuxError>
where
    T: FuturesRead + FuturesWrite + Unpin,
{
    let mut pending_open: Option<OpenReply> = None;
    let open_wake = Arc::new(OpenWake::default());
    let open_waker = Waker::from(open_wake.clone());
    // Set while yamux refuses to open (too many streams unacknowledged).
    let mut blocked = false;
    let closing = close.cancelled();
    tokio::pin!(closing);
    let result = poll_fn(|cx| {
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(true));
        }
        open_wake.task.register(cx.waker());
        // Serve open requests one at a time, in order. yamux counts the
        // unacknowledged streams by walking all of them on every call, so
        // while it refuses, ask again only once it wakes us for an ack,
        // not on every frame of every other stream.
        loop {
            if let Some(reply) = pending_open.take() {
                if blocked && !open_wake.ready.swap(false, Ordering::AcqRel) {
                    pending_open = Some(reply);
                    break;
                }
                match conn.poll_new_outbound(&mut Context::from_waker(&open_waker)) {
                    Poll::Ready(r) => {
                        blocked = false;
                        let _ = reply.send(r.map_err(MuxError::from));
                    }
                    Poll::Pending => {
                        blocked = true;
                        pending_open = Some(reply);
                        break;
                    }
                }
            }
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(reply)) => pending_open = Some(reply),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        // Drive all I/O and collect inbound streams.
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // A dropped receiver means nobody accepts streams any more:
                    // dropping the stream resets it.
                    let _ = in_tx.send(stream);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(MuxError::from(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(false)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    // Refuse queued and future open requests.
    open_rx.close();
    if let Some(reply) = pending_open {
        let _ = reply.send(Err(MuxError::Closed));
    }
    match result {
        Ok(true) => {
            let _ = poll_fn(|cx| conn.poll_close(cx)).await;
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    }
}
