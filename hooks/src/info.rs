//! What hooks are told. Identities are created once per connection and
//! shared by `Arc`; per-chunk events only borrow them, so delivering an event
//! allocates nothing.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use reitunnel_proto::{ClientId, RefuseCode, StreamId, Transport, TunnelId};

use crate::verdict::{CloseReason, Reason};

/// The server (or client process) the hooks run in.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Operator-chosen name, e.g. `edge-1` (appears in audit events).
    pub name: Arc<str>,
    /// The control listener's address.
    pub listen: SocketAddr,
}

/// Live byte counters of a stream, tunnel or client.
///
/// Streams add to their own meter per chunk (one relaxed atomic add, no
/// lock); tunnels and clients receive a stream's totals when it closes, so a
/// tunnel's close event carries the exact sum of its streams.
#[derive(Debug, Default)]
pub struct Meter {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    streams: AtomicU64,
}

impl Meter {
    /// Adds `n` bytes moved in `dir`.
    #[inline]
    pub fn add(&self, dir: Direction, n: u64) {
        match dir {
            Direction::Ingress => self.bytes_in.fetch_add(n, Ordering::Relaxed),
            Direction::Egress => self.bytes_out.fetch_add(n, Ordering::Relaxed),
        };
    }

    pub(crate) fn absorb(&self, t: &Totals) {
        self.bytes_in.fetch_add(t.bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(t.bytes_out, Ordering::Relaxed);
        self.streams.fetch_add(t.streams, Ordering::Relaxed);
    }

    /// The counts so far, with `since` as the start for the duration.
    pub fn totals(&self, since: Instant) -> Totals {
        Totals {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            duration: since.elapsed(),
        }
    }
}

/// A logged-in client session.
#[derive(Debug)]
pub struct ClientInfo {
    /// Unique for the life of the server.
    pub id: ClientId,
    /// The name the client logged in with (or its certificate identity).
    pub name: Arc<str>,
    /// The client's address as the server sees it.
    pub peer: SocketAddr,
    /// When the session started.
    pub opened_at: Instant,
    /// Bytes of all the client's closed streams.
    pub meter: Meter,
    /// Whether `name` is the identity of a client certificate the server
    /// verified (mTLS), rather than only a name the client claimed.
    pub certified: bool,
    /// The latest heartbeat round trip, in microseconds (0 = none yet).
    pub(crate) rtt_micros: AtomicU64,
}

impl ClientInfo {
    /// A new session identity.
    pub fn new(id: ClientId, name: impl Into<Arc<str>>, peer: SocketAddr) -> Self {
        ClientInfo {
            id,
            name: name.into(),
            peer,
            opened_at: Instant::now(),
            meter: Meter::default(),
            certified: false,
            rtt_micros: AtomicU64::new(0),
        }
    }

    /// Marks the name as vouched for by a verified client certificate.
    pub fn certified(mut self) -> Self {
        self.certified = true;
        self
    }

    /// The latest heartbeat round trip, if one was measured.
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Which way a tunnel carries connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    /// `-R`: the server listens publicly, the client dials its local target.
    Reverse,
    /// `-L`: the client listens locally, the server dials the target.
    Forward,
}

impl TunnelKind {
    /// `"reverse"` or `"forward"`, for events and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Reverse => "reverse",
            TunnelKind::Forward => "forward",
        }
    }
}

/// One tunnel of a client.
#[derive(Debug)]
pub struct TunnelInfo {
    /// Unique for the life of the server.
    pub id: TunnelId,
    /// The client the tunnel belongs to.
    pub client: Arc<ClientInfo>,
    /// Reverse or forward.
    pub kind: TunnelKind,
    /// TCP connections, or UDP flows (each flow a stream: one per visitor
    /// address, its datagrams one `on_data` each, closed when idle).
    pub transport: Transport,
    /// The listening address (bound already when hooks are asked).
    pub bind: SocketAddr,
    /// Where connections go, as the client named it (`host:port`).
    pub target: Arc<str>,
    /// When the tunnel opened.
    pub opened_at: Instant,
    /// Bytes of all the tunnel's closed streams.
    pub meter: Meter,
}

