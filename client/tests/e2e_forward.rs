//! `-L` end to end: the client listens locally, the server dials targets
//! its `allow_forward` list admits, both hook chains see the forward tunnel
//! and its streams with exact byte totals, and a refused or dead target is
//! named to the side that asked.

mod common;

use std::net::SocketAddr;

use common::*;
use reitunnel_client::{ClientError, LocalSpec};
use reitunnel_hooks::{HookChain, Totals};
use reitunnel_server::ForwardRule;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server_allowing(rules: &[String]) -> (TestServer, std::sync::Arc<Recorder>) {
    let rec = Recorder::new();
    let rules: Vec<ForwardRule> = rules.iter().map(|r| r.parse().unwrap()).collect();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.allow_forward = rules;
    })
    .await;
    (server, rec)
}

fn local(target: impl std::fmt::Display) -> LocalSpec {
    format!("0:{target}").parse().unwrap()
}

fn stream_totals(events: &[Ev]) -> Vec<Totals> {
    events
        .iter()
        .filter_map(|e| match e {
            Ev::StreamClose(_, reason, t) if reason == "finished" => Some(*t),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_carries_checked_bytes_and_both_sides_meter_them() {
    let echo = echo_service().await;
    let (server, rec) = server_allowing(&[format!("127.0.0.1:{}", echo.port())]).await;
    let (client, client_rec) = recorded_client(server.addr, "fwd").await;
    let forward = client.open_forward(local(echo)).await.unwrap();
    assert!(forward.public_addr.ip().is_loopback(), "{forward:?}");
    let sizes = [1 << 20, 300_000, 17, 2 << 20];
    let checks = sizes.map(|len| tokio::spawn(echo_check(forward.public_addr, len, len as u64)));
    for (check, len) in checks.into_iter().zip(sizes) {
        assert_eq!(check.await.unwrap(), len);
    }
    client.shutdown().await.unwrap();
    server.stop().await;

    for (side, events) in [("server", rec.events()), ("client", client_rec.events())] {
        assert_balanced(&events);
        let mut totals: Vec<u64> = stream_totals(&events)
            .iter()
            .map(|t| {
                assert_eq!(
                    t.bytes_in, t.bytes_out,
                    "{side}: an echo returns what it got"
                );
                t.bytes_in
            })
            .collect();
        totals.sort_unstable();
        let mut want: Vec<u64> = sizes.iter().map(|&s| s as u64).collect();
        want.sort_unstable();
        assert_eq!(totals, want, "{side}: {events:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_allow_list_are_refused_with_the_list() {
    let echo = echo_service().await;
    let allowed = format!("127.0.0.1:{}", echo.port());
    let (server, rec) = server_allowing(std::slice::from_ref(&allowed)).await;
    let client = connect(server.addr, "fwd").await;
    match client.open_forward(local("127.0.0.1:22")).await {
        Err(ClientError::TunnelRefused { message, .. }) => assert!(
            message.contains(&format!(
                "forward to 127.0.0.1:22 refused: it is not in the server's allow_forward list ({allowed})"
            )),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    rec.wait_for("refusal heard", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Rejected { reason, .. } if reason.contains("allow_forward")))
    })
    .await;
    // The session goes on: an allowed target still works.
    let forward = client.open_forward(local(echo)).await.unwrap();
    assert_eq!(echo_check(forward.public_addr, 10_000, 1).await, 10_000);
    client.shutdown().await.unwrap();
    server.stop().await;

    let (default, _) = server_allowing(&[]).await;
    let client = connect(default.addr, "fwd").await;
    let err = client
        .open_forward(local(echo))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the server allows no forward targets"),
        "{err}"
    );
    client.shutdown().await.unwrap();
    default.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_is_reported_on_both_sides_and_the_forward_stays() {
    // A port with nothing behind it: bind, note, close.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (server, rec) = server_allowing(&["127.0.0.1:*".to_owned()]).await;
    let (client, client_rec) = recorded_client(server.addr, "fwd").await;
    let forward = client.open_forward(local(dead)).await.unwrap();
    // Its first bytes leave before the server has tried the target.
    let mut visitor = TcpStream::connect(forward.public_addr).await.unwrap();
    visitor.write_all(b"hello?").await.unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(visitor.read(&mut buf).await, Ok(0) | Err(_)));
    rec.wait_for("server error", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Error(m) if m.contains(&format!("connect to {dead} failed"))))
    })
    .await;
    client_rec
        .wait_for("client error", |ev| {
            ev.iter()
                .any(|e| matches!(e, Ev::Error(m) if m.contains("the server could not forward")))
        })
        .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
    assert_balanced(&client_rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_forwards_with_dash_l() {
    let echo = echo_service().await;
    let (server, _rec) = server_allowing(&[format!("127.0.0.1:{}", echo.port())]).await;
    let mut child = spawn_client(server.addr, &["-L", &format!("0:{echo}")]);
    let (line, local) = Ready::of(&mut child).next().await;
    assert!(
        line.starts_with("forward ") && line.ends_with(&format!("-> {echo}")),
        "{line}"
    );
    assert_eq!(echo_check(local, 1 << 20, 5).await, 1 << 20);
    child.kill().await.unwrap();
    server.stop().await;
}

/// 300 local connections at once against `max_forward_streams = 100`: the
/// first 100 through get their echo while all are open, the rest are closed
/// at once and the client's hooks hear the limit's name; the session, and
/// a reverse tunnel on it, live on; a slot given back lets the next one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_connections_past_max_forward_streams_are_closed_and_the_session_lives() {
    const LIMIT: usize = 100;
    const TRIES: usize = 300;
    let echo = echo_service().await;
    let (server, rec) = server_allowing(&[format!("127.0.0.1:{}", echo.port())]).await;
    let client_rec = Recorder::new();
    let mut cfg = client_config(server.addr, "many-local");
    cfg.max_forward_streams = LIMIT;
    let chain = HookChain::builder().shared(client_rec.clone()).build();
    let client = reitunnel_client::Client::connect(cfg, chain).await.unwrap();
    let forward = client.open_forward(local(echo)).await.unwrap();
    let reverse_tunnel = reverse(&client, echo).await;

    let (mut held, closed) = echoed_or_closed(forward.public_addr, TRIES as u64).await;
    assert_eq!((held.len(), closed), (LIMIT, TRIES - LIMIT));
    assert_eq!(
        client_rec
            .rejections("local connection turned away: limit max_forward_streams = 100 reached"),
        TRIES - LIMIT
    );
    // The session lives: its reverse tunnel still carries bytes.
    assert_eq!(
        echo_check(reverse_tunnel.public_addr, 100_000, 7).await,
        100_000
    );

    // A closed connection gives its slot back.
    let closes_before = client_rec
        .events()
        .iter()
        .filter(|e| matches!(e, Ev::StreamClose(..)))
        .count();
    drop(held.pop());
    client_rec
        .wait_for("a forward stream's close", |ev| {
            ev.iter()
                .filter(|e| matches!(e, Ev::StreamClose(..)))
                .count()
                > closes_before
        })
        .await;
    assert_eq!(echo_check(forward.public_addr, 10_000, 8).await, 10_000);
    drop(held);
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
    assert_balanced(&client_rec.events());
}
