//! The fault-injection proxy.
//!
//! It runs on a thread of its own with its own runtime, so synchronous
//! tests (driving real processes) and async ones use it alike, and a
//! stalled or black-holed link here never blocks the test's own runtime.
//! Every control method takes effect at once on open connections and on
//! those accepted later, through one `watch` channel of [`State`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

/// One direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// From the connecting side (a client) to the target (a server).
    Target,
    /// From the target back to the connecting side.
    Connector,
}

impl Toward {
    fn index(self) -> usize {
        match self {
            Toward::Target => 0,
            Toward::Connector => 1,
        }
    }
}

/// Largest read, and largest write under a throttle (so pacing stays smooth).
const CHUNK: usize = 64 * 1024;
/// Chunks held per direction while a latency is set.
const IN_FLIGHT: usize = 1024;

/// The faults in force, seen by every connection.
#[derive(Debug, Clone, Default)]
struct State {
    /// Added to every chunk, each way.
    latency: Duration,
    /// Bytes per second, each way; `None`: as fast as the sockets go.
    rate: Option<u64>,
    /// Per direction: the proxy stops reading, so the sender's buffers fill.
    stalled: [bool; 2],
    /// Bytes are read and dropped both ways: each end sees an open,
    /// silent link (a path that died without a reset).
    black_hole: bool,
    /// Bumped by [`FaultProxy::cut`]: connections accepted before it are reset.
    cuts: u64,
    /// Connections cut one by one ([`FaultProxy::cut_connection`]), by number.
    cut_ones: Vec<u64>,
    /// Bumped per direction by [`FaultProxy::shut`].
    shuts: [u64; 2],
}

/// What a connection counts from: the cuts and shuts before it began.
#[derive(Debug, Clone, Copy)]
struct Born {
    /// Which connection it is, counting accepts from 1.
    number: u64,
    cuts: u64,
    shuts: [u64; 2],
}

impl State {
    fn cut_since(&self, born: Born) -> bool {
        self.cuts > born.cuts || self.cut_ones.contains(&born.number)
    }
    fn shut_since(&self, born: Born, toward: Toward) -> bool {
        self.shuts[toward.index()] > born.shuts[toward.index()]
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    moved: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
}

/// A TCP proxy on 127.0.0.1 in front of one target, with faults on demand.
/// Dropping it closes every connection through it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (state, watching) = watch::channel(State::default());
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel();
        let shared = counters.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, target, watching, shared) => {}
                    }
                });
            })?;
        Ok(FaultProxy {
            addr,
            state,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every chunk `one_way` before passing it on, each way.
    pub fn set_latency(&self, one_way: Duration) {
        self.state.send_modify(|s| s.latency = one_way);
    }

    /// Caps each direction at `bytes_per_sec`; `None` lifts the cap.
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.state
            .send_modify(|s| s.rate = bytes_per_sec.map(|r| r.max(1)));
    }

    /// Stops (or resumes) reading what flows `toward` one side: the
    /// sender's socket buffers fill and its writes block, as with a reader
    /// that stopped reading.
    pub fn stall(&self, toward: Toward, stalled: bool) {
        self.state
            .send_modify(|s| s.stalled[toward.index()] = stalled);
    }

    /// Drops (or stops dropping) every byte both ways while keeping the
    /// connections open: a half-open link only heartbeats can detect.
    pub fn black_hole(&self, on: bool) {
        self.state.send_modify(|s| s.black_hole = on);
    }

    /// Resets every open connection (both ends get a TCP reset), as a
    /// router reboot or a NAT that forgot the flow would. New ones go through.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }

    /// Resets only the `number`-th connection accepted (counting from 1),
    /// if it is open: one connection of a client that holds several.
    pub fn cut_connection(&self, number: u64) {
        self.state.send_modify(|s| s.cut_ones.push(number));
    }

    /// Ends one direction of every open connection in order (the side
    /// `toward` reads an end of stream); the other direction flows on.
    pub fn shut(&self, toward: Toward) {
        self.state.send_modify(|s| s.shuts[toward.index()] += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Bytes passed on `toward` one side so far (a write in progress counts).
    pub fn moved(&self, toward: Toward) -> u64 {
        self.counters.moved[toward.index()].load(Ordering::Relaxed)
    }

    /// Bytes on their way `toward` one side that the black hole dropped.
    pub fn dropped(&self, toward: Toward) -> u64 {
        self.counters.dropped[toward.index()].load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<State>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let number = counters.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let born = {
            let s = state.borrow();
            Born {
                number,
                cuts: s.cuts,
                shuts: s.shuts,
            }
        };
        let (state, counters) = (state.clone(), counters.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            counters.open.fetch_add(1, Ordering::Relaxed);
            connection(inbound, outbound, born, state, &counters).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// How a direction ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// End of stream, a shut, or an error: passed on as an orderly end.
    Closed,
    /// A cut: the connection is reset.
    Cut,
}

/// Carries one connection both ways until both directions end; a cut
/// resets both sockets.
async fn connection(
    inbound: TcpStream,
    outbound: TcpStream,
    born: Born,
    state: watch::Receiver<State>,
    counters: &Counters,
) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let (up, down) = tokio::join!(
        direction(
            &mut in_read,
            &mut out_write,
            Toward::Target,
            born,
            state.clone(),
            counters
        ),
        direction(
            &mut out_read,
            &mut in_write,
            Toward::Connector,
            born,
            state,
            counters
        ),
    );
    if up == End::Cut || down == End::Cut {
        for (read, write) in [(in_read, in_write), (out_read, out_write)] {
            if let Ok(stream) = read.reunite(write) {
                let _ = stream.set_zero_linger();
            }
        }
    }
}

/// One direction: a reader that honours stalls and the black hole, a
/// writer that honours latency and the rate, a queue between them.
async fn direction(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    toward: Toward,
    born: Born,
    state: watch::Receiver<State>,
    counters: &Counters,
) -> End {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let (read_end, write_end) = tokio::join!(
        read(
            from,
            tx,
            toward,
            born,
            state.clone(),
            &counters.dropped[toward.index()]
        ),
        write(to, rx, toward, born, state, &counters.moved[toward.index()]),
    );
    if read_end == End::Cut || write_end == End::Cut {
        return End::Cut;
    }
    let _ = to.shutdown().await;
    End::Closed
}

async fn read(
    from: &mut OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Bytes)>,
    toward: Toward,
    born: Born,
    mut state: watch::Receiver<State>,
    dropped: &AtomicU64,
) -> End {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        let (stalled, black_hole, latency) = {
            let s = state.borrow_and_update();
            if s.cut_since(born) {
                return End::Cut;
            }
            if s.shut_since(born, toward) {
                return End::Closed;
            }
            (s.stalled[toward.index()], s.black_hole, s.latency)
        };
        if stalled {
            if state.changed().await.is_err() {
                return End::Closed;
            }
            continue;
        }
        buf.reserve(CHUNK);
        // A change first: a stall set before bytes arrive holds them back.
        let read = tokio::select! {
            biased;
            changed = state.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return End::Closed,
            },
            read = from.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return hold_end(&mut state, born).await,
            Ok(n) if black_hole => {
                dropped.fetch_add(n as u64, Ordering::Relaxed);
                buf.clear();
            }
            Ok(_) => {
                let chunk = buf.split().freeze();
                if tx.send((Instant::now() + latency, chunk)).await.is_err() {
                    return End::Closed;
                }
            }
        }
    }
}

