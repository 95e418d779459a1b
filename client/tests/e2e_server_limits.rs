//! The server's own limits through real sessions: each one, when hit, gives
//! whoever hit it a reason naming the limit, reaches `on_error`, and leaves
//! everyone else alone; its slot comes back when the holder closes. And
//! heartbeats: a peer frozen behind a proxy is noticed by both sides.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reitunnel_client::{Client, ClientError};
use reitunnel_hooks::{ClientInfo, CloseReason, Hook, HookChain, HookResult, Totals};
use reitunnel_server::ServerConfig;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn limited(tweak: impl FnOnce(&mut ServerConfig)) -> (TestServer, Arc<Recorder>) {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), tweak).await;
    (server, rec)
}

fn has_error(events: &[Ev], text: &str) -> bool {
    errors_with(events, text) > 0
}

/// A visitor the server turned away: its connection ends without a byte.
async fn turned_away(addr: SocketAddr) {
    let mut visitor = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(PATIENCE, visitor.read(&mut buf))
        .await
        .expect("turned away, not left hanging");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_refuses_the_next_with_the_limit_and_frees_on_logout() {
    let (server, rec) = limited(|c| c.limits.max_clients = 1).await;
    let first = connect(server.addr, "first").await;
    let err =
        match Client::connect(client_config(server.addr, "second"), HookChain::default()).await {
            Ok(_) => panic!("second client admitted past max_clients"),
            Err(e) => e.to_string(),
        };
    assert!(
        err.contains("server is full: limit max_clients = 1 reached"),
        "{err}"
    );
    assert!(has_error(&rec.events(), "max_clients = 1"));
    let echo = echo_service().await;
    let tunnel = reverse(&first, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 100_000, 1).await, 100_000);
    first.shutdown().await.unwrap();
    rec.wait_for("first gone", |ev| {
        ev.iter().any(|e| matches!(e, Ev::Disconnect(..)))
    })
    .await;
    let second = connect(server.addr, "second").await;
    second.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnels_per_client_refuses_the_next_and_frees_on_close() {
    let (server, rec) = limited(|c| c.limits.max_tunnels_per_client = 1).await;
    let client = connect(server.addr, "c").await;
    let echo = echo_service().await;
    let spec = || format!("0:{echo}").parse().unwrap();
    let first = client.open_reverse(spec()).await.unwrap();
    match client.open_reverse(spec()).await {
        Err(ClientError::TunnelRefused { message, .. }) => assert!(
            message.contains("too many tunnels: limit max_tunnels_per_client = 1 reached"),
            "{message}"
        ),
        other => panic!("second tunnel: {other:?}"),
    }
    assert!(has_error(&rec.events(), "max_tunnels_per_client = 1"));
    client.close_tunnel(first.id).await.unwrap();
    rec.wait_for("first tunnel closed", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::TunnelClose(id, ..) if *id == first.id))
    })
    .await;
    let again = client.open_reverse(spec()).await.expect("slot given back");
    assert_eq!(echo_check(again.public_addr, 100_000, 2).await, 100_000);
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Holds `n` visitor streams open through `addr` until dropped.
async fn hold_streams(rec: &Recorder, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let before = opened(&rec.events());
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    rec.wait_for("streams open", |ev| opened(ev) >= before + n)
        .await;
    held
}

fn closed(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Ev::StreamClose(..)))
        .count()
}

