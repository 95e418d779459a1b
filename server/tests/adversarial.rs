//! Attacks on a running `reitunnel-server` process. Each test starts the
//! binary with a config file of small limits, attacks it over real sockets,
//! and then checks what matters to everyone else: the process is alive, a
//! fresh well-behaved client logs in, opens a tunnel and round-trips 256 KiB
//! byte-exact, the server's resident memory stayed bounded, and once the
//! attacker's sockets are gone the server holds no more file descriptors
//! than before the attack (nothing leaked). Each prints one line,
//! `attack <name>: <what the server did>; … VmRSS …, VmHWM …` (see them
//! with `--nocapture`).
//!
//! Nothing here sleeps to synchronise: tests wait for the server's log lines,
//! for sockets to close, or for counters, each with a deadline.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{echo_through, start, Running};
use futures::{SinkExt, StreamExt};
use reitunnel_client::{Client, ClientConfig, ClientError, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_proto::auth::proof;
use reitunnel_proto::login::{ClientLogin, LoggedIn, ServerAnswer};
use reitunnel_proto::{ClientId, Frame, FrameCodec, Preamble, RefuseCode, PREAMBLE_LEN};
use reitunnel_testkit::{echo_service, pseudo_random, Lines};
use reitunnel_transport::{
    read_frame, run_login, spawn_mux, write_frame, Inbound, LoginFailure, MuxConfig, MuxHandle,
    MuxStream,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Framed;

const TOKEN: &str = "adversarial-secret";
/// Upper bound for any wait: a failure guard, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);
/// What a good client pushes through its tunnel after each attack.
const GOOD_BYTES: usize = 256 * 1024;
/// Peak resident memory the server may reach under any of these attacks.
/// It idles at about 7 MiB and peaked under 10 MiB in every attack here;
/// the stalled reader's visitors alone offer 256 MiB.
const MAX_HWM_MIB: f64 = 128.0;
const MIB: usize = 1 << 20;
/// Frame limit of the hand-driven clients (the server's default).
const MAX_FRAME: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// The server under attack and the well-behaved client.

/// One attack's target: the server process and an echo service that good
/// clients expose through their tunnels.
struct Target {
    server: Running,
    addr: SocketAddr,
    echo: SocketAddr,
    /// The server's file descriptors before any attack.
    fds_at_start: usize,
}

impl Target {
    /// Starts the binary with a config file: the token, tunnels on
    /// 127.0.0.1, no periodic stats lines, and `limits` as its `[limits]` table.
    async fn new(limits: &str) -> Target {
        Target::with("", limits).await
    }

    /// [`Target::new`] with `settings`, more top-level keys of the file.
    async fn with(settings: &str, limits: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nbind_ip = \"127.0.0.1\"\n\
                 stats_interval = 0\n{settings}\n\n[limits]\n{limits}\n"
            ),
        )
        .unwrap();
        // The file is read before "server started" is logged; `dir` may go then.
        let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);
        Target {
            fds_at_start: server.open_fds(),
            server,
            addr,
            echo: echo_service().await,
        }
    }

    fn log(&self) -> &Lines {
        self.server.log()
    }

    /// Waits (off the runtime's threads) for a log line matching `pred`.
    async fn logged(&self, what: &str, pred: impl Fn(&str) -> bool + Send + 'static) -> String {
        self.logged_n(what, 1, pred).await
    }

    /// Waits for `n` log lines matching `pred`; returns the first.
    async fn logged_n(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool + Send + 'static,
    ) -> String {
        let log = self.log().clone();
        let what = what.to_owned();
        tokio::task::spawn_blocking(move || log.wait_for_nth(&what, n, PATIENCE, pred))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// One good client's round; panics naming `when` if it fails.
    async fn good_round(&self, name: &str, when: &str) -> Duration {
        good_round(self.addr, self.echo, name)
            .await
            .unwrap_or_else(|e| panic!("a good client failed {when}: {e}"))
    }

    /// Waits until the server holds no more file descriptors than at
    /// start: every socket of the attack (and of the good clients) closed.
    /// Polls, as closing is asynchronous; panics after [`PATIENCE`].
    async fn fds_settle(&self, attack: &str) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let fds = self.server.open_fds();
            if fds <= self.fds_at_start {
                return fds;
            }
            assert!(
                Instant::now() < deadline,
                "{attack}: the server still holds {fds} file descriptors, {} at start",
                self.fds_at_start
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of every attack, called once the attacker's sockets are
    /// dropped: the process lives, a fresh good client works, peak memory
    /// stayed under [`MAX_HWM_MIB`], no descriptor leaked. Prints the attack's line.
    async fn still_serves(&mut self, attack: &str, what: &str) {
        assert!(self.server.is_alive(), "the server died during {attack}");
        self.good_round(&format!("good-after-{attack}"), &format!("after {attack}"))
            .await;
        assert!(self.server.is_alive(), "the server died after {attack}");
        let fds = self.fds_settle(attack).await;
        let mem = self.server.memory();
        println!("attack {attack}: {what}; fds back to {fds}; {mem}");
        assert!(
            mem.hwm_mib() < MAX_HWM_MIB,
            "{attack}: peak memory {mem} is over {MAX_HWM_MIB} MiB"
        );
    }
}

/// A good client connected to `server` from 127.0.0.1.
async fn good_client(server: SocketAddr, name: &str) -> Result<Client, ClientError> {
    let cfg = ClientConfig::new(server.to_string(), name, Secret::new(TOKEN));
    Client::connect(cfg, HookChain::default()).await
}

/// A logged-in client's round: open a tunnel to `echo`, push
/// [`GOOD_BYTES`] through its public port, compare the echo, say goodbye.
async fn round_trip(client: Client, echo: SocketAddr, seed: u64) -> Result<(), String> {
    let spec: RemoteSpec = format!("0:{echo}").parse().map_err(|e| format!("{e}"))?;
    let tunnel = client
        .open_reverse(spec)
        .await
        .map_err(|e| format!("opening the tunnel: {e}"))?;
    echo_through(tunnel.public_addr, GOOD_BYTES, seed).await?;
    client
        .shutdown()
        .await
        .map_err(|e| format!("shutting down: {e}"))
}

/// A fresh good client's whole round (login, tunnel, 256 KiB, goodbye),
/// within [`PATIENCE`]. Returns how long it took.
async fn good_round(server: SocketAddr, echo: SocketAddr, name: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let round = async {
        let client = good_client(server, name)
            .await
            .map_err(|e| format!("login: {e}"))?;
        round_trip(client, echo, name.len() as u64).await
    };
    timeout(PATIENCE, round)
        .await
        .map_err(|_| format!("no answer within {PATIENCE:?}"))??;
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------
// Hand-driven clients: raw sockets, the login frame by frame, raw yamux.

/// A TCP connection to `server` from `source`, another loopback address, so
/// per-IP limits see a different client.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(server).await
}

/// The client's side of the login, proving `token`: the server's answer.
async fn login<S>(io: &mut S, name: &str, token: &str) -> Result<ServerAnswer, LoginFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    run_login(io, ClientLogin::new(name, token.as_bytes(), MAX_FRAME)).await
}

