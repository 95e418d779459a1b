//! The PROXY protocol toward a real consumer: nginx from Debian behind a
//! reverse tunnel, listening with `proxy_protocol` and answering with the
//! address it was told. A visitor from 127.0.0.2 (so it cannot be mistaken
//! for the client, on 127.0.0.1) is what nginx reports, through a v1 tunnel
//! opened by the library and a v2 tunnel opened by the command-line client
//! (`--proxy-protocol v2`); without the header nginx refuses the connection.
//!
//!
//! The inbound side: HAProxy from Debian in front of the server's control
//! port and a public port, connecting from 127.0.0.5 with `send-proxy-v2`,
//! and a server trusting only 127.0.0.5 (`proxy_protocol_from`). Hooks see
//! the real client and visitor; nginx, behind the tunnel, still sees the
//! visitor; whoever skips the balancer is refused with the reason.
//!
//! Without nginx or HAProxy the tests say so and pass, unless
//! `REITUNNEL_REQUIRE_TOOLS` is set (as CI sets it).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use reitunnel_client::{Client, ProxyProtocol, RemoteSpec};
use reitunnel_hooks::{ClientInfo, Gate, Hook, HookChain, Login, StreamInfo};
use reitunnel_testkit::{
    free_port, haproxy_sending_proxy_v2, installed, nginx_showing_proxy_protocol, HAPROXY, NGINX,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Runs a blocking start-up (a tool's) without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One request through `public` from 127.0.0.2; returns the visitor's own
/// port and nginx's answer body (empty if nginx closed the connection).
async fn visit_from_127_0_0_2(public: SocketAddr) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut visitor = socket.connect(public).await.unwrap();
    let port = visitor.local_addr().unwrap().port();
    visitor
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = visitor.read_to_string(&mut answer).await;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    (port, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sees_the_visitors_address_through_v1_and_v2() {
    if !installed(NGINX, "nginx-light") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, web) = blocking(|| nginx_showing_proxy_protocol(dir.path()));
    let server = TestServer::start(HookChain::default(), |_| {}).await;

    // v1, through the library.
    let client = connect(server.addr, "web").await;
    let mut spec: RemoteSpec = format!("0:{web}").parse().unwrap();
    spec.proxy_protocol = Some(ProxyProtocol::V1);
    let v1 = client.open_reverse(spec).await.unwrap();
    let (port, body) = visit_from_127_0_0_2(v1.public_addr).await;
    assert_eq!(
        body,
        format!("visitor=127.0.0.2:{port} server={}", v1.public_addr.ip())
    );

    // Without a header, nginx refuses: the header is what it reads.
    let plain = reverse(&client, web).await;
    let (_, body) = visit_from_127_0_0_2(plain.public_addr).await;
    assert_eq!(body, "", "nginx answered without a PROXY header");

    // v2, through the command-line client's flag.
    let mut child = spawn_client(
        server.addr,
        &["--proxy-protocol", "v2", "-R", &format!("0:{web}")],
    );
    let (_, public) = Ready::of(&mut child).next().await;
    let (port, body) = visit_from_127_0_0_2(public).await;
    assert_eq!(
        body,
        format!("visitor=127.0.0.2:{port} server={}", public.ip())
    );

    child.kill().await.unwrap();
    client.shutdown().await.unwrap();
    server.stop().await;
}

/// The peers hooks are shown: `client IP` at each login, `visitor IP:PORT`
/// at each stream.
#[derive(Default)]
struct Peers(Mutex<Vec<String>>);

impl Peers {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Hook for Peers {
    fn name(&self) -> &str {
        "peers"
    }

    fn on_client_connect(&self, client: &ClientInfo, _login: &Login<'_>) -> Gate {
        let seen = format!("client {}", client.peer.ip());
        self.0.lock().unwrap().push(seen);
        Gate::Allow
    }

    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        let seen = format!("visitor {}", stream.peer);
        self.0.lock().unwrap().push(seen);
        Gate::Allow
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_hooks_see_the_real_client_and_visitor() {
    if !installed(NGINX, "nginx-light") || !installed(HAPROXY, "haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, web) = blocking(|| nginx_showing_proxy_protocol(dir.path()));
    let peers = Arc::new(Peers::default());
    let rec = Recorder::new();
    let chain = HookChain::builder()
        .shared(peers.clone())
        .shared(rec.clone())
        .build();
    let server = TestServer::start(chain, |cfg| {
        cfg.proxy_protocol_from = vec!["127.0.0.5/32".parse().unwrap()];
    })
    .await;
    let public = free_port();
    let (control_front, public_front) = (free_port(), free_port());
    let routes = [(control_front, server.addr), (public_front, public)];
    let balancer = "127.0.0.5".parse().unwrap();
    let _haproxy = blocking(|| haproxy_sending_proxy_v2(dir.path(), &routes, balancer));

    // The client logs in through HAProxy: hooks see 127.0.0.1, not 127.0.0.5.
    let client = Client::connect(client_config(control_front, "web"), HookChain::default())
        .await
        .expect("a client through the balancer logs in");
    let mut spec: RemoteSpec = format!("{}:{web}", public.port()).parse().unwrap();
    spec.proxy_protocol = Some(ProxyProtocol::V1);
    client.open_reverse(spec).await.unwrap();
    assert!(
        peers.seen().contains(&"client 127.0.0.1".to_owned()),
        "{:?}",
        peers.seen()
    );

    // A visitor from 127.0.0.2 through HAProxy: the server's hooks and nginx
    // behind the tunnel both see 127.0.0.2 and its port.
    let (port, body) = visit_from_127_0_0_2(public_front).await;
    assert_eq!(
        body,
        format!("visitor=127.0.0.2:{port} server={}", public.ip())
    );
    assert!(
        peers.seen().contains(&format!("visitor 127.0.0.2:{port}")),
        "{:?}",
        peers.seen()
    );

    // Skipping the balancer is refused, with the reason where each can see it.
    let (_, body) = visit_from_127_0_0_2(public).await;
    assert_eq!(body, "", "a visitor skipping the balancer was served");
    rec.wait_for("the direct visitor's refusal", |events| {
        events.iter().any(|e| {
            matches!(e, Ev::Rejected { by, reason } if by == "server"
                && reason.contains("only the balancers it lists may connect, and 127.0.0.2 is not in it"))
        })
    })
    .await;
    let direct = Client::connect(client_config(server.addr, "sneaky"), HookChain::default())
        .await
        .err()
        .expect("a client skipping the balancer is refused")
        .to_string();
    assert!(
        direct.contains("proxy_protocol_from is set, so only the balancers it lists may connect, and 127.0.0.1 is not in it"),
        "{direct}"
    );
    assert_eq!(
        peers
            .seen()
            .iter()
            .filter(|p| p.starts_with("client"))
            .count(),
        1,
        "{:?}",
        peers.seen()
    );

    client.shutdown().await.unwrap();
    server.stop().await;
}
