//! Shared by the end-to-end tests: a real server on 127.0.0.1:0, clients
//! and tunnels on it, and the recording hook of `reitunnel_hooks::testing`
//! (whose events tests wait on, never sleep on) with its balance check.
#![allow(dead_code)] // each test binary uses a different subset

pub mod pki;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_client::{Client, ClientConfig, RemoteSpec, TunnelReady};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::{Hook, HookChain};
use reitunnel_server::{Admin, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // each test binary uses a different subset
pub use reitunnel_hooks::testing::{assert_balanced, Recorded as Ev, Recorder};

pub const TOKEN: &str = "e2e-secret";
/// Upper bound for any wait: a failure guard, never a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A server on 127.0.0.1:0 with tunnels on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The operator's handle: kick, ban, list.
    pub admin: Admin,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(chain: HookChain, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new(TOKEN)));
        cfg.default_bind_ip = "127.0.0.1".parse().unwrap();
        tweak(&mut cfg);
        let server = Server::bind(cfg, chain).await.expect("bind server");
        let addr = server.local_addr();
        let admin = server.admin();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server run");
        });
        TestServer {
            addr,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A server whose chain is `hook` followed by a [`Recorder`].
    pub async fn with_hook(hook: impl Hook) -> (TestServer, Arc<Recorder>) {
        let rec = Recorder::new();
        let chain = HookChain::builder().hook(hook).shared(rec.clone()).build();
        (TestServer::start(chain, |_| {}).await, rec)
    }

    /// Stops the server and waits until `on_server_stop` ran.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.expect("server task");
    }
}

pub fn client_config(server: SocketAddr, name: &str) -> ClientConfig {
    ClientConfig::new(server.to_string(), name, Secret::new(TOKEN))
}

/// An address nothing listens on: bound, then let go.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub async fn connect(server: SocketAddr, name: &str) -> Client {
    Client::connect(client_config(server, name), HookChain::default())
        .await
        .expect("client connects")
}

pub async fn reverse(client: &Client, target: SocketAddr) -> TunnelReady {
    let spec: RemoteSpec = format!("0:{target}").parse().unwrap();
    client.open_reverse(spec).await.expect("tunnel opens")
}

/// Deterministic pseudo-random bytes (xorshift), so the receiver can check
/// every byte without holding the whole payload.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Sends `len` pattern bytes through `addr` and checks the echo byte for
/// byte, writing and reading concurrently. Returns the bytes echoed.
pub async fn echo_check(addr: SocketAddr, len: usize, seed: u64) -> usize {
    let stream = TcpStream::connect(addr).await.expect("visitor connects");
    stream.set_nodelay(true).unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len()) & !7;
            let n = if n == 0 { left } else { n };
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await.expect("write");
            left -= n;
        }
        w.shutdown().await.expect("shutdown");
    });
    let mut expected = Pattern::new(seed);
    let mut want = vec![0u8; 64 * 1024];
    let mut got = vec![0u8; 64 * 1024];
    let mut total = 0;
    let mut pending = 0; // bytes of `want` not yet matched
    let mut pos = 0;
    loop {
        let n = r.read(&mut got).await.expect("read");
        if n == 0 {
            break;
        }
        for &b in &got[..n] {
            if pos == pending {
                let left = len - total;
                let m = left.min(want.len()) & !7;
                pending = if m == 0 { left } else { m };
                assert!(pending > 0, "more bytes echoed than sent");
                expected.fill(&mut want[..pending]);
                pos = 0;
            }
            assert_eq!(b, want[pos], "echo differs at byte {total}");
            pos += 1;
            total += 1;
        }
    }
    writer.await.unwrap();
    assert_eq!(total, len, "echo length");
    total
}

/// The `tunnel N ready: ADDR -> TARGET` lines a command-line client prints.
pub struct Ready(tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>);

impl Ready {
    /// Takes the child's piped stdout.
    pub fn of(child: &mut tokio::process::Child) -> Ready {
        use tokio::io::AsyncBufReadExt;
        let stdout = child.stdout.take().expect("stdout piped");
        Ready(tokio::io::BufReader::new(stdout).lines())
    }

    /// The next ready line and the address it announces (within [`PATIENCE`]).
    pub async fn next(&mut self) -> (String, SocketAddr) {
        let line = tokio::time::timeout(PATIENCE, self.0.next_line())
            .await
            .expect("a ready line in time")
            .unwrap()
            .expect("ready line");
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        (line, addr)
    }
}

/// The command-line client logging in to `server` with the test token and
/// `args`; stdout piped for [`Ready`], killed when dropped.
pub fn spawn_client(server: SocketAddr, args: &[&str]) -> tokio::process::Child {
    spawn_client_to(&server.to_string(), args)
}

/// [`spawn_client`] with `--server` as written, a list perhaps.
pub fn spawn_client_to(servers: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"))
        .args(["--server", servers])
        .args(args)
        .env("REITUNNEL_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start reitunnel-client")
}

/// A client connected to `server` whose own chain records into a new [`Recorder`].
pub async fn recorded_client(server: SocketAddr, name: &str) -> (Client, Arc<Recorder>) {
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let client = Client::connect(client_config(server, name), chain)
        .await
        .expect("client connects");
    (client, rec)
}

/// Opens `n` connections to `addr` at once, each sending its index; then
/// each either gets its index echoed (and is kept open, so all are open
/// together) or is closed without a byte. A hang fails the test.
pub async fn echoed_or_closed(addr: SocketAddr, n: u64) -> (Vec<TcpStream>, usize) {
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&i.to_be_bytes()).await.unwrap();
        conns.push((i, c));
    }
    let mut held = Vec::new();
    let mut closed = 0;
    for (i, mut c) in conns {
        let mut back = [0u8; 8];
        let got = tokio::time::timeout(PATIENCE, c.read_exact(&mut back))
            .await
            .expect("an answer or a close, not a hang");
        match got {
            Ok(_) => {
                assert_eq!(u64::from_be_bytes(back), i);
                held.push(c);
            }
            Err(_) => closed += 1,
        }
    }
    (held, closed)
}

/// Waits until `rec` has seen `n` stream closes.
pub async fn stream_closes(rec: &Recorder, n: usize) {
    rec.wait_for("stream closes", |ev| {
        ev.iter()
            .filter(|e| matches!(e, Ev::StreamClose(..)))
            .count()
            >= n
    })
    .await;
}

/// Waits until `rec` has heard the client disconnect; returns what it
/// recorded, checked so that every open has its one close.
pub async fn disconnected(rec: &Recorder) -> Vec<Ev> {
    let events = rec
        .wait_for("client disconnect", |e| {
            e.iter().any(|e| matches!(e, Ev::Disconnect(..)))
        })
        .await;
    assert_balanced(&events);
    events
}
