//! Slow consumers: visitors that stop reading a download while the service
//! keeps writing. What they leave stuck in the server stays within
//! `max_buffered_bytes`, and another tunnel of the same client keeps
//! moving: its throughput with the stalled visitors is measured beside its
//! throughput without them, in the same run.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{assert_audit_balanced, start_audited};
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, firehose_service, pseudo_random};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "slow";
const BUDGET_MIB: u64 = 64;
const STALLED: usize = 16;
const BULK: usize = 64 << 20;

/// Echoes `BULK` checked bytes through `public`; returns MiB/s.
async fn bulk(public: SocketAddr, seed: u64) -> f64 {
    let payload = pseudo_random(seed, BULK);
    let stream = TcpStream::connect(public).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let start = Instant::now();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(BULK);
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == payload, "the bulk echo differs");
    BULK as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_visitors_stay_within_the_budget_and_the_clients_other_tunnel_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, audit) = start_audited(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nbind_ip = \"127.0.0.1\"\n\
             [limits]\nmax_buffered_bytes = \"{BUDGET_MIB}MiB\"\n"
        ),
    );
    let cfg = ClientConfig::new(addr.to_string(), "consumer", Secret::new(TOKEN));
    let client = Client::connect(cfg, HookChain::default()).await.unwrap();
    let open = |target: SocketAddr| {
        let spec: RemoteSpec = format!("0:{target}").parse().unwrap();
        client.open_reverse(spec)
    };
    let download = open(firehose_service().await).await.unwrap().public_addr;
    let echo = open(echo_service().await).await.unwrap().public_addr;
    let idle = server.memory();

    let alone = bulk(echo, 1).await;
    // Visitors that read one byte of the download, then never again.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut visitor = TcpStream::connect(download).await.unwrap();
        visitor.read_exact(&mut [0u8; 1]).await.unwrap();
        stalled.push(visitor);
    }
    let beside = bulk(echo, 2).await;
    let loaded = server.memory();
    eprintln!(
        "slow consumers: {STALLED} stalled downloads; the same client's other tunnel moved \
         {alone:.0} MiB/s alone and {beside:.0} MiB/s beside them (x{:.2}); server {idle} idle, \
         {loaded} with them (budget {BUDGET_MIB} MiB)",
        beside / alone
    );
    // A bound, not a timing: whatever the stalled streams hold is within
    // the budget (plus the process's own working set).
    assert!(
        loaded.rss_kib <= idle.rss_kib + (BUDGET_MIB + 32) * 1024,
        "server memory {loaded} beyond the budget over {idle}"
    );

    drop(stalled);
    client.shutdown().await.unwrap();
    assert!(server.stop().success());
    assert_eq!(assert_audit_balanced(&audit), 2 + STALLED);
}
