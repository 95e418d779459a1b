//! The server program run in-process (`reitunnel_server::app`), as the
//! binary runs it, with its signals sent by hand: settings from a config
//! file, a reload that changes the token for new logins while a logged-in
//! client keeps working, a clear error for a config that cannot start, and
//! a clean exit on the stop signal.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::echo_through;
use reitunnel_client::{Client, ClientConfig, ClientError};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_program::Signals;
use reitunnel_server::app::{App, Args};
use reitunnel_testkit::echo_service;
use reitunnel_testkit::within;

const PATIENCE: Duration = Duration::from_secs(60);

fn config(token: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\ntoken = \"{token}\"\n")
}

async fn login(server: SocketAddr, token: &str) -> Result<Client, ClientError> {
    let cfg = ClientConfig::new(server.to_string(), "app-test", Secret::new(token));
    Client::connect(cfg, HookChain::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_token_for_new_logins_and_a_stop_ends_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, config("first")).unwrap();
    let args = Args::parse_from(["reitunnel-server", "--config", path.to_str().unwrap()]);
    let app = App::bind(args).await.unwrap();
    let addr = app.local_addr();
    let (signals, send) = Signals::by_hand();
    let running = tokio::spawn(app.run(signals));

    let early = login(addr, "first").await.unwrap();
    let tunnel = early
        .open_reverse(format!("0:{}", echo_service().await).parse().unwrap())
        .await
        .unwrap();
    echo_through(tunnel.public_addr, 64 << 10, 1).await.unwrap();

    std::fs::write(&path, config("second")).unwrap();
    send.reload();
    // The reload runs in the app's task: the new token works once it has.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let late = loop {
        match login(addr, "second").await {
            Ok(client) => break client,
            Err(ClientError::LoginRefused { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("the reloaded token never worked: {e}"),
        }
    };
    let refused = login(addr, "first")
        .await
        .err()
        .expect("old token still accepted");
    assert!(
        matches!(refused, ClientError::LoginRefused { .. }),
        "{refused}"
    );
    // Logged in before the reload: keeps its session and its tunnel.
    echo_through(tunnel.public_addr, 64 << 10, 2).await.unwrap();

    send.stop();
    within(PATIENCE, "run after the stop", running)
        .await
        .unwrap()
        .unwrap();
    early.ended().await;
    late.ended().await;
}

/// An `http_auth` service that lets everyone in when it cannot be reached
/// is no login check on its own: such a file does not start (or reload),
/// naming the key; beside a token it is fine.
#[tokio::test]
async fn an_http_auth_that_fails_open_is_not_the_only_login_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let service = "[[hooks]]\nkind = \"http_auth\"\nurl = \"http://127.0.0.1:9/auth/s3cret\"\non_failure = \"allow\"\n";
    let config = |top: &str| format!("listen = \"127.0.0.1:0\"\n{top}\n{service}");
    let bind = |path: &std::path::Path| {
        let args = Args::parse_from(["reitunnel-server", "--config", path.to_str().unwrap()]);
        App::bind(args)
    };
    std::fs::write(&path, config("")).unwrap();
    let error = format!("{:#}", bind(&path).await.err().expect("started anyway"));
    assert!(
        error.contains(
            "http_auth http://127.0.0.1:9 has on_failure = \"allow\" and is the only login check"
        ),
        "{error}"
    );
    assert!(
        !error.contains("s3cret"),
        "the URL's path is not shown: {error}"
    );
    std::fs::write(&path, config("token = \"t\"")).unwrap();
    let app = bind(&path).await.expect("with a token beside it");
    drop(app);
}

#[tokio::test]
async fn settings_that_cannot_start_are_named() {
    let cases: [(&[&str], &str); 4] = [
        (&["--listen", "127.0.0.1:0"], "a token is required"),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--token",
                "t",
                "--tls-cert",
                "missing.pem",
                "--tls-key",
                "key.pem",
            ],
            "certificate file missing.pem: I/O error",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--token",
                "t",
                "--client-ca",
                "ca.pem",
            ],
            "client certificates (client_ca) need TLS",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--token",
                "t",
                "--admin",
                "0.0.0.0:0",
            ],
            "the admin endpoint 0.0.0.0:0 is not on a loopback address: set admin_token",
        ),
    ];
    for (flags, expected) in cases {
        let args =
            Args::parse_from(std::iter::once("reitunnel-server").chain(flags.iter().copied()));
        let error = App::bind(args).await.err().expect("started anyway");
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{flags:?}: {message}");
        // Said once, not repeated by the error's causes.
        assert_eq!(message.matches(expected).count(), 1, "{message}");
    }
}
