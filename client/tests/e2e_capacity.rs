//! Capacity through real sessions: thousands of visitors on one client, and
//! the server's memory budget (`max_buffered_bytes`) holding against
//! visitors that stop reading while another client's stream keeps moving.

mod common;

use std::net::SocketAddr;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, firehose_service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

fn count(events: &[Ev], pred: impl Fn(&Ev) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

/// 2,000 visitors at once (four times yamux's default stream limit, and
/// the old per-client limit of 500): every one reaches the service and gets
/// its own bytes back while all are open together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_visitors_at_once_on_one_client() {
    const VISITORS: u64 = 2_000;
    let rec = Recorder::new();
    // All from 127.0.0.1: lift the per-address limit (1,024 by default).
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.limits.max_visitors_per_ip = 0
    })
    .await;
    let client = connect(server.addr, "many").await;
    let tunnel = reverse(&client, echo_service().await).await;

    let mut visitors = Vec::new();
    for i in 0..VISITORS {
        let mut v = TcpStream::connect(tunnel.public_addr).await.unwrap();
        v.write_all(&i.to_be_bytes()).await.unwrap();
        visitors.push(v);
    }
    // Nobody has closed yet, so all 2,000 streams are open at once.
    let mut echoes = JoinSet::new();
    for (i, mut v) in visitors.into_iter().enumerate() {
        echoes.spawn(async move {
            let mut back = [0u8; 8];
            v.read_exact(&mut back).await.unwrap();
            assert_eq!(u64::from_be_bytes(back), i as u64);
            v
        });
    }
    let mut held = Vec::new();
    while let Some(v) = echoes.join_next().await {
        held.push(v.unwrap());
    }
    let events = rec.events();
    assert_eq!(
        count(&events, |e| matches!(e, Ev::StreamOpen(..))),
        VISITORS as usize
    );
    assert_eq!(count(&events, |e| matches!(e, Ev::StreamClose(..))), 0);
    assert!(rec.errors().is_empty(), "{:?}", rec.errors());

    drop(held);
    rec.wait_for("every stream closed", |ev| {
        count(ev, |e| matches!(e, Ev::StreamClose(..))) == VISITORS as usize
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Connects a visitor that reads one byte, then never again. `true` if the
/// server let it in (the firehose's byte arrived), `false` if it was turned
/// away (EOF).
async fn stalled_visitor(addr: SocketAddr) -> (bool, TcpStream) {
    let mut v = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(PATIENCE, v.read(&mut byte))
        .await
        .expect("admitted or turned away, not left hanging");
    (matches!(n, Ok(1)), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_turns_stalled_visitors_away_and_others_keep_moving() {
    const BUDGET: u64 = 16 << 20;
    // What each stream reserves: its initial yamux window and a 64 KiB
    // relay buffer each way (the relay's default).
    const PER_STREAM: u64 = 256 * 1024 + 2 * 64 * 1024;
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.limits.max_buffered_bytes = BUDGET;
    })
    .await;

    // A well-behaved client first: its session takes window growth from
    // the budget, and its echo stream is open before the flood.
    let steady = connect(server.addr, "steady").await;
    let echo = reverse(&steady, echo_service().await).await;
    let mut ours = TcpStream::connect(echo.public_addr).await.unwrap();
    ours.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    ours.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");

    // Another client's download, and visitors who stop reading it.
    let hosed = connect(server.addr, "hosed").await;
    let download = reverse(&hosed, firehose_service().await).await;
    let mut stalled = Vec::new();
    let refused = loop {
        let (admitted, v) = stalled_visitor(download.public_addr).await;
        if !admitted {
            break v;
        }
        stalled.push(v);
        assert!(
            stalled.len() as u64 <= BUDGET / PER_STREAM,
            "{} stalled visitors admitted: more than the budget holds",
            stalled.len()
        );
    };
    drop(refused);
    assert!(!stalled.is_empty());
    rec.wait_for("the budget named", |ev| {
        ev.iter().any(|e| {
            matches!(e, Ev::Error(m) if m.contains(&format!("limit max_buffered_bytes = {BUDGET} reached")))
        })
    })
    .await;

    // The other client's stream still carries every byte, both ways.
    const LEN: usize = 32 << 20;
    let mut payload = vec![0u8; LEN];
    Pattern::new(11).fill(&mut payload);
    let (mut r, mut w) = ours.split();
    let send = async {
        for chunk in payload.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
    };
    let check = async {
        let mut got = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < LEN {
            let room = (LEN - at).min(got.len());
            let n = r.read(&mut got[..room]).await.unwrap();
            assert!(n > 0, "echo ended early");
            assert!(
                got[..n] == payload[at..at + n],
                "echo differs near byte {at}"
            );
            at += n;
        }
    };
    tokio::join!(send, check);

    // Stalled visitors leaving give their share back.
    let before = count(&rec.events(), |e| matches!(e, Ev::StreamClose(..)));
    let left = stalled.len();
    drop(stalled);
    rec.wait_for("stalled streams closed", |ev| {
        count(ev, |e| matches!(e, Ev::StreamClose(..))) >= before + left
    })
    .await;
    let (admitted, again) = stalled_visitor(download.public_addr).await;
    assert!(admitted, "the budget came back");
    drop((again, ours));

    steady.shutdown().await.unwrap();
    hosed.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// The same budget check on a session's window growth: it never takes more
/// than half the budget, so visitors can always open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_growth_leaves_room_for_visitors() {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        // Less than one session's default headroom (256 MiB).
        c.limits.max_buffered_bytes = 4 << 20;
    })
    .await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        clients.push(connect(server.addr, name).await);
    }
    let echo = echo_service().await;
    for client in &clients {
        let tunnel = reverse(client, echo).await;
        assert_eq!(echo_check(tunnel.public_addr, 1 << 20, 5).await, 1 << 20);
    }
    for client in clients {
        client.shutdown().await.unwrap();
    }
    server.stop().await;
    assert_balanced(&rec.events());
}

