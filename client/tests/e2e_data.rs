//! Bytes through a real tunnel: integrity, concurrency, exact totals and
//! the exact hook event sequence on both sides.

mod common;

use common::*;
use reitunnel_hooks::{Direction, HookChain, Totals};
use reitunnel_testkit::echo_service;
use tokio::task::JoinSet;

fn chain(rec: &std::sync::Arc<Recorder>) -> HookChain {
    HookChain::builder().shared(rec.clone()).build()
}

fn data_sum(events: &[Ev], dir: Direction) -> usize {
    events
        .iter()
        .map(|e| match e {
            Ev::Data(_, d, n) if *d == dir => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_64_mib_each_way_with_exact_totals() {
    const LEN: usize = 64 << 20;
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |_| {}).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "bulk").await;
    let tunnel = reverse(&client, echo).await;

    assert_eq!(echo_check(tunnel.public_addr, LEN, 7).await, LEN);

    client.shutdown().await.expect("clean shutdown");
    let events = disconnected(&rec).await;
    let want = Totals {
        bytes_in: LEN as u64,
        bytes_out: LEN as u64,
        streams: 1,
        ..Totals::default()
    };
    assert!(
        events.contains(&Ev::TunnelClose(tunnel.id, "finished".into(), want)),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Ev::StreamClose(_, r, t) if r == "finished" && *t == want)));
    assert_eq!(data_sum(&events, Direction::Ingress), LEN);
    assert_eq!(data_sum(&events, Direction::Egress), LEN);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_visitors_through_one_client() {
    const VISITORS: usize = 200;
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |_| {}).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "busy").await;
    let tunnel = reverse(&client, echo).await;

    let mut visitors = JoinSet::new();
    let mut expected = 0u64;
    for i in 0..VISITORS {
        let len = 64 * 1024 + i * 13; // distinct sizes, including odd ones
        expected += len as u64;
        visitors.spawn(echo_check(tunnel.public_addr, len, i as u64 + 1));
    }
    let mut echoed = 0u64;
    while let Some(n) = visitors.join_next().await {
        echoed += n.expect("visitor task") as u64;
    }
    assert_eq!(echoed, expected);

    let events = rec
        .wait_for("all stream closes", |e| {
            e.iter()
                .filter(|e| matches!(e, Ev::StreamClose(..)))
                .count()
                == VISITORS
        })
        .await;
    let (mut bytes_in, mut bytes_out) = (0, 0);
    for e in &events {
        if let Ev::StreamClose(_, reason, t) = e {
            assert_eq!(reason, "finished");
            assert_eq!(t.bytes_in, t.bytes_out, "each visitor's echo is complete");
            bytes_in += t.bytes_in;
            bytes_out += t.bytes_out;
        }
    }
    assert_eq!((bytes_in, bytes_out), (expected, expected));
    client.shutdown().await.expect("clean shutdown");
    disconnected(&rec).await;
    server.stop().await;
}

/// The lifecycle a user sees, as both sides' hooks see it: connect, tunnel
/// open, stream open, data, stream close, tunnel close, disconnect, with
/// totals equal to what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_the_exact_event_sequence_on_both_sides() {
    let server_rec = Recorder::new();
    let client_rec = Recorder::new();
    let server = TestServer::start(chain(&server_rec), |_| {}).await;
    let echo = echo_service().await;
    let client =
        reitunnel_client::Client::connect(client_config(server.addr, "seq"), chain(&client_rec))
            .await
            .unwrap();
    let client_id = client.id();
    let tunnel = reverse(&client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 5000, 3).await, 5000);
    // The visitor has its echo; the stream's close races the shutdown, so wait for it.
    for rec in [&server_rec, &client_rec] {
        rec.wait_for("stream close", |e| {
            e.iter().any(|e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    }
    client.shutdown().await.unwrap();
    server_rec
        .wait_for("disconnect", |e| {
            e.iter().any(|e| matches!(e, Ev::Disconnect(..)))
        })
        .await;

    let totals = Totals {
        bytes_in: 5000,
        bytes_out: 5000,
        streams: 1,
        ..Totals::default()
    };
    // The server saw the client log out; the client's own hooks, its shutdown.
    for (side, rec, ended) in [
        ("server", &server_rec, "finished"),
        ("client", &client_rec, "shutdown"),
    ] {
        let events = rec.events();
        assert_balanced(&events);
        let lifecycle: Vec<Ev> = events
            .iter()
            .filter(|e| !matches!(e, Ev::Data(..)))
            .cloned()
            .collect();
        let (c, s) = match (&lifecycle[0], &lifecycle[2]) {
            (Ev::Connect(c, _), Ev::StreamOpen(s, _)) => (*c, *s),
            other => panic!("{side}: unexpected start {other:?}"),
        };
        assert_eq!(c, client_id, "{side}: both sides agree on the client id");
        assert_eq!(
            lifecycle,
            vec![
                Ev::Connect(c, "seq".into()),
                Ev::TunnelOpen(tunnel.id, c),
                Ev::StreamOpen(s, tunnel.id),
                Ev::StreamClose(s, "finished".into(), totals),
                Ev::TunnelClose(tunnel.id, ended.into(), totals),
                Ev::Disconnect(c, ended.into(), totals),
            ],
            "{side} lifecycle"
        );
        // Data events sit between the stream's open and close, and add up.
        let first = |f: fn(&Ev) -> bool| events.iter().position(f).unwrap();
        let last = |f: fn(&Ev) -> bool| events.iter().rposition(f).unwrap();
        let (open, close) = (
            first(|e| matches!(e, Ev::StreamOpen(..))),
            first(|e| matches!(e, Ev::StreamClose(..))),
        );
        let (first_data, last_data) = (
            first(|e| matches!(e, Ev::Data(..))),
            last(|e| matches!(e, Ev::Data(..))),
        );
        assert!(
            open < first_data && last_data < close,
            "{side}: data inside the stream"
        );
        assert_eq!(data_sum(&events, Direction::Ingress), 5000, "{side}");
        assert_eq!(data_sum(&events, Direction::Egress), 5000, "{side}");
    }
    server.stop().await;
}
