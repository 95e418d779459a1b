//! Graceful shutdown of the `reitunnel-server` binary: SIGTERM stops new
//! logins at once, lets a 100 MiB transfer already under way finish, then
//! closes stream, tunnel, client and server in that order and exits 0. A
//! second SIGTERM cuts the drain short.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{start, Running};
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, pseudo_random};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "drain-token";
const PATIENCE: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// A server whose audit log records streams too, draining for up to `drain` seconds.
fn server(dir: &Path, drain: u64) -> (Running, SocketAddr) {
    let config = dir.join("server.toml");
    let audit = dir.join("audit.jsonl");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nbind_ip = \"127.0.0.1\"\n\
             drain_timeout_secs = {drain}\n[[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
            audit.display()
        ),
    )
    .unwrap();
    let (server, addr, _) = start(&["--config", config.to_str().unwrap()]);
    (server, addr)
}

/// A client with one tunnel to a fresh echo service; returns its public address.
async fn tunnel(server: SocketAddr) -> (Client, SocketAddr) {
    let cfg = ClientConfig::new(server.to_string(), "drainee", Secret::new(TOKEN));
    let client = Client::connect(cfg, HookChain::default()).await.unwrap();
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let public = client.open_reverse(spec).await.unwrap().public_addr;
    (client, public)
}

/// Waits for a log line containing `text` (the wait blocks, so off the async workers).
fn logged(server: &Running, what: &str, text: &str) {
    tokio::task::block_in_place(|| {
        server
            .log()
            .wait_for(what, PATIENCE, |line| line.contains(text));
    });
}

/// The audit log's event names and reasons, in order.
fn audit(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    text.lines()
        .filter_map(|line| {
            let field = |name: &str| {
                let key = format!("\"{name}\":\"");
                let start = line.find(&key)? + key.len();
                Some(line[start..].split('"').next()?.to_owned())
            };
            let event = field("event")?;
            Some(match field("reason") {
                Some(reason) => format!("{event} {reason}"),
                None => event,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transfer_finish_then_closes_leaf_first_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server(dir.path(), 60);
    let (client, public) = tunnel(addr).await;

    let total = 100 * MIB;
    let payload = pseudo_random(7, total);
    let visitor = TcpStream::connect(public).await.unwrap();
    let (mut r, mut w) = visitor.into_split();
    // The first MiB goes through before the signal: the stream is open and flowing.
    w.write_all(&payload[..MIB]).await.unwrap();
    let mut back = vec![0u8; MIB];
    r.read_exact(&mut back).await.unwrap();
    assert_eq!(back, payload[..MIB]);

    server.terminate();
    logged(&server, "the drain to start", "draining");
    // New logins are refused at once: the control port is closed.
    let late = ClientConfig::new(addr.to_string(), "late", Secret::new(TOKEN));
    assert!(Client::connect(late, HookChain::default()).await.is_err());
    // A session already in asks for one more tunnel: refused, with the reason.
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let refusal = client
        .open_reverse(spec)
        .await
        .expect_err("no new tunnel during a drain");
    assert!(
        refusal.to_string().contains("the server is shutting down"),
        "{refusal}"
    );

    // The rest of the 100 MiB still flows, both ways, byte for byte.
    let rest = payload[MIB..].to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&rest).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::with_capacity(total - MIB);
    tokio::time::timeout(PATIENCE, r.read_to_end(&mut echoed))
        .await
        .expect("the transfer finishes during the drain")
        .unwrap();
    writer.await.unwrap();
    assert!(echoed == payload[MIB..], "echo differs after the signal");

    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        client.shutdown().await.is_err(),
        "the server said goodbye first"
    );
    let events = audit(dir.path());
    let tail: Vec<&str> = events
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "stream.closed finished",
            "tunnel.closed shutdown",
            "client.disconnected shutdown",
            "server.stopped"
        ],
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_closes_open_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server(dir.path(), 600);
    let (_client, public) = tunnel(addr).await;
    // A stream that would keep the drain waiting for ten minutes.
    let mut idle = TcpStream::connect(public).await.unwrap();
    idle.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    idle.read_exact(&mut four).await.unwrap();

    server.terminate();
    logged(&server, "the drain to start", "draining");
    server.terminate();
    logged(&server, "the forced close", "forced");
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest).await;
    let events = audit(dir.path());
    assert!(
        events.contains(&"stream.closed shutdown".to_owned()),
        "{events:#?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("server.stopped"));
}