impl TunnelInfo {
    /// A new tunnel identity.
    pub fn new(
        id: TunnelId,
        client: Arc<ClientInfo>,
        kind: TunnelKind,
        bind: SocketAddr,
        target: impl Into<Arc<str>>,
    ) -> Self {
        TunnelInfo {
            id,
            client,
            kind,
            transport: Transport::Tcp,
            bind,
            target: target.into(),
            opened_at: Instant::now(),
            meter: Meter::default(),
        }
    }

    /// The same tunnel carrying `transport` (TCP unless said otherwise).
    pub fn over(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }
}

/// One visitor connection through a tunnel.
#[derive(Debug)]
pub struct StreamInfo {
    /// Unique for the life of the server.
    pub id: StreamId,
    /// The tunnel it came through.
    pub tunnel: Arc<TunnelInfo>,
    /// The visitor's address.
    pub peer: SocketAddr,
    /// When the stream opened.
    pub opened_at: Instant,
    /// Live bytes, updated per chunk by the relay.
    pub meter: Meter,
}

impl StreamInfo {
    /// A new stream identity.
    pub fn new(id: StreamId, tunnel: Arc<TunnelInfo>, peer: SocketAddr) -> Self {
        StreamInfo {
            id,
            tunnel,
            peer,
            opened_at: Instant::now(),
            meter: Meter::default(),
        }
    }
}

/// Which way a chunk moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the visitor towards the service behind the tunnel ("bytes in").
    Ingress,
    /// From the service back to the visitor ("bytes out").
    Egress,
}

impl Direction {
    /// `"in"` or `"out"`, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }
}

/// A hook's own per-stream state, as handed back to it (see [`crate::Hook::stream_state`]).
pub type StateRef<'a> = Option<&'a (dyn Any + Send + Sync)>;

fn downcast<'a, T: 'static>(state: StateRef<'a>) -> Option<&'a T> {
    state.and_then(|s| s.downcast_ref::<T>())
}

/// When a chunk was offered. Reading the clock costs more than everything
/// else a built-in hook does per chunk, so the clock is read on the first
/// [`ChunkTime::now`] and every later hook of the same chunk gets that stamp.
#[derive(Debug, Default)]
pub struct ChunkTime(Cell<Option<Instant>>);

impl ChunkTime {
    /// A stamp not yet taken.
    pub fn new() -> Self {
        ChunkTime::default()
    }

    /// The chunk's time: the clock at the first call, the same instant after.
    #[inline]
    pub fn now(&self) -> Instant {
        match self.0.get() {
            Some(at) => at,
            None => {
                let at = Instant::now();
                self.0.set(Some(at));
                at
            }
        }
    }
}

/// One chunk read from one side of a stream, before it is written to the other.
#[derive(Debug, Clone, Copy)]
pub struct DataEvent<'a> {
    /// The stream the chunk belongs to.
    pub stream: &'a StreamInfo,
    /// Which way it moves.
    pub direction: Direction,
    /// The bytes (hooks may inspect, never keep them).
    pub data: &'a [u8],
    /// Bytes of earlier chunks a [`crate::builtin::Sampler`] did not forward
    /// and folds into this event; 0 unless sampled. See [`DataEvent::bytes`].
    pub skipped: u64,
    /// The receiving hook's per-stream state, if it made one.
    pub state: StateRef<'a>,
    /// The chunk's time, shared by the chain's hooks; see [`DataEvent::now`].
    pub time: Option<&'a ChunkTime>,
}

impl<'a> DataEvent<'a> {
    /// An unsampled event with no state (the chain fills in each hook's state)
    /// and no shared stamp ([`DataEvent::now`] reads the clock each time).
    pub fn new(stream: &'a StreamInfo, direction: Direction, data: &'a [u8]) -> Self {
        DataEvent {
            stream,
            direction,
            data,
            skipped: 0,
            state: None,
            time: None,
        }
    }

    /// When the chunk was offered. Hooks that need the time per chunk (rate
    /// limits, periods, time-based sampling) ask here, so one chunk costs
    /// one clock read however many of them there are.
    #[inline]
    pub fn now(&self) -> Instant {
        self.time.map_or_else(Instant::now, ChunkTime::now)
    }

