//! `reitunnel-client --config`: a file with the server, token and tunnels
//! runs like the flags would, flags win over it, and a mistake stops the
//! client with the line that is wrong.

mod common;

use std::process::Stdio;

use common::*;
use reitunnel_testkit::echo_service;
use tokio::process::Command;

fn client() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reitunnel-client"));
    cmd.env_remove("REITUNNEL_TOKEN").kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_opens_its_tunnels_and_flags_win() {
    let (server, rec) = TestServer::with_hook(reitunnel_hooks::builtin::Counters::new()).await;
    let echo = echo_service().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    std::fs::write(
        &path,
        format!(
            "server = \"{}\"\ntoken = \"${{REITUNNEL_CLI_CONFIG_TOKEN}}\"\nname = \"from-file\"\nremote = [\"0:{echo}\"]\n",
            server.addr
        ),
    )
    .unwrap();
    let mut child = client()
        .arg("--config")
        .arg(&path)
        .args(["--name", "from-flag"])
        .env("REITUNNEL_CLI_CONFIG_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, public) = Ready::of(&mut child).next().await;
    assert_eq!(echo_check(public, 1 << 20, 9).await, 1 << 20);
    rec.wait_for("login under the flag's name", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Connect(_, n) if n == "from-flag"))
    })
    .await;
    child.kill().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_bad_config_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    std::fs::write(
        &path,
        "server = \"127.0.0.1:1\"\ntoken = \"t\"\nremote = [\"0:127.0.0.1:1\"]\nheartbeat = 5\n",
    )
    .unwrap();
    let out = client().arg("--config").arg(&path).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("unknown field `heartbeat`"),
        "{stderr}"
    );
}