fn opened(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Ev::StreamOpen(..)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_turn_visitors_away_per_client_and_in_total() {
    let (server, rec) = limited(|c| {
        c.limits.max_streams_per_client = 2;
        c.limits.max_streams = 3;
    })
    .await;
    let echo = echo_service().await;
    let a = connect(server.addr, "a").await;
    let b = connect(server.addr, "b").await;
    let ta = reverse(&a, echo).await;
    let tb = reverse(&b, echo).await;

    let mut held_a = hold_streams(&rec, ta.public_addr, 2).await;
    turned_away(ta.public_addr).await;
    rec.wait_for("per-client limit reported", |ev| {
        has_error(
            ev,
            "visitor turned away: limit max_streams_per_client = 2 reached",
        )
    })
    .await;
    // Client b is under its own limit, but the server's total is 3.
    let _held_b = hold_streams(&rec, tb.public_addr, 1).await;
    turned_away(tb.public_addr).await;
    rec.wait_for("total limit reported", |ev| {
        has_error(ev, "limit max_streams = 3 reached")
    })
    .await;

    // A closed stream gives its slots back (before its close event fires).
    let closed_before = closed(&rec.events());
    drop(held_a.pop());
    rec.wait_for("the stream's close", |ev| closed(ev) > closed_before)
        .await;
    assert_eq!(echo_check(ta.public_addr, 100_000, 3).await, 100_000);
    drop(held_a);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    server.stop().await;
    let events = rec.events();
    assert_balanced(&events);
    let refusals = events
        .iter()
        .filter(
            |e| matches!(e, Ev::Rejected { reason, .. } if reason.contains("visitor turned away")),
        )
        .count();
    assert_eq!(refusals, 2, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_visitors_zero_turns_every_visitor_away() {
    let (server, rec) = limited(|c| c.limits.max_pending_visitors = 0).await;
    let client = connect(server.addr, "c").await;
    let tunnel = reverse(&client, echo_service().await).await;
    turned_away(tunnel.public_addr).await;
    rec.wait_for("pending limit reported", |ev| {
        has_error(ev, "limit max_pending_visitors = 0 reached")
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Echoes `len` bytes through `v`, checking them.
async fn echo_on(v: &mut TcpStream, len: usize) {
    let sent: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    v.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; len];
    v.read_exact(&mut back).await.unwrap();
    assert_eq!(back, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_visitors_per_ip_turns_the_next_away_and_other_addresses_still_get_in() {
    let (server, rec) = limited(|c| c.limits.max_visitors_per_ip = 2).await;
    let client = connect(server.addr, "c").await;
    let echo = echo_service().await;
    let first = reverse(&client, echo).await;
    let second = reverse(&client, echo).await;
    const HOME: [u8; 4] = [127, 0, 0, 1];

    // Two visitors from 127.0.0.1, on two tunnels: the limit is per address, server-wide.
    let mut a = connect_from(HOME, first.public_addr).await;
    let mut b = connect_from(HOME, second.public_addr).await;
    echo_on(&mut a, 1000).await;
    echo_on(&mut b, 1000).await;
    turned_away(first.public_addr).await;
    rec.wait_for("per-address limit reported", |ev| {
        has_error(
            ev,
            "visitor turned away: limit max_visitors_per_ip = 2 reached",
        )
    })
    .await;
    // Another address is not affected.
    let mut other = connect_from([127, 0, 0, 2], first.public_addr).await;
    echo_on(&mut other, 1000).await;

    // A visitor that leaves gives its address's slot back.
    let closed_before = closed(&rec.events());
    drop(a);
    rec.wait_for("the visitor's close", |ev| closed(ev) > closed_before)
        .await;
    let mut again = connect_from(HOME, first.public_addr).await;
    echo_on(&mut again, 1000).await;
    drop((b, other, again));
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_silent_past_the_idle_timeout_is_closed_as_a_timeout() {
    let (server, rec) = limited(|c| c.relay.idle_timeout = Some(Duration::from_millis(300))).await;
    let client = connect(server.addr, "c").await;
    let tunnel = reverse(&client, echo_service().await).await;
    let mut quiet = TcpStream::connect(tunnel.public_addr).await.unwrap();
    echo_on(&mut quiet, 1000).await;
    // Then nothing: the server closes it, the visitor sees the end.
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, quiet.read_to_end(&mut rest))
        .await
        .expect("closed, not left open")
        .unwrap();
    assert!(rest.is_empty());
    let events = rec
        .wait_for("the stream's close", |ev| closed(ev) == 1)
        .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::StreamClose(_, reason, _) if reason == "timeout")),
        "{events:#?}"
    );
    // The tunnel itself lives on.
    assert_eq!(echo_check(tunnel.public_addr, 100_000, 9).await, 100_000);
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

fn errors_with(events: &[Ev], text: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Ev::Error(m) if m.contains(text)))
        .count()
}

fn rejections(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Ev::Rejected { .. }))
        .count()
}

/// 50 connections that send HTTP instead of a login: the hooks hear the
/// first failure as it happens and the other 49 as one count (here at
/// shutdown; normally once per `pre_login_summary`), while a real client
/// logs in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_login_reach_the_hooks_once_then_as_one_count() {
    const GARBAGE: usize = 50;
    let (server, rec) = limited(|c| c.pre_login_summary = Duration::from_secs(3600)).await;
    for _ in 0..GARBAGE {
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: tunnel\r\n\r\n")
            .await
            .unwrap();
        // The server answers with its preamble and hangs up (a reset, as
        // the rest of the request is left unread).
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, c.read_to_end(&mut rest))
            .await
            .expect("closed, not left open");
    }
    let events = rec.events();
    assert_eq!(
        errors_with(&events, "server: login from 127.0.0.1"),
        1,
        "{events:#?}"
    );
    let good = connect(server.addr, "good").await;
    good.shutdown().await.unwrap();
    server.stop().await;
    let events = rec.events();
    assert_eq!(
        errors_with(&events, "49 more 'preamble' failures before login"),
        1,
        "{events:#?}"
    );
    assert_balanced(&events);
}

