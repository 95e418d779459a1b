//! Bad input gets a specific error and breaks nothing else.

mod common;

use std::sync::Arc;

use common::*;
use reitunnel_client::{Client, ClientError, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::{HookChain, RefuseCode};
use reitunnel_proto::{Preamble, PREAMBLE_LEN};
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn chain(rec: &Arc<Recorder>) -> HookChain {
    HookChain::builder().shared(rec.clone()).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_and_others_keep_working() {
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |_| {}).await;
    let echo = echo_service().await;
    let good = connect(server.addr, "good").await;
    let tunnel = reverse(&good, echo).await;

    let mut cfg = client_config(server.addr, "mallory");
    cfg.token = Secret::new("not-the-token");
    let err = Client::connect(cfg, HookChain::default())
        .await
        .err()
        .expect("refused");
    match &err {
        ClientError::LoginRefused { code, message } => {
            assert_eq!(*code, RefuseCode::AuthFailed);
            assert!(message.contains("token refused"), "{message}");
        }
        other => panic!("expected LoginRefused, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("server refused login: token refused"),
        "{err}"
    );
    // The server's hooks heard the verdict, naming the refusing hook.
    rec.wait_for("rejection", |e| {
        e.iter().any(|e| matches!(e, Ev::Rejected { by, reason } if by == "token_auth" && reason.contains("token refused")))
    })
    .await;

    // The command-line client says the same and exits non-zero.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"))
        .args([
            "--server",
            &server.addr.to_string(),
            "--name",
            "cli",
            "-R",
            &format!("0:{echo}"),
        ])
        .env("REITUNNEL_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: server refused login: token refused"),
        "{stderr}"
    );

    // The good client never noticed.
    assert_eq!(echo_check(tunnel.public_addr, 100_000, 5).await, 100_000);
    good.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_named_on_both_sides() {
    // A v9 client talking to our server: it gets our preamble, then EOF.
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |_| {}).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&Preamble { version: 9 }.encode())
        .await
        .unwrap();
    let mut theirs = [0u8; PREAMBLE_LEN];
    raw.read_exact(&mut theirs).await.unwrap();
    assert_eq!(theirs, Preamble::CURRENT.encode());
    assert_eq!(
        raw.read(&mut [0u8; 16]).await.unwrap(),
        0,
        "server hangs up"
    );
    rec.wait_for("version error", |e| {
        e.iter().any(|e| matches!(e, Ev::Error(m) if m.contains("protocol version mismatch: we speak v1 to v2, peer speaks v9")))
    })
    .await;

    // Our client talking to a v3 server.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        let mut buf = [0u8; PREAMBLE_LEN];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&Preamble { version: 3 }.encode())
            .await
            .unwrap();
        let _ = s.read(&mut buf).await;
    });
    let err = Client::connect(client_config(fake_addr, "new"), HookChain::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        format!("server {fake_addr}: protocol version mismatch: we speak v1 to v2, peer speaks v3")
    );

    // And the real server still serves.
    let echo = echo_service().await;
    let client = connect(server.addr, "after").await;
    let tunnel = reverse(&client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 1000, 1).await, 1000);
    client.shutdown().await.unwrap();
    server.stop().await;
}

/// A port the OS says is free right now (no fixed ports in tests).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_outside_the_allow_list_are_refused_with_the_list() {
    let allowed = free_port().await;
    let outside = if allowed > 2000 {
        allowed - 1
    } else {
        allowed + 1
    };
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |c| {
        c.allow_ports = allowed.to_string().parse().unwrap();
    })
    .await;
    let echo = echo_service().await;
    let client = connect(server.addr, "ports").await;

    let spec: RemoteSpec = format!("{outside}:{echo}").parse().unwrap();
    let err = client.open_reverse(spec).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "server refused tunnel 0.0.0.0:{outside} -> {echo}: port {outside} is outside the server's allowed ports ({allowed})"
        )
    );
    assert!(matches!(
        err,
        ClientError::TunnelRefused {
            code: RefuseCode::Forbidden,
            ..
        }
    ));
    rec.wait_for("server rejection", |e| {
        e.iter()
            .any(|e| matches!(e, Ev::Rejected { by, .. } if by == "server"))
    })
    .await;

    // Port 0 picks from the allow-list; the session survived the refusal.
    let tunnel = reverse(&client, echo).await;
    assert_eq!(tunnel.public_addr.port(), allowed);
    // The only allowed port is taken now: the next request is refused as unavailable.
    let err = client
        .open_reverse(format!("0:{echo}").parse().unwrap())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::TunnelRefused {
                code: RefuseCode::Unavailable,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&format!(
        "no free port left in the allowed ports ({allowed})"
    )));
    assert_eq!(echo_check(tunnel.public_addr, 1000, 2).await, 1000);
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_closes_the_visitor_and_keeps_the_tunnel() {
    let rec = Recorder::new();
    let server = TestServer::start(chain(&rec), |_| {}).await;
    // A target port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = dead.local_addr().unwrap();
    drop(dead);
    let client = connect(server.addr, "down").await;
    let tunnel = reverse(&client, target).await;

    // The request goes out at once, behind the stream header, before the
    // client has tried the target: the refusal must still end it cleanly.
    let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
    visitor
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(PATIENCE, visitor.read(&mut [0u8; 64]))
        .await
        .expect("visitor closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "visitor sees EOF");
    let events = rec
        .wait_for("stream close", |e| {
            e.iter().any(|e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    assert!(events
        .iter()
        .any(|e| matches!(e, Ev::StreamClose(_, r, _) if r == "target_unreachable")));
    let errors = rec.errors();
    assert!(
        errors
            .iter()
            .any(|m| m.starts_with("stream: client could not reach target")
                && m.contains(&format!("connect to {target} failed"))),
        "{errors:?}"
    );
    assert_eq!(
        errors.iter().filter(|m| m.starts_with("stream:")).count(),
        1,
        "one refusal, reported once: {errors:?}"
    );

    // Bring the target up on the same port: the same tunnel now works.
    let up = TcpListener::bind(target).await.expect("rebind target port");
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    assert_eq!(echo_check(tunnel.public_addr, 4096, 9).await, 4096);
    client.shutdown().await.unwrap();
    disconnected(&rec).await;
    server.stop().await;
}
