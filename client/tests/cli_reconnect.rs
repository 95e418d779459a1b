//! The command-line client after losing its server: it logs in again with
//! backoff, re-opens every tunnel on the same public port, and traffic
//! flows; the restarted server is a new server on the same address.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::*;
use reitunnel_hooks::HookChain;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

async fn ready(lines: &mut Lines<BufReader<ChildStdout>>) -> SocketAddr {
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a ready line in time")
        .unwrap()
        .expect("ready line");
    line.split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_the_client_back_on_the_same_port() {
    let echo = echo_service().await;
    let first = TestServer::start(HookChain::default(), |_| {}).await;
    let control = first.addr;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"))
        .args(["--server", &control.to_string(), "--reconnect-max", "1"])
        .args(["-R", &format!("0:{echo}")])
        .env("REITUNNEL_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let public = ready(&mut lines).await;
    assert_eq!(echo_check(public, 100_000, 1).await, 100_000);

    first.stop().await;
    let rec = Recorder::new();
    let second = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.listen = control;
    })
    .await;
    assert_eq!(ready(&mut lines).await, public, "the same public port");
    assert_eq!(echo_check(public, 1 << 20, 2).await, 1 << 20);
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, Ev::Connect(_, name) if name == "reitunnel-client")),
        "logged in again"
    );
    child.kill().await.unwrap();
    second.stop().await;
}