/// Past `failed_logins_per_minute` an address is turned away at accept,
/// before any handshake: its further attempts, right token or not, are told
/// why and reach the hooks as one error and one count, not as a rejection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_address_is_dropped_at_accept_without_a_rejection_each() {
    let (server, rec) = limited(|c| {
        c.limits.failed_logins_per_minute = 2;
        c.pre_login_summary = Duration::from_secs(3600);
    })
    .await;
    let guess = || {
        let mut cfg = client_config(server.addr, "guesser");
        cfg.token = reitunnel_hooks::builtin::Secret::new("wrong");
        Client::connect(cfg, HookChain::default())
    };
    // Two failures within the burst, the third crosses the limit.
    for _ in 0..3 {
        let err = guess().await.err().expect("a wrong token is refused");
        assert!(err.to_string().contains("token"), "{err}");
    }
    let refused = rejections(&rec.events());
    assert_eq!(refused, 3);
    // Now even the right token is turned away at once, 20 times, told why.
    for _ in 0..20 {
        let right = Client::connect(client_config(server.addr, "guesser"), HookChain::default());
        let err = right.await.err().expect("a blocked address got in");
        assert!(
            err.to_string()
                .contains("too many failed logins from 127.0.0.1"),
            "{err}"
        );
    }
    let events = rec.events();
    assert_eq!(
        rejections(&events),
        refused,
        "no rejection per blocked attempt"
    );
    assert_eq!(
        errors_with(
            &events,
            "turned away before its handshake: too many failed logins from it \
             (limit failed_logins_per_minute = 2)"
        ),
        1
    );
    server.stop().await;
    let events = rec.events();
    assert_eq!(
        errors_with(&events, "19 more 'blocked' failures before login"),
        1,
        "{events:#?}"
    );
}

/// A TCP proxy that forwards until frozen, then holds both connections
/// open without moving a byte: a peer that vanished without a FIN.
async fn freezable_proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (freeze, frozen) = watch::channel(false);
    tokio::spawn(async move {
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream).await.unwrap();
        let mut frozen = frozen;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
            _ = frozen.changed() => {
                // Hold both ends open, silent, until the test ends.
                std::future::pending::<()>().await;
            }
        }
    });
    (addr, freeze)
}

/// Records the heartbeat round trip a session had measured when it closed.
#[derive(Default)]
struct RttAtClose(Mutex<Option<Duration>>);

impl Hook for RttAtClose {
    fn name(&self) -> &str {
        "rtt"
    }
    fn on_client_disconnect(&self, c: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        *self.0.lock().unwrap() = c.rtt();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_is_noticed_by_both_sides_within_the_heartbeat_timeout() {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.limits.heartbeat_interval = Duration::from_millis(100);
        c.limits.heartbeat_timeout = Duration::from_millis(600);
    })
    .await;
    let (proxy, freeze) = freezable_proxy(server.addr).await;
    let mut cfg = client_config(proxy, "frozen");
    cfg.heartbeat_timeout = Duration::from_millis(600);
    let client_rec = Recorder::new();
    let client_rtt = Arc::new(RttAtClose::default());
    let chain = HookChain::builder()
        .shared(client_rec.clone())
        .shared(client_rtt.clone())
        .build();
    let client = Client::connect(cfg, chain).await.unwrap();
    let tunnel = reverse(&client, echo_service().await).await;
    assert_eq!(echo_check(tunnel.public_addr, 10_000, 4).await, 10_000);
    // The first heartbeat's answer gives the client a round trip (polled: an
    // RTT is a number, not an event).
    tokio::time::timeout(PATIENCE, async {
        while client.round_trip().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("client measures an RTT");

    freeze.send(true).unwrap();
    // The server drops the session with a timeout and tells its hooks why.
    // (Its tunnel, and so the client, stay open on the port lease until
    // the server stops, below.)
    rec.wait_for("server-side heartbeat timeout", |ev| {
        has_error(ev, "(heartbeat timeout)")
    })
    .await;
    // The client's session ends on its own, for the same reason.
    tokio::time::timeout(PATIENCE, client.ended())
        .await
        .expect("client notices");
    let err = client.shutdown().await.unwrap_err();
    assert!(
        err.to_string().contains("server unresponsive")
            && err.to_string().contains("heartbeat timeout"),
        "{err}"
    );
    let client_events = client_rec.events();
    assert!(
        client_events
            .iter()
            .any(|e| matches!(e, Ev::Disconnect(_, reason, _) if reason == "timeout")),
        "{client_events:#?}"
    );
    assert_balanced(&client_events);
    assert!(client_rtt.0.lock().unwrap().is_some(), "client-side RTT");
    server.stop().await;
    let events = rec.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::Disconnect(_, reason, _) if reason == "timeout")),
        "{events:#?}"
    );
    assert_balanced(&events);
}
