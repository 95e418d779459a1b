//! The PROXY protocol toward a real consumer: nginx from Debian behind a
//! reverse tunnel, listening with `proxy_protocol` and answering with the
//! address it was told. A visitor from 127.0.0.2 (so it cannot be mistaken
//! for the client, on 127.0.0.1) is what nginx reports, through a v1 tunnel
//! opened by the library and a v2 tunnel opened by the command-line client
//! (`--proxy-protocol v2`); without the header nginx refuses the connection.
//!
//! Without nginx the test says so and passes, unless
//! `REITUNNEL_REQUIRE_TOOLS` is set (as CI sets it).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use common::*;
use reitunnel_client::{ProxyProtocol, RemoteSpec};
use reitunnel_hooks::HookChain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Child;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx on a free loopback port, answering every request with what the
/// PROXY header said; ends with the returned child.
async fn nginx(dir: &Path) -> (Child, SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen {addr} proxy_protocol;
    location / {{ return 200 \"visitor=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr\\n\"; }}
  }}
}}
"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = tokio::process::Command::new(NGINX)
        .args([
            "-p",
            &d.to_string(),
            "-c",
            path.to_str().unwrap(),
            "-e",
            "stderr",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    // Up once it accepts (bounded by PATIENCE).
    let up = async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::task::yield_now().await;
        }
    };
    reitunnel_testkit::within(PATIENCE, "nginx to listen", up).await;
    (child, addr)
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
    if !Path::new(NGINX).exists() {
        assert!(
            std::env::var_os("REITUNNEL_REQUIRE_TOOLS").is_none(),
            "REITUNNEL_REQUIRE_TOOLS is set but nginx is not installed (apt-get install nginx-light)"
        );
        eprintln!("skipped: no nginx (apt-get install nginx-light)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, web) = nginx(dir.path()).await;
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
