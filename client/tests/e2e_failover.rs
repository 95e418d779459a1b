//! A server list with a dead entry: the client skips it wherever its
//! random start falls, logs in to the live server, and its tunnel carries
//! bytes; the command-line client takes the list from its flag alike, and
//! stops on a malformed entry, naming it.

mod common;

use common::*;
use reitunnel_client::Client;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::echo_service;

/// Logins for each order of the list. The start is random, so in each
/// order the dead server comes first in about half of them.
const LOGINS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_in_the_list_is_skipped() {
    let echo = echo_service().await;
    let live = TestServer::start(HookChain::default(), |_| {}).await;
    let dead = closed_port();
    for list in [
        format!("{dead},{}", live.addr),
        format!("{},{dead}", live.addr),
    ] {
        for round in 0..LOGINS {
            let mut cfg = client_config(live.addr, &format!("skipper-{round}"));
            cfg.server = list.clone();
            let client = Client::connect(cfg, HookChain::default())
                .await
                .unwrap_or_else(|e| panic!("no login through {list}: {e}"));
            let tunnel = reverse(&client, echo).await;
            assert_eq!(
                echo_check(tunnel.public_addr, 64 << 10, round).await,
                64 << 10
            );
            client.shutdown().await.unwrap();
        }
    }
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_takes_a_list() {
    let echo = echo_service().await;
    let live = TestServer::start(HookChain::default(), |_| {}).await;
    let list = format!("{},{}", closed_port(), live.addr);
    let mut child = spawn_client_to(&list, &["-R", &format!("0:{echo}")]);
    let (_, public) = Ready::of(&mut child).next().await;
    assert_eq!(echo_check(public, 1 << 20, 7).await, 1 << 20);
    child.kill().await.unwrap();
    live.stop().await;
}

#[tokio::test]
async fn a_malformed_list_stops_the_command_line_client() {
    for (list, says) in [
        (
            "127.0.0.1:1,,127.0.0.1:2",
            "server list '127.0.0.1:1,,127.0.0.1:2': entry 2 is empty",
        ),
        (
            "127.0.0.1:1,localhost",
            "server 'localhost' has no port (expected host:port)",
        ),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"))
            .args(["--server", list, "-R", "0:127.0.0.1:1"])
            .env("REITUNNEL_TOKEN", TOKEN)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{list}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{list}: {stderr}");
    }
}