    /// The bytes this event accounts for: the chunk plus what sampling skipped.
    /// Meters and limits count this, not `data.len()`.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64 + self.skipped
    }

    /// This hook's per-stream state as a `T`.
    #[inline]
    pub fn state<T: 'static>(&self) -> Option<&'a T> {
        downcast(self.state)
    }
}

/// A stream's close, as [`crate::Hook::on_stream_close`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd<'a> {
    /// The stream.
    pub stream: &'a StreamInfo,
    /// Why it closed.
    pub reason: &'a CloseReason,
    /// Its bytes and duration.
    pub totals: &'a Totals,
    /// The receiving hook's per-stream state (dropped right after this call).
    pub state: StateRef<'a>,
}

impl<'a> StreamEnd<'a> {
    /// This hook's per-stream state as a `T`.
    pub fn state<T: 'static>(&self) -> Option<&'a T> {
        downcast(self.state)
    }
}

/// What a login brought to prove who it is, for `on_client_connect`.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The server's challenge.
    pub nonce: &'a [u8; reitunnel_proto::auth::NONCE_LEN],
    /// The client's answer.
    pub proof: &'a [u8; reitunnel_proto::auth::PROOF_LEN],
}

impl Login<'_> {
    /// Whether the client proved it knows `token` under its `name`. Constant time.
    pub fn proves(&self, name: &str, token: &[u8]) -> bool {
        reitunnel_proto::auth::verify(token, self.nonce, name, self.proof)
    }
}

/// Bytes and time of something that closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Visitor → service bytes.
    pub bytes_in: u64,
    /// Service → visitor bytes.
    pub bytes_out: u64,
    /// Streams counted (1 for a stream; all closed streams for a tunnel or client).
    pub streams: u64,
    /// How long it was open.
    pub duration: Duration,
}

/// What an error or rejection is about.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The server as a whole (start-up, the accept loop, a failed handshake).
    Server,
    /// A client session.
    Client(&'a ClientInfo),
    /// A tunnel.
    Tunnel(&'a TunnelInfo),
    /// A stream.
    Stream(&'a StreamInfo),
}

impl Scope<'_> {
    /// `"server"`, `"client"`, `"tunnel"` or `"stream"`: for metric labels and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Server => "server",
            Scope::Client(_) => "client",
            Scope::Tunnel(_) => "tunnel",
            Scope::Stream(_) => "stream",
        }
    }
}

/// For logs: `server`, `client alice (c1)`, `tunnel t2 of alice`, `stream s3 of alice/t2`.
impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Server => f.write_str("server"),
            Scope::Client(c) => write!(f, "client {} ({})", c.name, c.id),
            Scope::Tunnel(t) => write!(f, "tunnel {} of {}", t.id, t.client.name),
            Scope::Stream(s) => write!(
                f,
                "stream {} of {}/{}",
                s.id, s.tunnel.client.name, s.tunnel.id
            ),
        }
    }
}

/// Something was refused, by a hook or by the server's own policy.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    /// The client, tunnel or stream that was refused (never opened).
    pub scope: Scope<'a>,
    /// Why.
    pub reason: &'a Reason,
    /// The refusing hook's name, or `"server"` for the server's own policy and failures.
    pub by: &'a str,
    /// True when this hook's own gate ran for this event and returned
    /// `Allow`: anything it set up there must be released now, because no
    /// close event will follow.
    pub passed_gate: bool,
}

/// An error somewhere in the tunnel, delivered to `on_error`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorEvent<'a> {
    /// What it concerns.
    pub scope: Scope<'a>,
    /// The error itself.
    pub error: &'a (dyn std::error::Error + Send + Sync + 'static),
}

/// An operator acted through the server's admin interface: kicked a
/// client, banned a name, closed a tunnel. Delivered to `on_admin` after
/// the action took effect, so an audit log records who did what to whom.
#[derive(Debug, Clone, Copy)]
pub struct AdminAction<'a> {
    /// What was done: `kick`, `close_tunnel`.
    pub action: &'a str,
    /// Whom it concerned: a client's name or a tunnel's id.
    pub target: &'a str,
    /// Who asked: the admin request's peer address.
    pub by: &'a str,
    /// How it went, in words (`kicked 1 session, banned for 60s`).
    pub outcome: &'a str,
}
