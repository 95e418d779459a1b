//! The yamux session driver.
//!
//! yamux does all socket I/O inside `Connection::poll_next_inbound`, and
//! opening a stream needs `&mut Connection`; an unpolled connection stalls
//! every stream once a few frames queue. So one task owns the connection,
//! polls it without pause, hands inbound streams to a channel and opens
//! outbound streams on request. Handles are cheap clones that talk to it.
//!
//! A session may run over several connections ("lanes"): across a long
//! path one TCP connection moves at most its kernel send buffer per round
//! trip, whatever the streams above it do. Each lane is a yamux connection
//! of its own with its own driver task; the session's handle opens each new
//! stream on the lane holding the fewest streams, streams never move, and
//! the streams the peer opens on any lane arrive on the one [`Inbound`].
//! The first lane carries the control stream: the session lives as long as
//! it does, and losing another lane ends only the streams on it.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The first lane, which carries the control stream.
    first: Lane,
    lanes: Arc<Lanes>,
    close: CancellationToken,
}

/// One connection of a session, as the handle sees it.
#[derive(Debug, Clone)]
struct Lane {
    open_tx: mpsc::Sender<OpenReply>,
    /// Streams on it: set by its driver after each turn, raised at once by
    /// each open so that a burst of opens spreads before the driver runs.
    streams: Arc<AtomicUsize>,
}

impl Lane {
    fn new(open_tx: mpsc::Sender<OpenReply>) -> Lane {
        Lane {
            open_tx,
            streams: Arc::default(),
        }
    }

    fn load(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}

/// What the handles of a session share about its lanes.
#[derive(Debug)]
struct Lanes {
    /// The lanes added after the first. Locked to open a stream and to add
    /// a lane, never per chunk.
    more: Mutex<Vec<Lane>>,
    /// Where an added lane hands the streams the peer opens on it; taken
    /// when the first lane ends, so none can be added after.
    inbound: Mutex<Option<mpsc::UnboundedSender<yamux::Stream>>>,
    /// Where ties between equally loaded lanes start, so they take turns.
    turn: AtomicUsize,
    io: MuxConfig,
    yamux: yamux::Config,
    mode: yamux::Mode,
}

impl Lanes {
    /// The lane for a new stream: the least loaded one, the first lane
    /// counting its control stream, ties taken in turn. Lanes that ended
    /// are dropped here.
    fn pick(&self, first: &Lane) -> Lane {
        let mut more = self.more.lock().unwrap_or_else(PoisonError::into_inner);
        more.retain(|lane| !lane.open_tx.is_closed());
        let count = more.len() + 1;
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % count;
        let lane_at = |i: usize| if i == 0 { first } else { &more[i - 1] };
        let best = (0..count)
            .map(|k| (start + k) % count)
            .min_by_key(|&i| lane_at(i).load())
            .unwrap_or(0);
        let lane = lane_at(best).clone();
        lane.streams.fetch_add(1, Ordering::Relaxed);
        lane
    }
}

impl MuxHandle {
    /// Opens a new outbound stream on the least loaded lane. It reaches the
    /// peer with its first write.
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        loop {
            let lane = self.lanes.pick(&self.first);
            let (tx, rx) = oneshot::channel();
            let opened = match lane.open_tx.send(tx).await {
                Ok(()) => rx.await.unwrap_or(Err(MuxError::Closed)),
                Err(_) => Err(MuxError::Closed),
            };
            match opened {
                Ok(stream) => return Ok(stream.compat()),
                // A lane other than the first ended under us: try another.
                Err(MuxError::Closed) if !lane.open_tx.same_channel(&self.first.open_tx) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds a connection to the session: a yamux connection in the
    /// session's mode and configuration over `io`, driven by a task of its
    /// own, whose inbound streams join the session's [`Inbound`]. Closing
    /// the session closes it; its own end (which its [`MuxDriver`] tells)
    /// ends only the streams on it. Fails once the session's first lane
    /// has ended.
    pub fn add_lane<T>(&self, io: T) -> Result<MuxDriver, MuxError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let in_tx = self
            .lanes
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(MuxError::Closed)?;
        let io = SessionIo::new(io, self.lanes.io.io_buffer, self.lanes.io.io_slack);
        let conn = yamux::Connection::new(io, self.lanes.yamux.clone(), self.lanes.mode);
        let (open_tx, open_rx) = mpsc::channel(64);
        let lane = Lane::new(open_tx);
        let ends = Ends {
            close: self.close.child_token(),
            streams: lane.streams.clone(),
            first_of: None,
        };
        let task = tokio::spawn(drive(conn, open_rx, in_tx, ends));
        self.lanes
            .more
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lane);
        Ok(MuxDriver(task))
    }

