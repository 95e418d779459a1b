//! A webhook configured in server TOML, delivering real tunnel events to a
//! real receiver that verifies every signature: over HTTP, and over HTTPS
//! with a certificate of a private CA named by the webhook's `ca` key.

mod common;

use std::path::Path;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_server::file_config::FileConfig;
use reitunnel_server::hook_config::add_hooks;
use reitunnel_testkit::echo_service;
use reitunnel_transport::tls::{server_acceptor, ServerTls, TlsAcceptor};
use ring::hmac;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "hook-secret";

/// An HTTP/1.1 receiver on 127.0.0.1:0 (HTTPS with `tls`) that checks each
/// request's `X-Reitunnel-Signature` against HMAC-SHA256(secret,
/// "<ts>.<body>") and sends (signature ok, body) for every request.
async fn receiver(
    tls: Option<TlsAcceptor>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<(bool, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => answer(tcp, tx).await,
                    Some(tls) => {
                        if let Ok(s) = tls.accept(tcp).await {
                            answer(s, tx).await
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Reads one request, checks its signature, answers 204.
async fn answer<S>(mut s: S, tx: mpsc::UnboundedSender<(bool, Value)>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            break (head, buf[end + 4..end + 4 + len].to_vec());
        }
    };
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let ts = header("x-reitunnel-timestamp");
    let sig = header("x-reitunnel-signature");
    let tag = (0..sig.len().saturating_sub(7) / 2)
        .map(|i| u8::from_str_radix(&sig[7 + 2 * i..9 + 2 * i], 16).unwrap_or(0))
        .collect::<Vec<u8>>();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let signed = [ts.as_bytes(), b".", &body].concat();
    let ok = sig.starts_with("sha256=") && hmac::verify(&key, &signed, &tag).is_ok();
    let _ = tx.send((ok, serde_json::from_slice(&body).unwrap()));
    let _ = s
        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivers_signed_filtered_events_from_a_real_tunnel() {
    let (hook_addr, received) = receiver(None).await;
    deliver(&format!("url = \"http://{hook_addr}/reitunnel\""), received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_trusts_the_ca_it_is_given() {
    let pki = pki::Pki::new("webhook receivers' CA");
    let leaf = pki.leaf("receiver", &["localhost"], false);
    let tls = ServerTls {
        cert: leaf.cert,
        key: leaf.key,
        client_ca: None,
    };
    let (acceptor, _) = server_acceptor(&tls).unwrap();
    let (hook_addr, received) = receiver(Some(acceptor)).await;
    let url = format!("https://localhost:{}/reitunnel", hook_addr.port());
    let keys = format!("url = \"{url}\"\nca = \"{}\"", pki.ca_file.display());
    deliver(&keys, received).await;
}

/// Runs a tunnel through a server whose webhook has `keys` (its URL and
/// more) and checks the signed, filtered events `received` gets.
async fn deliver(keys: &str, mut received: mpsc::UnboundedReceiver<(bool, Value)>) {
    std::env::set_var("REITUNNEL_TEST_WEBHOOK_SECRET", SECRET);
    let toml = format!(
        r#"
[[hooks]]
kind = "quota"
bytes = "16KiB"
[[hooks]]
kind = "webhook"
{keys}
secret = "${{REITUNNEL_TEST_WEBHOOK_SECRET}}"
events = ["client.connected", "tunnel.closed", "quota.exceeded"]
timeout_secs = 5
retries = 3
"#
    );
    let cfg = FileConfig::parse(&toml, Path::new("hook.toml")).unwrap();
    let (builder, _bg) = add_hooks(
        HookChain::builder(),
        &cfg.hooks,
        "edge-7",
        Path::new("hook.toml"),
    )
    .unwrap();
    let server = TestServer::start(builder.build(), |_| {}).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "alice").await;
    let tunnel = reverse(&client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 4000, 2).await, 4000);
    // Past the 16 KiB quota: the next visitor is cut off and quota.exceeded goes out.
    let mut v = tokio::net::TcpStream::connect(tunnel.public_addr)
        .await
        .unwrap();
    let _ = v.write_all(&[0u8; 64 * 1024]).await;
    let _ = v.read_to_end(&mut Vec::new()).await;
    client.shutdown().await.unwrap();
    server.stop().await;

    let mut names = Vec::new();
    while names.len() < 3 {
        let (ok, event) = tokio::time::timeout(PATIENCE, received.recv())
            .await
            .expect("event delivered")
            .unwrap();
        assert!(ok, "signature verifies: {event}");
        assert_eq!(event["server"], "edge-7");
        assert_eq!(event["client"], "alice");
        names.push(event["event"].as_str().unwrap().to_owned());
        if event["event"] == "tunnel.closed" {
            assert_eq!(event["tunnel_id"], tunnel.id.0);
            assert!(event["bytes_in"].as_u64().unwrap() >= 4000);
        }
    }
    assert_eq!(
        names,
        ["client.connected", "quota.exceeded", "tunnel.closed"]
    );
    assert!(received.try_recv().is_err(), "filtered events never arrive");
}
