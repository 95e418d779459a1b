//! The admin status page in a real browser: headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs) loads it from the server program
//! while a transfer runs; the page's figures move, a refused login shows
//! as a rejection, the admin token given in the page's URL leaves the
//! address bar and travels only in headers, a screenshot is kept in
//! `target/status-page.png`, and a click on the Kick button kicks the
//! client, which the client itself hears. The browser is driven by
//! `tests/browser/status_page.py` over the DevTools protocol.
//!
//! Without Chromium the test says so and passes, unless
//! `REITUNNEL_REQUIRE_TOOLS` is set (as CI sets it).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::RunningApp;
use reitunnel_client::{Client, ClientConfig, ClientError};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{chromium, echo_service, pseudo_random, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(120);

/// The longest the background transfer runs: the load loop's bound.
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_live_transfer_and_its_kick_button_kicks() {
    let Some(chromium) = chromium() else {
        return;
    };
    let server = RunningApp::start(&[
        "--listen",
        "127.0.0.1:0",
        "--bind-ip",
        "127.0.0.1",
        "--token",
        "t",
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "s3cret",
    ])
    .await;
    let (addr, admin) = (server.addr, server.admin);

    let cfg = ClientConfig::new(addr.to_string(), "alice", Secret::new("t"));
    let alice = Client::connect(cfg, HookChain::default()).await.unwrap();
    let tunnel = alice
        .open_reverse(format!("0:{}", echo_service().await).parse().unwrap())
        .await
        .unwrap();
    // Traffic while the browser looks; it ends with the kick (or its bound).
    let public = tunnel.public_addr;
    let transfer = tokio::spawn(async move {
        let payload = pseudo_random(1, 64 << 10);
        let mut back = vec![0u8; payload.len()];
        let mut visitor = TcpStream::connect(public).await?;
        let started = tokio::time::Instant::now();
        while started.elapsed() < TRANSFER_LIMIT {
            visitor.write_all(&payload).await?;
            visitor.read_exact(&mut back).await?;
            assert_eq!(back, payload, "the echo through the tunnel differs");
            tokio::time::sleep(Duration::from_millis(20)).await; // a steady rate, not a flood
        }
        Ok::<_, std::io::Error>(())
    });

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .join("status-page.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/status_page.py");
    let mut drive = tokio::process::Command::new("python3")
        .arg(script)
        .arg(chromium)
        // A link with the token, as an operator might be sent one.
        .arg(format!("http://{admin}/?token=s3cret"))
        .arg(&screenshot)
        .arg("alice")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut steps = BufReader::new(drive.stdout.take().unwrap()).lines();
    let mut said = String::new();
    let steps_done = async {
        while let Some(line) = steps.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if line.starts_with("ok 1") {
                // Once the page is up: a login it must show as rejected.
                let wrong = ClientConfig::new(addr.to_string(), "mallory", Secret::new("wrong"));
                let refused = Client::connect(wrong, HookChain::default()).await;
                assert!(matches!(refused, Err(ClientError::LoginRefused { .. })));
            }
        }
        drive.wait().await.unwrap()
    };
    let status = within(PATIENCE, "the browser's steps", steps_done).await;
    assert!(status.success(), "the browser test failed:\n{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{said}"
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "an empty screenshot"
    );

    // The kick reached the client, which hears who kicked it.
    within(PATIENCE, "alice's session to end", alice.ended()).await;
    match alice.shutdown().await {
        Err(ClientError::ServerGoodbye { message, .. }) => {
            assert!(
                message.starts_with("kicked by admin API client 127.0.0.1:"),
                "{message}"
            )
        }
        other => panic!("alice was told {other:?}"),
    }
    transfer.abort();
    server.stop().await;
}