/// What tries past a per-client limit of `limit` must show: `limit` of
/// them served and open together, every other one closed at once; and
/// once the served ones leave, `other`, a tunnel of the same session,
/// still carries bytes. Returns how many were closed.
async fn limit_held(
    rec: &Recorder,
    (held, closed): (Vec<TcpStream>, usize),
    limit: usize,
    other: SocketAddr,
) -> usize {
    assert_eq!(held.len(), limit);
    drop(held);
    stream_closes(rec, limit).await;
    assert_eq!(echo_check(other, 100_000, 3).await, 100_000);
    closed
}

/// How many refusals the server's summed `on_error` reports (`scope:
/// error`) of `reason` stand for: the first is told as it is, the rest as
/// `reason (N times in the last …)`.
fn summed(errors: &[String], reason: &str) -> usize {
    errors
        .iter()
        .filter_map(|e| e.split_once(": ")?.1.strip_prefix(reason))
        .map(|rest| match rest.strip_prefix(" (") {
            None => 1,
            Some(count) => count.split(' ').next().unwrap().parse().unwrap(),
        })
        .sum()
}

/// Past `max_streams_per_client` (lowered to 500), 2,000 visitors at once
/// on one tunnel: 500 are served, every other one is closed at once, and
/// the server's hooks hear the limit's name for each; the session and its
/// other tunnel live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_past_max_streams_per_client_are_closed_and_the_session_lives() {
    const LIMIT: usize = 500;
    const VISITORS: u64 = 2_000;
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.limits.max_visitors_per_ip = 0;
        c.limits.max_streams_per_client = LIMIT;
    })
    .await;
    let client = connect(server.addr, "crowded").await;
    let echo = echo_service().await;
    let (first, second) = (reverse(&client, echo).await, reverse(&client, echo).await);

    let tried = echoed_or_closed(first.public_addr, VISITORS).await;
    let closed = limit_held(&rec, tried, LIMIT, second.public_addr).await;
    let reason = "visitor turned away: limit max_streams_per_client = 500 reached";
    assert_eq!(rec.rejections(reason), closed, "one refusal per closed try");
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// The same limit on `-L`: 2,000 local connections at once, the server
/// refuses all but 500 of their streams, naming the limit, and each refused
/// one is closed at once; the session and its reverse tunnel live on. Such
/// a stream is refused before its header is read, so it has no tunnel: the
/// server reports the refusals at the client's scope, summed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_streams_past_max_streams_per_client_are_refused_and_the_session_lives() {
    const LIMIT: usize = 500;
    const LOCAL: u64 = 2_000;
    let echo = echo_service().await;
    let rule: reitunnel_server::ForwardRule = format!("127.0.0.1:{}", echo.port()).parse().unwrap();
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.allow_forward = vec![rule];
        c.limits.max_streams_per_client = LIMIT;
    })
    .await;
    let client = connect(server.addr, "crowded-local").await;
    let spec: reitunnel_client::LocalSpec = format!("0:{echo}").parse().unwrap();
    let forward = client.open_forward(spec).await.unwrap();
    let reverse_tunnel = reverse(&client, echo).await;

    let tried = echoed_or_closed(forward.public_addr, LOCAL).await;
    let closed = limit_held(&rec, tried, LIMIT, reverse_tunnel.public_addr).await;
    client.shutdown().await.unwrap();
    server.stop().await;
    let reason = "stream refused: limit max_streams_per_client = 500 reached";
    assert_eq!(
        summed(&rec.errors(), reason),
        closed,
        "every refusal counted once"
    );
    assert_balanced(&rec.events());
}
