//! A loopback deployment in one process, shared by the demo and the
//! end-to-end benchmark: a server and a client, each on its own OS thread
//! with its own current-thread runtime (as the binaries run them), and
//! simple services to tunnel to.

#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use reitunnel_client::{Client, ClientConfig, ClientTls, Fingerprint, RemoteSpec};
use reitunnel_transport::tls::ServerTls;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{
    BandwidthMeter, ByteRate, Counters, Quota, RateLimit, RateLimitConfig, Sampler, Sampling,
    Secret, TracingHook,
};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{Hook, HookChain};
use reitunnel_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Every built-in hook with a data path, by name, configured so none
/// refuses or throttles: what each costs per chunk, for the benchmarks.
pub fn data_builtins() -> Vec<(&'static str, Arc<dyn Hook>)> {
    let huge = ByteRate {
        bytes_per_sec: NonZeroU32::MAX,
        burst: NonZeroU32::MAX,
    };
    vec![
        (
            "rate_limit",
            Arc::new(RateLimit::new(RateLimitConfig {
                per_client: Some(huge),
                per_tunnel: Some(huge),
                ..RateLimitConfig::default()
            })),
        ),
        (
            "quota",
            Arc::new(Quota::new(
                u64::MAX / 2,
                Duration::from_secs(86_400),
                EventBus::new(),
            )),
        ),
        ("meter", BandwidthMeter::new(Vec::new())),
        (
            "sampled counters",
            Arc::new(Sampler::new(
                Counters::new(),
                Sampling::OneIn(NonZeroU64::new(64).expect("64 > 0")),
            )),
        ),
        ("log", Arc::new(TracingHook::new(1024))),
        ("counters", Arc::new(Counters::new())),
    ]
}

/// All of [`data_builtins`] in one chain: what "hooks on" costs.
pub fn full_chain() -> HookChain {
    data_builtins()
        .into_iter()
        .fold(HookChain::builder(), |b, (_, hook)| b.shared(hook))
        .build()
}

/// The token the harness uses.
pub const TOKEN: &str = "loopback-demo-token";

/// Runs `f` on a new thread with its own current-thread runtime.
pub fn spawn_runtime<F, Fut>(name: &str, f: F) -> JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
        .expect("spawn thread")
}

/// A self-signed server certificate in a temporary directory, and a client
/// pinned to it: TLS for loopback runs without a CA.
pub struct LoopbackTls {
    _dir: tempfile::TempDir,
    server: ServerTls,
    client: ClientTls,
}

impl LoopbackTls {
    /// Makes the certificate (rcgen) and writes it as PEM.
    pub fn self_signed() -> io::Result<LoopbackTls> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .map_err(io::Error::other)?;
        let server = ServerTls {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: None,
        };
        std::fs::write(&server.cert, cert.pem())?;
        std::fs::write(&server.key, key.serialize_pem())?;
        let client = ClientTls {
            fingerprint: Some(Fingerprint::of(cert.der())),
            ..ClientTls::default()
        };
        Ok(LoopbackTls {
            _dir: dir,
            server,
            client,
        })
    }
}

/// A running server and client with one reverse tunnel to `target`.
pub struct Loopback {
    /// The server's control address.
    pub server_addr: SocketAddr,
    /// The tunnel's public address: connect here to reach the target.
    pub public_addr: SocketAddr,
    stop_server: Option<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Loopback {
    /// Starts the server and the client and opens one tunnel to `target`.
    pub fn start(
        target: SocketAddr,
        server_hooks: HookChain,
        client_hooks: HookChain,
    ) -> io::Result<Loopback> {
        Loopback::start_with(target, server_hooks, client_hooks, None)
    }

    /// Like [`Loopback::start`], with the control connection inside TLS if `tls` is given.
    pub fn start_with(
        target: SocketAddr,
        server_hooks: HookChain,
        client_hooks: HookChain,
        tls: Option<&LoopbackTls>,
    ) -> io::Result<Loopback> {
        let server_tls = tls.map(|t| t.server.clone());
        let client_tls = tls.map(|t| t.client.clone());
        let (addr_tx, addr_rx) = std_mpsc::channel();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = spawn_runtime("server", move || async move {
            let mut cfg =
                ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new(TOKEN)));
            cfg.default_bind_ip = "127.0.0.1".parse().unwrap();
            cfg.tls = server_tls;
            let server = match Server::bind(cfg, server_hooks).await {
                Ok(s) => s,
                Err(e) => return drop(addr_tx.send(Err(e.to_string()))),
            };
            let _ = addr_tx.send(Ok(server.local_addr()));
            let _ = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let server_addr = addr_rx
            .recv()
            .map_err(|_| io::Error::other("server thread died"))?
            .map_err(io::Error::other)?;

        let (tunnel_tx, tunnel_rx) = std_mpsc::channel();
        let client = spawn_runtime("client", move || async move {
            let mut cfg =
                ClientConfig::new(server_addr.to_string(), "loopback", Secret::new(TOKEN));
            cfg.tls = client_tls;
            let client = match Client::connect(cfg, client_hooks).await {
                Ok(c) => c,
                Err(e) => return drop(tunnel_tx.send(Err(e.to_string()))),
            };
            let spec: RemoteSpec = format!("127.0.0.1:0:{target}").parse().unwrap();
            let _ = tunnel_tx.send(client.open_reverse(spec).await.map_err(|e| e.to_string()));
            client.ended().await;
            let _ = client.shutdown().await;
        });
        let tunnel = tunnel_rx
            .recv()
            .map_err(|_| io::Error::other("client thread died"))?
            .map_err(io::Error::other)?;
        Ok(Loopback {
            server_addr,
            public_addr: tunnel.public_addr,
            stop_server: Some(stop_server),
            threads: vec![server, client],
        })
    }

    /// Shuts the server down (which ends the client) and joins both threads.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An echo service on 127.0.0.1:0 on its own thread.
pub fn echo_service() -> SocketAddr {
    serve_on_thread("echo", |mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
}

/// A sink on 127.0.0.1:0: reads until EOF, then answers with the byte count
/// (8 bytes, big endian), so a sender knows when everything arrived.
pub fn sink_service() -> SocketAddr {
    serve_on_thread("sink", |mut s| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            total += n as u64;
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
    })
}

fn serve_on_thread<F, Fut>(name: &str, handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = std_mpsc::channel();
    spawn_runtime(name, move || async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind service");
        let _ = tx.send(listener.local_addr().expect("service addr"));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::task::spawn_local(handler(s));
                }
            })
            .await;
    });
    rx.recv().expect("service started")
}