    /// How many lanes the session has now, the first included.
    pub fn lanes(&self) -> usize {
        let more = self
            .lanes
            .more
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        1 + more.iter().filter(|lane| !lane.open_tx.is_closed()).count()
    }

    /// Asks the drivers to close the session (a yamux GoAway, then EOF, on each lane).
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Whether the session is closed or closing (see [`MuxHandle::closed`]).
    pub fn is_closed(&self) -> bool {
        self.first.open_tx.is_closed() || self.close.is_cancelled()
    }

    /// Resolves once the session is closed (by either side, or by
    /// [`MuxHandle::close`]): when its first lane is.
    pub async fn closed(&self) {
        self.first.open_tx.closed().await
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
    let io = SessionIo::new(io, cfg.io_buffer, cfg.io_slack);
    let conn = yamux::Connection::new(io, yamux.clone(), mode);
    let (open_tx, open_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let close = CancellationToken::new();
    let first = Lane::new(open_tx);
    let lanes = Arc::new(Lanes {
        more: Mutex::default(),
        inbound: Mutex::new(Some(in_tx.clone())),
        turn: AtomicUsize::new(0),
        io: *cfg,
        yamux,
        mode,
    });
    let ends = Ends {
        close: close.clone(),
        streams: first.streams.clone(),
        first_of: Some(lanes.clone()),
    };
    let task = tokio::spawn(drive(conn, open_rx, in_tx, ends));
    let handle = MuxHandle {
        first,
        lanes,
        close: close.clone(),
    };
    let inbound = Inbound {
        rx: in_rx,
        _close_on_drop: close.drop_guard(),
    };
    (handle, inbound, MuxDriver(task))
}

/// The task that drives a session's I/O (one lane's).
#[derive(Debug)]
pub struct MuxDriver(JoinHandle<Result<(), MuxError>>);

impl MuxDriver {
    /// Waits until the lane ended, by either side or by a failure, and says how.
    pub async fn ended(self) -> Result<(), MuxError> {
        self.0.await.unwrap_or(Err(MuxError::Closed))
    }

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

/// What a lane's driver tells the session as it goes and when it ends.
struct Ends {
    /// Cancelled to close the lane (the session's token, or a child of it).
    close: CancellationToken,
    /// Where the driver keeps the lane's stream count.
    streams: Arc<AtomicUsize>,
    /// For the first lane: the session's lanes, which can take no more once
    /// it ended, and which it closes as it ends.
    first_of: Option<Arc<Lanes>>,
}

async fn drive<T>(
    conn: yamux::Connection<T>,
    open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::UnboundedSender<yamux::Stream>,
    ends: Ends,
) -> Result<(), MuxError>
where
    T: FuturesRead + FuturesWrite + Unpin,
{
    let result = drive_lane(conn, open_rx, in_tx, &ends.close, &ends.streams).await;
    ends.streams.store(0, Ordering::Relaxed);
    if let Some(lanes) = ends.first_of {
        lanes
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        ends.close.cancel();
    }
    result
}

async fn drive_lane<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::UnboundedSender<yamux::Stream>,
    close: &CancellationToken,
    streams: &AtomicUsize,
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
                Poll::Pending => {
                    streams.store(conn.num_streams(), Ordering::Relaxed);
                    return Poll::Pending;
                }
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

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// Two ends of a connection that the test can cut: bytes cross a
    /// relay task, and aborting it ends both ends at once.
    fn cuttable() -> (DuplexStream, DuplexStream, JoinHandle<()>) {
        let (a, mut a_far) = duplex(1 << 20);
        let (b, mut b_far) = duplex(1 << 20);
        let relay = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut a_far, &mut b_far).await;
        });
        (a, b, relay)
    }

