//! A session over several connections: streams spread over them, losing
//! one ends only the streams on it, the session lives on, the connection
//! is dialed again, and every open still has exactly one close.

mod common;

use std::time::Duration;

use common::*;
use reitunnel_client::Client;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (a failure guard, not a synchronisation: it checks a condition)
/// until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"));
}

/// Whether `visitor` still echoes `tag`: false once the tunnel cut it.
async fn echoes(visitor: &mut TcpStream, tag: u8) -> bool {
    if visitor.write_all(&[tag; 16]).await.is_err() {
        return false;
    }
    let mut back = [0u8; 16];
    match tokio::time::timeout(PATIENCE, visitor.read_exact(&mut back)).await {
        Ok(Ok(_)) => back == [tag; 16],
        Ok(Err(_)) => false,
        Err(_) => panic!("visitor {tag} neither echoed nor closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_connection_of_a_session_ends_only_its_streams() {
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let server = TestServer::start(chain, |_| {}).await;
    let proxy = FaultProxy::start(server.addr).unwrap();
    let mut cfg = client_config(proxy.addr(), "lanes");
    cfg.connections = 3;
    let client = Client::connect(cfg, HookChain::default()).await.unwrap();
    let echo = echo_service().await;
    let tunnel = reverse(&client, echo).await;
    until("three connections", || proxy.open() == 3).await;

    let mut visitors = Vec::new();
    for tag in 0..9u8 {
        let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
        assert!(
            echoes(&mut visitor, tag).await,
            "visitor {tag} before the cut"
        );
        visitors.push(visitor);
    }
    // The first connection carries the control stream; the second is one
    // of the two added to it.
    proxy.cut_connection(2);
    let (mut cut, mut alive) = (0, 0);
    for (tag, visitor) in visitors.iter_mut().enumerate() {
        if echoes(visitor, tag as u8).await {
            alive += 1;
        } else {
            cut += 1;
        }
    }
    // Nine streams over three connections, the first holding the control
    // stream too: each connection carries two to four of them.
    assert!((2..=4).contains(&cut), "{cut} cut, {alive} alive");
    assert_eq!(cut + alive, 9);

    // The session lives: new visitors get through, and the client dials
    // the lost connection again.
    until("the connection dialed again", || {
        proxy.accepted() == 4 && proxy.open() == 3
    })
    .await;
    let mut late = TcpStream::connect(tunnel.public_addr).await.unwrap();
    assert!(echoes(&mut late, 99).await);
    assert_eq!(server.admin.clients().len(), 1, "still one session");

    drop((visitors, late));
    stream_closes(&rec, 10).await;
    client.shutdown().await.unwrap();
    let events = disconnected(&rec).await;
    let lost = events
        .iter()
        .filter(|e| matches!(e, Ev::StreamClose(_, reason, _) if reason == "connection_lost"))
        .count();
    assert_eq!(
        lost, cut,
        "each cut stream closed once, as lost: {events:?}"
    );
    let connects = events
        .iter()
        .filter(|e| matches!(e, Ev::Connect(..)))
        .count();
    assert_eq!(connects, 1, "one session for the hooks");
    server.stop().await;
}
