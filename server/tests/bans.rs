//! Bans kept in `ban_file` through a restart of the server program (run
//! in-process twice, as the binary runs it): a kick with a ban made over
//! the admin API still refuses the client's logins after the restart,
//! and a ban already over in the file is dropped when it is read.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use common::RunningApp;
use reitunnel_client::{Client, ClientConfig, ClientError};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_server::app::{App, Args};
use reitunnel_testkit::{http, within};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

async fn login(server: SocketAddr, name: &str) -> Result<Client, ClientError> {
    let cfg = ClientConfig::new(server.to_string(), name, Secret::new("t"));
    Client::connect(cfg, HookChain::default()).await
}

/// Asserts that `name`'s login is refused for a ban.
async fn assert_banned(server: SocketAddr, name: &str) {
    match login(server, name).await {
        Err(ClientError::LoginRefused { message, .. }) => assert!(
            message.contains(&format!("client '{name}' is banned by an operator")),
            "{message}"
        ),
        other => panic!("{name}'s login got {:?}", other.map(|c| c.id())),
    }
}

/// Runs the server program from `config` until `body` is done with its
/// control and admin addresses, then stops it.
async fn serving<F: std::future::Future<Output = ()>>(
    config: &Path,
    body: impl FnOnce(SocketAddr, SocketAddr) -> F,
) {
    let server = RunningApp::start(&["--config", config.to_str().unwrap()]).await;
    body(server.addr, server.admin).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_outlives_a_restart_and_one_already_over_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bans) = (dir.path().join("server.toml"), dir.path().join("bans.json"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"t\"\nadmin_listen = \"127.0.0.1:0\"\nban_file = \"{}\"\n",
            bans.display()
        ),
    )
    .unwrap();
    // Bob's ban ended long ago.
    std::fs::write(
        &bans,
        r#"{"bans":[{"client":"bob","until":"2001-01-01T00:00:00Z"}]}"#,
    )
    .unwrap();

    serving(&config, |addr, admin| async move {
        login(addr, "bob").await.unwrap().shutdown().await.unwrap();
        let alice = login(addr, "alice").await.unwrap();
        let kicked = http(
            admin,
            "POST",
            "/api/v1/clients/alice/kick?ban_secs=3600",
            None,
        )
        .await
        .unwrap();
        assert_eq!(kicked.status, 200, "{}", kicked.body);
        within(PATIENCE, "alice's session to end", alice.ended()).await;
        assert_banned(addr, "alice").await;
    })
    .await;

    // Written whole: alice's ban, not bob's, and no temporary file left.
    let stored: Value = serde_json::from_slice(&std::fs::read(&bans).unwrap()).unwrap();
    let names: Vec<&str> = stored["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["client"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"], "{stored}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restarted, the server still refuses alice and lets bob in.
    serving(&config, |addr, _| async move {
        assert_banned(addr, "alice").await;
        login(addr, "bob").await.unwrap().shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_file_that_cannot_be_read_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bans) = (dir.path().join("server.toml"), dir.path().join("bans.json"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"t\"\nban_file = \"{}\"\n",
            bans.display()
        ),
    )
    .unwrap();
    std::fs::write(&bans, "not json").unwrap();
    let args = Args::parse_from(["reitunnel-server", "--config", config.to_str().unwrap()]);
    let refused = App::bind(args).await.err().expect("a broken ban file");
    let said = format!("{refused:#}");
    assert!(
        said.contains(&format!(
            "the ban file {} is not a list of bans",
            bans.display()
        )),
        "{said}"
    );
}
