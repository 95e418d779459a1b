//! The policy hook from server TOML: per-client tokens, per-client ports,
//! tunnel and stream limits, visitor networks; each refusal says which rule.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use reitunnel_client::{Client, ClientConfig, ClientError, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_server::file_config::FileConfig;
use reitunnel_server::hook_config::add_hooks;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(server: SocketAddr, name: &str, token: &str) -> ClientConfig {
    ClientConfig::new(server.to_string(), name, Secret::new(token))
}

/// A visitor whose echo round trip proves its stream is open end to end.
async fn open_visitor(addr: SocketAddr, from: &str) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut v = socket.connect(addr).await.unwrap();
    v.write_all(b"hi").await.ok()?;
    let mut buf = [0u8; 2];
    match v.read_exact(&mut buf).await {
        Ok(_) if &buf == b"hi" => Some(v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rules_refuse_with_the_rule_and_let_the_rest_through() {
    let port = free_port().await;
    std::env::set_var("REITUNNEL_TEST_ALICE_TOKEN", "alice-secret");
    let toml = format!(
        r#"
[[hooks]]
kind = "policy"
visitors_deny = ["127.0.0.2/32"]
[hooks.clients.alice]
token = "${{REITUNNEL_TEST_ALICE_TOKEN}}"
ports = "{port}"
max_tunnels = 1
max_streams = 2
[hooks.clients.bob]
token = "bob-secret"
"#
    );
    let cfg = FileConfig::parse(&toml, Path::new("policy.toml")).unwrap();
    let rec = Recorder::new();
    let (builder, _bg) = add_hooks(
        HookChain::builder(),
        &cfg.hooks,
        "edge",
        Path::new("policy.toml"),
    )
    .unwrap();
    let server = TestServer::start(builder.shared(rec.clone()).build(), |c| c.token = None).await;
    let echo = echo_service().await;

    // Tokens are per client.
    let refused = |r: Result<Client, ClientError>| r.err().expect("refused").to_string();
    assert_eq!(
        refused(
            Client::connect(
                config(server.addr, "alice", "bob-secret"),
                HookChain::default()
            )
            .await
        ),
        "server refused login: client 'alice' is unknown, or its token or certificate is not \
         the one configured"
    );
    // An unknown name is told the same, so names cannot be enumerated.
    assert_eq!(
        refused(Client::connect(config(server.addr, "carol", "x"), HookChain::default()).await),
        "server refused login: client 'carol' is unknown, or its token or certificate is not \
         the one configured"
    );
    let alice = Client::connect(
        config(server.addr, "alice", "alice-secret"),
        HookChain::default(),
    )
    .await
    .unwrap();
    let bob = Client::connect(
        config(server.addr, "bob", "bob-secret"),
        HookChain::default(),
    )
    .await
    .unwrap();

    // Ports are per client; so is the tunnel limit.
    // Another free port (not port ± 1, which another test may hold: the
    // server binds before the policy is asked, and a busy port fails first).
    let mut other = free_port().await;
    for _ in 0..100 {
        if other != port {
            break;
        }
        other = free_port().await;
    }
    assert_ne!(other, port);
    let spec = |p: u16| -> RemoteSpec { format!("{p}:{echo}").parse().unwrap() };
    let err = alice
        .open_reverse(spec(other))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "client 'alice' may not open port {other} (allowed: {port})"
        )),
        "{err}"
    );
    let tunnel = alice.open_reverse(spec(port)).await.unwrap();
    let err = alice.open_reverse(spec(0)).await.unwrap_err().to_string();
    assert!(
        err.ends_with("client 'alice' already has its maximum of 1 tunnels"),
        "{err}"
    );
    reverse(&bob, echo).await; // bob has no such limits

    // Two streams at once, not three; a closed one makes room.
    let first = open_visitor(tunnel.public_addr, "127.0.0.1")
        .await
        .expect("first stream");
    let _second = open_visitor(tunnel.public_addr, "127.0.0.1")
        .await
        .expect("second stream");
    assert!(
        open_visitor(tunnel.public_addr, "127.0.0.1")
            .await
            .is_none(),
        "third is refused"
    );
    rec.wait_for("the stream limit", |e| {
        e.iter().any(|e| matches!(e, Ev::Rejected { reason, .. } if reason == "client 'alice' already carries its maximum of 2 streams"))
    })
    .await;
    drop(first);
    rec.wait_for("the first stream's close", |e| {
        e.iter().any(|e| matches!(e, Ev::StreamClose(..)))
    })
    .await;
    let again = open_visitor(tunnel.public_addr, "127.0.0.1").await;
    assert!(again.is_some(), "room again after a close");

    // Visitors from a denied network are refused, whoever the client.
    drop(again);
    rec.wait_for("two closes", |e| {
        e.iter()
            .filter(|e| matches!(e, Ev::StreamClose(..)))
            .count()
            == 2
    })
    .await;
    assert!(open_visitor(tunnel.public_addr, "127.0.0.2")
        .await
        .is_none());
    rec.wait_for("the network refusal", |e| {
        e.iter().any(|e| matches!(e, Ev::Rejected { reason, .. } if reason == "visitor 127.0.0.2 is in the denied network 127.0.0.2/32"))
    })
    .await;

    drop(_second);
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}