/// How a connection ended, seen from the attacker.
struct Closed {
    after: Duration,
    how: String,
    /// What the server sent before closing (its preamble, a refusal…).
    received: Vec<u8>,
}

/// Reads until the server closes the connection; `after` counts from
/// `since` (taken before connecting, so it is never shorter than the
/// server's view). Panics if the connection is still open after [`PATIENCE`].
async fn until_closed<R: AsyncRead + Unpin>(r: &mut R, since: Instant) -> Closed {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let how = timeout(PATIENCE, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return "EOF".to_owned(),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return format!("{:?}", e.kind()),
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    Closed {
        after: since.elapsed(),
        how,
        received,
    }
}

/// A socket whose reads can be stopped for good: once `stall` is set, reads
/// stay pending (and are never woken), while writes still go through. The
/// peer sees a client that stopped reading its socket.
struct Stallable {
    tcp: TcpStream,
    stall: Arc<AtomicBool>,
}

impl AsyncRead for Stallable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stall.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stallable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A client session run by hand: logged in, yamux started, the control
/// stream open (a Ping answered on it). The mux reads through a [`Stallable`].
struct RawSession {
    mux: MuxHandle,
    inbound: Inbound,
    control: Framed<MuxStream, FrameCodec>,
    stall: Arc<AtomicBool>,
    /// This side's address, as the server's log names the peer.
    local: SocketAddr,
    /// What the login brought: the session's id and join key.
    welcome: LoggedIn,
}

/// Logs in as `name` by hand and opens the control stream. `recv_buffer`
/// sets SO_RCVBUF, so a stalled reader fills up quickly.
async fn raw_session(server: SocketAddr, name: &str, recv_buffer: Option<u32>) -> RawSession {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut tcp = socket.connect(server).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let welcome = match login(&mut tcp, name, TOKEN).await.unwrap() {
        ServerAnswer::Welcome(welcome) => welcome,
        other => panic!("{name}: expected LoginOk, got {other:?}"),
    };
    let stall = Arc::new(AtomicBool::new(false));
    let io = Stallable {
        tcp,
        stall: stall.clone(),
    };
    let (mux, inbound, _driver) = spawn_mux(io, yamux::Mode::Client, &MuxConfig::default());
    let control = mux.open().await.unwrap();
    let mut session = RawSession {
        mux,
        inbound,
        control: Framed::new(control, FrameCodec::new(MAX_FRAME)),
        stall,
        local,
        welcome,
    };
    // A yamux stream reaches the peer with its first frame: this makes it the control stream.
    let pong = session
        .request(Frame::Ping { seq: 1 }, |f| {
            matches!(f, Frame::Pong { seq: 1 })
        })
        .await;
    assert!(pong.is_some(), "{name}: no Pong on the control stream");
    session
}

impl RawSession {
    /// Sends `frame` on the control stream and reads until a frame matching
    /// `answer` arrives (answering the server's Pings meanwhile). `None` if
    /// the stream ended first; panics after [`PATIENCE`].
    async fn request(&mut self, frame: Frame, answer: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let control = &mut self.control;
        timeout(PATIENCE, async {
            control.send(frame).await.ok()?;
            loop {
                match control.next().await? {
                    Ok(f) if answer(&f) => return Some(f),
                    Ok(Frame::Ping { seq }) => control.send(Frame::Pong { seq }).await.ok()?,
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .expect("no answer on the control stream")
    }

    /// Asks for a reverse tunnel; returns its public address.
    async fn open_tunnel(&mut self) -> SocketAddr {
        let req = Frame::OpenTunnel {
            request_id: 1,
            bind: "0.0.0.0:0".parse().unwrap(),
            target: "x:1".into(),
            transport: Default::default(),
        };
        match self
            .request(req, |f| {
                matches!(f, Frame::TunnelOpened { .. } | Frame::TunnelRefused { .. })
            })
            .await
        {
            Some(Frame::TunnelOpened { bound, .. }) => bound,
            other => panic!("expected TunnelOpened, got {other:?}"),
        }
    }
}

/// A count that tasks raise and tests wait on.
#[derive(Default)]
struct Counter {
    n: AtomicUsize,
    changed: Notify,
}

impl Counter {
    fn add(&self, k: usize) {
        self.n.fetch_add(k, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }

    /// Waits until the count reaches `target`; panics after [`PATIENCE`].
    async fn reaches(&self, what: &str, target: usize) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.get() >= target {
                    return;
                }
                notified.await;
            }
        };
        if timeout(PATIENCE, wait).await.is_err() {
            panic!("{what}: {} of {target} after {PATIENCE:?}", self.get());
        }
    }
}

// ---------------------------------------------------------------------------
// 1-3: bad handshakes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_preamble_is_refused_naming_the_bad_magic() {
    // A long handshake timeout, so a close is the refusal, not the timeout.
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let garbage = pseudo_random(0x5eed, MIB);
    assert!(
        &garbage[..4] != b"RTUN" && !matches!(garbage[0], 21 | 22),
        "the seed must give garbage that looks like neither Reitunnel nor TLS"
    );
    let since = Instant::now();
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (mut r, mut w) = tcp.into_split();
    // The server stops reading after six bytes; the rest may fail to go out.
    let writer = tokio::spawn(async move { w.write_all(&garbage).await });
    let closed = until_closed(&mut r, since).await;
    let _ = writer.await.unwrap();
    let magic = format!("bad magic {:02x?}", &pseudo_random(0x5eed, 4)[..]);
    let line = t
        .logged("the bad-magic warning", {
            let (peer, magic) = (format!("login from {local}"), magic.clone());
            move |l| l.contains(&peer) && l.contains(&magic)
        })
        .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(
        closed.after < Duration::from_secs(20),
        "closed only after {:?}",
        closed.after
    );
    let what = format!(
        "closed the connection after {:?} ({}, {} bytes sent back: {:?}), warned \"{magic}\"",
        closed.after,
        closed.how,
        closed.received.len(),
        String::from_utf8_lossy(&closed.received[..closed.received.len().min(4)])
    );
    t.still_serves("garbage-preamble", &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_handshake_is_closed_at_the_handshake_timeout() {
    let mut t = Target::new("handshake_timeout_ms = 1000").await;
    let timeout_for = |local: SocketAddr| {
        let needle = format!("login from {local} timed out after 1s");
        move |l: &str| l.contains(&needle)
    };

    // Half a preamble, then silence.
    let since = Instant::now();
    let mut half_preamble = TcpStream::connect(t.addr).await.unwrap();
    let local = half_preamble.local_addr().unwrap();
    half_preamble
        .write_all(&Preamble::CURRENT.encode()[..3])
        .await
        .unwrap();
    let first = until_closed(&mut half_preamble, since).await;
    t.logged("the half-preamble timeout", timeout_for(local))
        .await;

    // A whole preamble, the challenge read, half a Login frame, then silence.
    let since = Instant::now();
    let mut half_login = TcpStream::connect(t.addr).await.unwrap();
    let local = half_login.local_addr().unwrap();
    half_login
        .write_all(&Preamble::CURRENT.encode())
        .await
        .unwrap();
    let mut theirs = [0u8; PREAMBLE_LEN];
    half_login.read_exact(&mut theirs).await.unwrap();
    let nonce = match read_frame(&mut half_login, MAX_FRAME).await.unwrap() {
        Frame::Challenge { nonce } => nonce,
        other => panic!("expected a Challenge, got {other:?}"),
    };
    let mut login = BytesMut::new();
    Frame::Login {
        name: "half".into(),
        proof: proof(TOKEN.as_bytes(), &nonce, "half"),
    }
    .encode(&mut login);
    half_login
        .write_all(&login[..login.len() / 2])
        .await
        .unwrap();
    let second = until_closed(&mut half_login, since).await;
    t.logged("the half-login timeout", timeout_for(local)).await;

    for (what, closed) in [("half a preamble", &first), ("half a login", &second)] {
        // Closed by the timeout: not before it, and not much after.
        assert!(
            closed.after >= Duration::from_secs(1),
            "{what}: closed after {:?}, before the timeout",
            closed.after
        );
        assert!(
            closed.after < Duration::from_secs(30),
            "{what}: {:?}",
            closed.after
        );
    }
    let what = format!(
        "closed half a preamble after {:?} ({}), half a Login after {:?} ({}); warned \"timed out after 1s\" for each",
        first.after, first.how, second.after, second.how
    );
    t.still_serves("truncated-handshake", &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_length_prefix_is_refused_before_anything_is_buffered() {
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let since = Instant::now();
    let mut tcp = TcpStream::connect(t.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(&Preamble::CURRENT.encode()).await.unwrap();
    tcp.write_all(&[0xff; 4]).await.unwrap();
    let closed = until_closed(&mut tcp, since).await;
    let line = t
        .logged("the frame-too-large warning", {
            let peer = format!("login from {local}");
            move |l| l.contains(&peer) && l.contains("exceeds the limit")
        })
        .await;
    assert!(
        line.contains("frame of 4294967295 bytes exceeds the limit of 65536 bytes"),
        "{line}"
    );
    assert!(
        closed.after < Duration::from_secs(20),
        "closed only after {:?}",
        closed.after
    );
    // The preamble and the challenge (4 + 1 + 32 bytes) came back before the close.
    assert_eq!(
        closed.received.len(),
        PREAMBLE_LEN + 37,
        "{:?}",
        closed.received
    );
    let what = format!(
        "closed the connection after {:?} ({}), warned \"frame of 4294967295 bytes exceeds the limit of 65536 bytes\"",
        closed.after, closed.how
    );
    t.still_serves("huge-length-prefix", &what).await;
}

// ---------------------------------------------------------------------------
// 4: garbage after a valid login.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_where_yamux_belongs_ends_the_session() {
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let mut tcp = TcpStream::connect(t.addr).await.unwrap();
    match login(&mut tcp, "garbage-mux", TOKEN).await.unwrap() {
        ServerAnswer::Welcome(_) => {}
        other => panic!("expected LoginOk, got {other:?}"),
    }
    let (mut r, mut w) = tcp.into_split();
    let garbage = pseudo_random(0xbad, MIB);
    assert_ne!(
        garbage[0], 0,
        "yamux version byte: the garbage must not start like a frame"
    );
    let since = Instant::now();
    let writer = tokio::spawn(async move { w.write_all(&garbage).await });
    let closed = until_closed(&mut r, since).await;
    let _ = writer.await.unwrap();
    let gone = t
        .logged("the session's end", |l| {
            l.contains("client gone") && l.contains("client=garbage-mux")
        })
        .await;
    assert!(
        closed.after < Duration::from_secs(20),
        "closed only after {:?}",
        closed.after
    );
    let why = gone
        .split("reason=")
        .nth(1)
        .unwrap_or(&gone)
        .trim()
        .to_owned();
    let what = format!(
        "closed the session after {:?} ({}); logged \"client gone\" with reason {why:?}",
        closed.after, closed.how
    );
    t.still_serves("garbage-mux", &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_control_frame_gets_a_goodbye_naming_it() {
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let mut s = raw_session(t.addr, "bad-control", None).await;
    // Length 1, kind 0xee: a frame no version knows.
    s.control
        .get_mut()
        .write_all(&[0, 0, 0, 1, 0xee])
        .await
        .unwrap();
    let started = Instant::now();
    let bye = timeout(PATIENCE, s.control.next())
        .await
        .expect("no answer to the malformed frame");
    let (code, message) = match bye {
        Some(Ok(Frame::Goodbye { code, message })) => (code, message),
        other => panic!("expected a Goodbye, got {other:?}"),
    };
    assert_eq!(code, RefuseCode::BadRequest);
    assert!(message.contains("unknown frame kind 0xee"), "{message}");
    // Then the session ends: the control stream, and the whole mux.
    let after = timeout(PATIENCE, s.control.next())
        .await
        .expect("the control stream stayed open after the Goodbye");
    assert!(
        !matches!(after, Some(Ok(_))),
        "a frame after the Goodbye: {after:?}"
    );
    timeout(PATIENCE, s.mux.closed())
        .await
        .expect("the session stayed open after the Goodbye");
    let closed_after = started.elapsed();
    t.logged("the session's end", |l| {
        l.contains("client gone") && l.contains("client=bad-control")
    })
    .await;
    let what = format!(
        "sent Goodbye {{ {code:?}, {message:?} }} and closed the session after {closed_after:?}"
    );
    t.still_serves("malformed-control-frame", &what).await;
}

// ---------------------------------------------------------------------------
// 5: half-open connection floods.

/// TCP connections that never send a byte. Each has a task that notes when
/// the server closes it; dropping the flood closes every connection.
struct Flood {
    opened: usize,
    failed: usize,
    closed_by_server: Arc<Counter>,
    _held: JoinSet<()>,
}

/// Opens `per_source` connections from each of `sources`, round robin,
/// within 30 s.
async fn flood(server: SocketAddr, sources: &[Ipv4Addr], per_source: usize) -> Flood {
    let closed_by_server = Arc::new(Counter::default());
    let mut held = JoinSet::new();
    let (mut opened, mut failed) = (0, 0);
    let started = Instant::now();
    'opening: for _ in 0..per_source {
        for &source in sources {
            if started.elapsed() > Duration::from_secs(30) {
                break 'opening;
            }
            match timeout(Duration::from_secs(10), connect_from(source, server)).await {
                Ok(Ok(mut tcp)) => {
                    opened += 1;
                    let closed = closed_by_server.clone();
                    held.spawn(async move {
                        let _ = tcp.read(&mut [0u8; 1]).await;
                        closed.add(1);
                    });
                }
                _ => failed += 1,
            }
        }
    }
    Flood {
        opened,
        failed,
        closed_by_server,
        _held: held,
    }
}

/// Behind a balancer (`proxy_protocol_from`), hosts that connect around it
/// once held a total handshake slot each while the server waited for
/// their preamble to tell them why: 520 silent ones made a login through
/// the balancer fail. Now they take no total slot, and past
/// `max_handshakes_per_ip` each address's are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_skipping_the_balancer_cannot_block_logins_through_it() {
    const PER_IP: usize = 16;
    const SILENT: usize = 520;
    let t = Target::with(
        "proxy_protocol_from = [\"127.0.0.5\"]",
        &format!(
            "handshake_timeout_ms = 30000\nmax_handshakes = 64\nmax_handshakes_per_ip = {PER_IP}"
        ),
    )
    .await;
    let silent = flood(t.addr, &[Ipv4Addr::LOCALHOST], SILENT).await;
    assert_eq!(silent.opened, SILENT, "{} connects failed", silent.failed);
    // Through the balancer, while they wait: its PROXY header, then a login.
    let mut tcp = connect_from(Ipv4Addr::new(127, 0, 0, 5), t.addr)
        .await
        .unwrap();
    tcp.write_all(b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 7000\r\n")
        .await
        .unwrap();
    match timeout(PATIENCE, login(&mut tcp, "behind-balancer", TOKEN)).await {
        Ok(Ok(ServerAnswer::Welcome(_))) => {}
        other => panic!("a login through the balancer failed: {other:?}"),
    }
    t.logged("the login from the balancer's visitor", |l| {
        l.contains("client logged in") && l.contains("peer=127.0.0.9:40000")
    })
    .await;
    silent
        .closed_by_server
        .reaches(
            "untrusted connections past the per-IP cap closed",
            SILENT - PER_IP,
        )
        .await;
    let held = SILENT - silent.closed_by_server.get();
    println!(
        "attack untrusted-flood: {SILENT} silent connections around the balancer, {held} held \
         (max_handshakes_per_ip = {PER_IP}), the rest closed at once; a login through the \
         balancer got in; {}",
        t.server.memory()
    );
    assert_eq!(held, PER_IP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_from_one_address_is_capped_per_address() {
    const PER_IP: usize = 16;
    let mut t = Target::new(&format!(
        "handshake_timeout_ms = 30000\nmax_handshakes = 512\nmax_handshakes_per_ip = {PER_IP}"
    ))
    .await;
    let started = Instant::now();
    let f = flood(t.addr, &[Ipv4Addr::new(127, 0, 0, 2)], 3000).await;
    assert!(
        f.opened >= 1000,
        "only {} connections opened ({} failed)",
        f.opened,
        f.failed
    );
    let turned_away = f.opened - PER_IP;
    f.closed_by_server
        .reaches("flood connections closed by the server", turned_away)
        .await;
    let flood_took = started.elapsed();
    t.logged_n("per-IP refusals", turned_away, |l| {
        l.contains("127.0.0.2")
            && l.contains("turned away: limit max_handshakes_per_ip = 16 reached")
    })
    .await;

    // While the flood holds its sixteen slots, a client from 127.0.0.1 works.
    let during = t
        .good_round("good-during-flood", "during the one-address flood")
        .await;
    assert_eq!(
        f.closed_by_server.get(),
        turned_away,
        "the held connections must still be open while the good client ran"
    );
    let mem_during = t.server.memory();
    drop(f);
    t.logged_n("the held connections' ends", PER_IP, |l| {
        l.contains("login from 127.0.0.2") && l.contains("connection closed by peer")
    })
    .await;
    let what = format!(
        "opened {} connections from 127.0.0.2 in {flood_took:?}: closed {turned_away} at once \
         (\"max_handshakes_per_ip = 16 reached\"), held {PER_IP}; a good client took {during:?} \
         meanwhile ({mem_during} during the flood)",
        turned_away + PER_IP
    );
    t.still_serves("half-open-flood-one-ip", &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_from_many_addresses_is_capped_in_total() {
    const TOTAL: usize = 200;
    let mut t = Target::new(&format!(
        "handshake_timeout_ms = 30000\nmax_handshakes = {TOTAL}\nmax_handshakes_per_ip = 16"
    ))
    .await;
    let sources: Vec<Ipv4Addr> = (2..=50).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let started = Instant::now();
    let f = flood(t.addr, &sources, 60).await;
    assert!(
        f.opened >= 1000,
        "only {} connections opened ({} failed)",
        f.opened,
        f.failed
    );
    let turned_away = f.opened - TOTAL;
    f.closed_by_server
        .reaches("flood connections closed by the server", turned_away)
        .await;
    let flood_took = started.elapsed();
    t.logged_n("total refusals", turned_away, |l| {
        l.contains("turned away: limit max_handshakes = 200 reached")
    })
    .await;

    // The server is full: a good client may be turned away, but with a
    // close, not left hanging until its login timeout.
    let tried = Instant::now();
    let during = match good_client(t.addr, "good-during-full").await {
        Ok(client) => {
            round_trip(client, t.echo, 7)
                .await
                .unwrap_or_else(|e| panic!("a good client logged in but failed: {e}"));
            format!("served in {:?}", tried.elapsed())
        }
        Err(ClientError::Timeout { .. }) => {
            panic!("the good client was left hanging, not turned away")
        }
        Err(e) => {
            assert!(
                tried.elapsed() < Duration::from_secs(5),
                "turned away only after {:?}",
                tried.elapsed()
            );
            t.logged("the good client's refusal", |l| {
                l.contains("connection from 127.0.0.1:") && l.contains("max_handshakes = 200")
            })
            .await;
            format!("turned away in {:?} ({e})", tried.elapsed())
        }
    };
    let mem_during = t.server.memory();
    // Once the flood is gone, the slots are free again.
    drop(f);
    t.logged_n("the held connections' ends", TOTAL, |l| {
        l.contains("login from 127.0.0.") && l.contains("connection closed by peer")
    })
    .await;
    let what = format!(
        "opened {} connections from 49 addresses in {flood_took:?}: closed {turned_away} at once \
         (\"max_handshakes = 200 reached\"), held {TOTAL}; a good client during it was {during} \
         ({mem_during} during the flood)",
        turned_away + TOTAL
    );
    t.still_serves("half-open-flood-many-ips", &what).await;
}

// ---------------------------------------------------------------------------
// 6: a client that stops reading while visitors push data at it.

/// What a stalled client's attack observed.
struct Stalled {
    /// Bytes the client received before it stopped reading.
    received: usize,
    /// Bytes the visitors got into the server.
    pushed: usize,
    /// From the stall to the server's heartbeat-timeout warning.
    dropped_after: Duration,
    /// The server's descriptors before the attack and once the session was
    /// dropped, while the client still held its end.
    fds: (usize, usize),
}

const VISITORS: usize = 4;

/// Logs in by hand, opens a tunnel, accepts [`VISITORS`] visitors that
/// each push up to 64 MiB, reads 64 MiB of their data, then stops reading
/// its socket for good. A good client must work during the stall; the
/// server must drop the session at its heartbeat timeout and with it the
/// visitors.
async fn stall_a_client(t: &Target) -> Stalled {
    let fds_before = t.server.open_fds();
    let mut s = raw_session(t.addr, "stalled", Some(64 * 1024)).await;
    let public = s.open_tunnel().await;
    let peer = s.local;

    // Accept every visitor stream and drain it until the stall.
    let accepted = Arc::new(Counter::default());
    let received = Arc::new(Counter::default());
    let mut inbound = s.inbound;
    let (acc, rec) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        while let Some(mut stream) = inbound.recv().await {
            let (acc, rec) = (acc.clone(), rec.clone());
            tokio::spawn(async move {
                let Ok(Frame::StreamHeader { .. }) = read_frame(&mut stream, MAX_FRAME).await
                else {
                    return;
                };
                if write_frame(&mut stream, &Frame::StreamAccepted)
                    .await
                    .is_err()
                {
                    return;
                }
                acc.add(1);
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    rec.add(n);
                }
            });
        }
    });
    // Answer the server's heartbeats until the stall.
    let mut control = s.control;
    tokio::spawn(async move {
        while let Some(Ok(frame)) = control.next().await {
            if let Frame::Ping { seq } = frame {
                if control.send(Frame::Pong { seq }).await.is_err() {
                    return;
                }
            }
        }
    });

    let mut visitors = JoinSet::new();
    for _ in 0..VISITORS {
        visitors.spawn(async move {
            let Ok(mut tcp) = TcpStream::connect(public).await else {
                return 0;
            };
            let chunk = vec![0x5a; 64 * 1024];
            let mut sent = 0;
            while sent < 64 * MIB {
                match tcp.write(&chunk).await {
                    Ok(n @ 1..) => sent += n,
                    _ => break,
                }
            }
            sent
        });
    }
    accepted.reaches("visitor streams accepted", VISITORS).await;
    received
        .reaches("bytes relayed to the client", 64 * MIB)
        .await;
    s.stall.store(true, Ordering::SeqCst);
    let stalled_at = Instant::now();
    let heartbeat_timeout = {
        let needle = format!("client {peer} unresponsive");
        move |l: &str| l.contains(&needle) && l.contains("heartbeat timeout")
    };
    assert_eq!(
        t.log().count(heartbeat_timeout.clone()),
        0,
        "the session timed out while it was still reading"
    );

    t.good_round("good-during-stall", "while a client stalled")
        .await;
    t.logged("the stalled session's heartbeat timeout", heartbeat_timeout)
        .await;
    let dropped_after = stalled_at.elapsed();
    // Dropping the session disconnects its visitors: their writes fail.
    let mut pushed = 0;
    let all_gone = timeout(PATIENCE, async {
        while let Some(sent) = visitors.join_next().await {
            pushed += sent.unwrap();
        }
    })
    .await;
    assert!(
        all_gone.is_ok(),
        "visitors still connected after the session was dropped"
    );
    // The server must have closed the stalled socket, which this side
    // still holds open and unread (the mux task owns it until `s.mux` goes).
    let fds_after = t.fds_settle("stalled-reader").await;
    drop(s.mux);
    Stalled {
        received: received.get(),
        pushed,
        dropped_after,
        fds: (fds_before, fds_after),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    let mut t = Target::new(
        "handshake_timeout_ms = 30000\nheartbeat_interval_ms = 200\nheartbeat_timeout_ms = 3000",
    )
    .await;
    let s = stall_a_client(&t).await;
    let what = format!(
        "{VISITORS} visitors pushed {} MiB, the client read {} MiB, then stopped reading: a good \
         client still worked; the session was dropped {:?} later (\"heartbeat timeout\"), its \
         visitors disconnected and its socket closed though the client kept it open (server fds \
         {} before, {} after)",
        s.pushed / MIB,
        s.received / MIB,
        s.dropped_after,
        s.fds.0,
        s.fds.1
    );
    t.still_serves("stalled-reader", &what).await;
}

// ---------------------------------------------------------------------------
// 7: a client that opens streams without end.

/// Opens streams on `mux` as fast as it can, writing a line on each and
/// dropping it, until `left` streams are open, `until` passes, or the
/// session refuses. Returns the streams opened, the writes that met the
/// server's reset, and why it stopped early, if it did.
async fn spam_streams(
    mux: &MuxHandle,
    left: usize,
    until: Instant,
) -> (usize, usize, Option<String>) {
    let (mut opened, mut write_failed) = (0, 0);
    while opened < left && Instant::now() < until {
        let mut stream = match timeout(Duration::from_secs(10), mux.open()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return (opened, write_failed, Some(format!("open failed: {e}"))),
            Err(_) => return (opened, write_failed, Some("open hung for 10s".to_owned())),
        };
        // The server resets client-opened streams; a write may meet the reset.
        if stream.write_all(b"spam spam spam!\n").await.is_err() {
            write_failed += 1;
        }
        opened += 1;
    }
    (opened, write_failed, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_opening_streams_without_end_does_not_grow_the_server() {
    const STREAMS: usize = 20_000;
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let addr = t.addr;
    let started = Instant::now();
    let until = started + Duration::from_secs(10);
    // When the server ends a spamming session, the spammer logs in again
    // and goes on, until the whole budget of streams is spent.
    let spam = async move {
        let (mut opened, mut write_failed, mut killed) = (0, 0, 0);
        let mut why = Vec::new();
        let mut sessions = Vec::new();
        while opened < STREAMS && Instant::now() < until {
            let s = raw_session(addr, "stream-spammer", None).await;
            let (n, failed, stopped) = spam_streams(&s.mux, STREAMS - opened, until).await;
            opened += n;
            write_failed += failed;
            if let Some(stopped) = stopped {
                killed += 1;
                why.push(stopped);
            }
            sessions.push(s);
        }
        why.dedup();
        (
            opened,
            write_failed,
            sessions,
            killed,
            why,
            started.elapsed(),
        )
    };
    let ((opened, write_failed, mut sessions, killed, why, took), during) =
        tokio::join!(spam, async {
            t.good_round("good-during-spam", "while a client opened streams")
                .await
        });
    // A session that ran out of budget rather than being closed must still answer.
    let last = sessions.last_mut().expect("at least one session");
    let alive = timeout(
        Duration::from_secs(10),
        last.request(Frame::Ping { seq: 99 }, |f| {
            matches!(f, Frame::Pong { seq: 99 })
        }),
    )
    .await;
    let last_alive = matches!(alive, Ok(Some(_)));
    if killed > 0 {
        t.logged_n("the spamming sessions' ends", killed, |l| {
            l.contains("client gone") && l.contains("client=stream-spammer")
        })
        .await;
        t.logged("yamux's stream limit", |l| {
            l.contains("maximum number of streams reached")
        })
        .await;
    }
    let (n, per) = (sessions.len(), opened / sessions.len());
    drop(sessions);
    let what = format!(
        "{opened} streams opened in {took:?} over {n} sessions (~{per} each, {write_failed} writes \
         met a reset); the server reset each, and ended {killed} sessions once yamux's 512-stream \
         limit was hit (\"maximum number of streams reached\", client gone with \
         \"connection_lost\"; the spammer saw {why:?}); last session alive: {last_alive}; a good \
         client took {during:?} meanwhile"
    );
    t.still_serves("stream-spam", &what).await;
}

// ---------------------------------------------------------------------------
// 7b: streams that announce a header and send nothing more.

/// What the server answered on a flood of streams.
#[derive(Default)]
struct Answers {
    /// Streams refused with a `StreamRefused` frame.
    refused: Counter,
    /// Streams ended without a frame (reset or closed).
    ended: Counter,
    /// Either.
    answered: Counter,
    /// The first refusal's message.
    said: std::sync::Mutex<Option<String>>,
}

/// Opens `n` streams on `mux`, writes `prefix` (a frame length) on each and
/// nothing more, and keeps each open while a task reads the server's
/// answer; an answered one is dropped (thousands of them kept open would
/// only slow this side's multiplexer).
async fn announce_headers(mux: &MuxHandle, prefix: u32, n: usize) -> (Arc<Answers>, JoinSet<()>) {
    let answers = Arc::new(Answers::default());
    let mut readers = JoinSet::new();
    for _ in 0..n {
        let mut stream = timeout(PATIENCE, mux.open())
            .await
            .expect("opening a stream hung")
            .expect("opening a stream");
        stream.write_all(&prefix.to_be_bytes()).await.unwrap();
        let answers = answers.clone();
        readers.spawn(async move {
            match read_frame(&mut stream, MAX_FRAME).await {
                Ok(Frame::StreamRefused { message }) => {
                    answers.said.lock().unwrap().get_or_insert(message);
                    answers.refused.add(1);
                }
                _ => answers.ended.add(1),
            }
            answers.answered.add(1);
        });
    }
    (answers, readers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_announcing_headers_and_sending_nothing_hold_no_memory() {
    const STREAMS: usize = 8_000;
    const LIMIT: usize = 100;
    // The hand-driven client answers no heartbeat while it floods, which on
    // a loaded machine may take longer than the default 30 s.
    let limits = format!("max_streams_per_client = {LIMIT}\nheartbeat_timeout_ms = 600000");
    let mut t = Target::new(&limits).await;
    let idle = t.server.memory();
    let s = raw_session(t.addr, "header-flooder", None).await;
    let started = Instant::now();
    // "A frame of 65,536 bytes follows", and no more: the server once
    // zero-filled 64 KiB for each (650 MB for 8,000). No header is that
    // long: each is dropped at once.
    let (long, _long_readers) = announce_headers(&s.mux, 1 << 16, STREAMS).await;
    long.answered
        .reaches("long headers answered", STREAMS)
        .await;
    // A header's plausible length, and no more: a hundred wait for the
    // rest of theirs, holding the client's stream slots; the rest are
    // refused at once, naming the limit. (Those that waited past
    // `stream_ack_timeout`, on a machine slow enough, are dropped and
    // their slots taken by later ones.)
    let (short, _short_readers) = announce_headers(&s.mux, 36, STREAMS).await;
    short
        .answered
        .reaches("short headers answered", STREAMS - LIMIT)
        .await;
    assert!(short.refused.get() > 0, "none refused");
    let message = short.said.lock().unwrap().clone().unwrap();
    assert_eq!(
        message,
        format!("stream refused: limit max_streams_per_client = {LIMIT} reached")
    );
    // The server says it once, then sums the rest: not 7,900 lines.
    let summed = t
        .logged("the summed refusals", |l| {
            l.contains("stream refused: limit max_streams_per_client")
                && l.contains("times in the last")
        })
        .await;
    let lines = t.log().count(|l| l.contains("stream refused"));
    let flooded = t.server.memory();
    let during = t
        .good_round(
            "good-during-header-flood",
            "while streams held their headers back",
        )
        .await;
    let grew = flooded.rss_mib() - idle.rss_mib();
    assert!(
        grew < 16.0,
        "{} streams grew the server from {idle} to {flooded}",
        2 * STREAMS
    );
    // Two lines for the first (the server's and the log hook's), then as
    // many summaries a second while the flood lasts.
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(
        lines <= 2 * (seconds + 2),
        "{lines} log lines for {STREAMS} refusals in {seconds}s"
    );
    drop(s);
    let what = format!(
        "{STREAMS} streams announcing 64 KiB dropped at once; of {STREAMS} announcing 36 bytes, \
         {} refused at once with \"{message}\", {lines} log lines (\"{}\"); the server grew \
         {grew:.1} MiB ({idle} idle, {flooded} flooded); a good client took {during:?} meanwhile",
        short.refused.get(),
        summed.trim()
    );
    t.still_serves("header-flood", &what).await;
}

// 7c: a flood of refused visitors.

/// 2,000 visitors refused in a burst once wrote 6,000 warnings (and as
/// many events): the server and the log hook now sum refusals per tunnel
/// and reason, a line a second, while the hooks still count each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_visitors_is_a_few_lines_not_thousands() {
    const VISITORS: usize = 2_000;
    let mut t = Target::new("max_visitors_per_ip = 1").await;
    let client = good_client(t.addr, "flooded").await.unwrap();
    let spec: RemoteSpec = format!("0:{}", t.echo).parse().unwrap();
    let tunnel = client.open_reverse(spec).await.unwrap();
    // One visitor holds the address's only slot; every other is refused.
    let mut held = TcpStream::connect(tunnel.public_addr).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut echoed = [0u8; 1];
    held.read_exact(&mut echoed).await.unwrap();
    let closed = Arc::new(Counter::default());
    let mut visitors = JoinSet::new();
    let started = Instant::now();
    for _ in 0..VISITORS {
        let mut tcp = TcpStream::connect(tunnel.public_addr).await.unwrap();
        let closed = closed.clone();
        visitors.spawn(async move {
            let _ = tcp.read(&mut [0u8; 1]).await;
            closed.add(1);
        });
    }
    closed.reaches("refused visitors closed", VISITORS).await;
    let reason = "visitor turned away: limit max_visitors_per_ip = 1 reached";
    // The flood is over: its summary comes within the second.
    let summary = t
        .logged("the summed refusals", move |l| {
            l.contains(reason) && l.contains("times in the last")
        })
        .await;
    let lines = t.log().count(|l| l.contains(reason));
    // The first refusal is three lines (the server's, the log hook's error
    // and rejection), then as many summaries a second while it lasts.
    let seconds = started.elapsed().as_secs() as usize + 1;
    drop(held);
    client.shutdown().await.unwrap();
    assert!(
        lines <= 3 * (seconds + 2),
        "{lines} log lines for {VISITORS} refused visitors:\n{}",
        t.log().tail(20)
    );
    let what = format!(
        "{VISITORS} visitors refused in a burst, {lines} log lines about them (\"{}\")",
        summary.trim()
    );
    t.still_serves("refused-visitor-flood", &what).await;
}

// ---------------------------------------------------------------------------
// 8: login brute force.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_brute_force_locks_out_its_address_only() {
    let mut t = Target::new("handshake_timeout_ms = 30000\nfailed_logins_per_minute = 5").await;
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    /// One login from `source`; the server's refusal, or `None` for LoginOk.
    async fn attempt(
        server: SocketAddr,
        source: Ipv4Addr,
        token: &str,
    ) -> Option<(RefuseCode, String)> {
        let mut tcp = connect_from(source, server).await.unwrap();
        match timeout(PATIENCE, login(&mut tcp, "brute", token))
            .await
            .expect("a login hung")
            .unwrap()
        {
            ServerAnswer::Welcome(_) => None,
            ServerAnswer::Refused { code, message } => Some((code, message)),
        }
    }

    let mut refusals = Vec::new();
    for i in 0..30 {
        let guess = format!("guess-{i}");
        let refusal = attempt(t.addr, attacker, &guess).await;
        refusals.push(refusal.expect("a wrong token logged in"));
    }
    // Five failures are allowed a minute; the sixth trips the block, which
    // refuses everything from the address after it.
    for (i, (code, message)) in refusals.iter().enumerate() {
        if i < 6 {
            assert_eq!(*code, RefuseCode::AuthFailed, "attempt {i}: {message}");
        } else {
            assert_eq!(*code, RefuseCode::LimitReached, "attempt {i}: {message}");
            assert!(
                message.contains("too many failed logins"),
                "attempt {i}: {message}"
            );
        }
    }
    let right = attempt(t.addr, attacker, TOKEN)
        .await
        .expect("the right token got in from the blocked address");
    assert!(right.1.contains("too many failed logins"), "{right:?}");
    t.logged("the block's warning", |l| {
        l.contains("too many failed logins; refusing this address") && l.contains("127.0.0.2:")
    })
    .await;
    // Another address is not blocked: by hand from 127.0.0.3, and the good
    // client from 127.0.0.1 in `still_serves`.
    let other = attempt(t.addr, Ipv4Addr::new(127, 0, 0, 3), TOKEN).await;
    assert_eq!(other, None, "a login from 127.0.0.3 was refused");
    let what = format!(
        "refused 30 wrong tokens from 127.0.0.2: 6 as {:?} ({:?}), 24 as {:?} ({:?}); the right \
         token from 127.0.0.2 too; 127.0.0.3 logged in",
        refusals[0].0, refusals[0].1, refusals[29].0, refusals[29].1
    );
    t.still_serves("login-brute-force", &what).await;
}

// ---------------------------------------------------------------------------
// 9: a client name that tries to forge log lines.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_name_cannot_forge_log_lines() {
    let mut t = Target::new("handshake_timeout_ms = 30000").await;
    let forged =
        "2026-01-01T00:00:00.000000Z  INFO reitunnel_server: client logged in client=admin";
    let name = format!("evil\n{forged}");
    let mut tcp = TcpStream::connect(t.addr).await.unwrap();
    let answer = timeout(PATIENCE, login(&mut tcp, &name, TOKEN))
        .await
        .expect("the login hung")
        .unwrap();
    let ServerAnswer::Refused { code, message } = answer else {
        panic!("a name with a newline logged in: {answer:?}");
    };
    assert_eq!(code, RefuseCode::BadRequest);
    assert!(message.contains(r"contains '\n'"), "{message}");
    // The refusal is logged with the name escaped, on one line.
    let line = t
        .logged("the refusal", |l| l.contains("login refused"))
        .await;
    assert!(line.contains(r"evil\n2026"), "{line}");
    assert_eq!(
        t.log().count(|l| l.starts_with("2026-01-01T00:00:00")),
        0,
        "a forged line reached the log"
    );
    t.still_serves(
        "log-injection",
        "a name with a newline was refused and logged escaped",
    )
    .await;
}

/// A connection joining session `id` with `key`: the server's answer, and
/// the connection (a joined one counts while it is open).
async fn join(server: SocketAddr, id: ClientId, key: &[u8; 32]) -> (ServerAnswer, TcpStream) {
    let mut tcp = TcpStream::connect(server).await.unwrap();
    let joining = run_login(&mut tcp, ClientLogin::join(id, key, MAX_FRAME));
    let answer = timeout(PATIENCE, joining)
        .await
        .expect("a join hung")
        .unwrap();
    (answer, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_session_takes_its_key_and_stops_at_its_limit() {
    let mut t = Target::new("max_connections_per_client = 2").await;
    let session = raw_session(t.addr, "joined", None).await;
    let id = session.welcome.client_id;
    let grant = session
        .welcome
        .lanes
        .clone()
        .expect("a version 2 login is offered lanes");
    assert_eq!(grant.max, 2);
    let refused = |(answer, _): (ServerAnswer, TcpStream)| match answer {
        ServerAnswer::Refused { code, message } => (code, message),
        ServerAnswer::Welcome(w) => panic!("joined: {w:?}"),
    };
    let (code, message) = refused(join(t.addr, id, &[7; 32]).await);
    assert_eq!(code, RefuseCode::AuthFailed, "{message}");
    assert!(message.contains("join proof"), "{message}");
    let (code, message) = refused(join(t.addr, ClientId(id.0 + 1000), &grant.key).await);
    assert_eq!(code, RefuseCode::Unavailable, "{message}");
    assert!(message.contains("no session"), "{message}");
    let (answer, _joined) = join(t.addr, id, &grant.key).await;
    match answer {
        ServerAnswer::Welcome(w) => assert_eq!((w.client_id, w.lanes), (id, None)),
        other => panic!("the right key was refused: {other:?}"),
    }
    let (code, message) = refused(join(t.addr, id, &grant.key).await);
    assert_eq!(code, RefuseCode::LimitReached, "{message}");
    assert!(
        message.contains("max_connections_per_client = 2"),
        "{message}"
    );
    drop(session);
    t.still_serves("joins", "after the joins").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_client_is_answered_in_version_1_and_offered_no_lanes() {
    let mut t = Target::new("").await;
    let mut tcp = TcpStream::connect(t.addr).await.unwrap();
    tcp.write_all(&Preamble::of(1).encode()).await.unwrap();
    let mut theirs = [0u8; PREAMBLE_LEN];
    tcp.read_exact(&mut theirs).await.unwrap();
    assert_eq!(theirs, Preamble::of(1).encode());
    let Frame::Challenge { nonce } = read_frame(&mut tcp, MAX_FRAME).await.unwrap() else {
        panic!("no challenge");
    };
    let name = "old-client".to_owned();
    let login = Frame::Login {
        proof: proof(TOKEN.as_bytes(), &nonce, &name),
        name,
    };
    write_frame(&mut tcp, &login).await.unwrap();
    let ok = read_frame(&mut tcp, MAX_FRAME).await.unwrap();
    assert!(matches!(ok, Frame::LoginOk { .. }), "{ok:?}");
    // yamux right after LoginOk, as version 1 has it: a Lanes frame there
    // would break it.
    let (mux, inbound, driver) = spawn_mux(tcp, yamux::Mode::Client, &MuxConfig::default());
    let control = mux.open().await.unwrap();
    let mut control = Framed::new(control, FrameCodec::new(MAX_FRAME));
    control.send(Frame::Ping { seq: 5 }).await.unwrap();
    let pong = timeout(PATIENCE, control.next()).await.expect("no pong");
    assert!(matches!(pong, Some(Ok(Frame::Pong { seq: 5 }))), "{pong:?}");
    mux.close();
    drop((control, inbound));
    driver.finish().await;
    t.still_serves("version-1-login", "beside it").await;
}