async fn write(
    to: &mut OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Bytes)>,
    toward: Toward,
    born: Born,
    mut state: watch::Receiver<State>,
    moved: &AtomicU64,
) -> End {
    // When the throttle lets the next byte go.
    let mut free_at = Instant::now();
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            () = cut(&mut state, born) => return End::Cut,
        };
        let Some((due, mut chunk)) = next else {
            return End::Closed;
        };
        sleep_until(due).await;
        while !chunk.is_empty() {
            let (rate, shut) = {
                let s = state.borrow();
                (s.rate, s.shut_since(born, toward))
            };
            if shut {
                return End::Closed;
            }
            let piece = match rate {
                None => chunk.split_to(chunk.len()),
                Some(rate) => {
                    let piece = chunk.split_to(chunk.len().min(CHUNK / 4));
                    free_at = free_at.max(Instant::now())
                        + Duration::from_secs_f64(piece.len() as f64 / rate as f64);
                    sleep_until(free_at).await;
                    piece
                }
            };
            // Counted before the write, so a count read once the other end
            // has the bytes never lags them (a test reading an echo raced
            // the count); taken back if the write does not complete.
            let n = piece.len() as u64;
            moved.fetch_add(n, Ordering::Relaxed);
            // A peer that stopped reading blocks the write; a cut still ends it.
            tokio::select! {
                written = to.write_all(&piece) => if written.is_err() {
                    moved.fetch_sub(n, Ordering::Relaxed);
                    return End::Closed;
                },
                () = cut(&mut state, born) => {
                    moved.fetch_sub(n, Ordering::Relaxed);
                    return End::Cut;
                }
            }
        }
    }
}

/// An end read while the black hole is on is held back until it lifts (a
/// dead path passes no FIN either); a cut meanwhile resets.
async fn hold_end(state: &mut watch::Receiver<State>, born: Born) -> End {
    loop {
        {
            let s = state.borrow_and_update();
            if s.cut_since(born) {
                return End::Cut;
            }
            if !s.black_hole {
                return End::Closed;
            }
        }
        if state.changed().await.is_err() {
            return End::Closed;
        }
    }
}

/// Resolves once a cut reaches a connection born at `born` (or the proxy stops).
async fn cut(state: &mut watch::Receiver<State>, born: Born) {
    loop {
        if state.borrow_and_update().cut_since(born) {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