    /// Echoes every stream the peer opens, until the session ends.
    fn echo(mut inbound: Inbound) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(mut stream) = inbound.recv().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    }

    async fn echoes(stream: &mut MuxStream, what: &[u8]) -> bool {
        let mut back = vec![0u8; what.len()];
        stream.write_all(what).await.is_ok()
            && stream.read_exact(&mut back).await.is_ok()
            && back == what
    }

    #[tokio::test]
    async fn streams_spread_over_lanes_and_losing_one_ends_only_its_streams() {
        let cfg = MuxConfig::default();
        let (client_io, server_io) = duplex(1 << 20);
        let (client, _client_in, _c) = spawn_mux(client_io, yamux::Mode::Client, &cfg);
        let (server, server_in, _s) = spawn_mux(server_io, yamux::Mode::Server, &cfg);
        let _echo = echo(server_in);
        let mut control = client.open().await.unwrap();
        assert!(echoes(&mut control, b"control").await);

        let (lane_client, lane_server, relay) = cuttable();
        let client_lane = client.add_lane(lane_client).unwrap();
        let _server_lane = server.add_lane(lane_server).unwrap();
        assert_eq!((client.lanes(), server.lanes()), (2, 2));
        let mut streams = Vec::new();
        for i in 0..4u8 {
            let mut stream = client.open().await.unwrap();
            assert!(echoes(&mut stream, &[i; 10]).await, "stream {i}");
            streams.push(stream);
        }

        relay.abort();
        let _ = client_lane.ended().await;
        let (mut cut, mut alive) = (0, 0);
        for (i, stream) in streams.iter_mut().enumerate() {
            if echoes(stream, &[i as u8; 10]).await {
                alive += 1;
            } else {
                assert!(
                    cut_by_connection(stream),
                    "stream {i} failed but was not cut"
                );
                cut += 1;
            }
        }
        // The first lane held the control stream, so the new lane took two
        // of the four at least; the first lane at least one.
        assert!(cut >= 2 && alive >= 1, "{cut} cut, {alive} alive");
        assert_eq!(client.lanes(), 1);
        assert!(echoes(&mut control, b"still here").await);
        let mut late = client.open().await.unwrap();
        assert!(
            echoes(&mut late, b"late").await,
            "a new stream opens on the lane left"
        );
    }

    #[tokio::test]
    async fn closing_the_session_closes_every_lane_and_none_can_join_after() {
        let cfg = MuxConfig::default();
        let (client_io, server_io) = duplex(1 << 20);
        let (client, client_in, client_driver) = spawn_mux(client_io, yamux::Mode::Client, &cfg);
        let (server, server_in, _s) = spawn_mux(server_io, yamux::Mode::Server, &cfg);
        let _echo = echo(server_in);
        let (lane_client, lane_server, _relay) = cuttable();
        let lane = client.add_lane(lane_client).unwrap();
        let _server_lane = server.add_lane(lane_server).unwrap();
        client.close();
        drop(client_in);
        assert!(client_driver.finish().await.is_some());
        assert!(
            lane.finish().await.is_some(),
            "the added lane closed with the session"
        );
        let (late, _far) = duplex(1024);
        assert!(matches!(client.add_lane(late), Err(MuxError::Closed)));
        assert!(matches!(client.open().await, Err(MuxError::Closed)));
    }
}
