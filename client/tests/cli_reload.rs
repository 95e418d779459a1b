//! SIGHUP on the command-line client: the config file's tunnel lists are
//! read again; a tunnel no longer listed closes, a new one opens, and the
//! unchanged one (with a visitor stream open through it) is not touched.
//! A broken file changes nothing and says why.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A client config naming `server` and one `remote` tunnel per target.
fn config(path: &Path, server: SocketAddr, targets: &[SocketAddr]) {
    let remote: Vec<String> = targets.iter().map(|t| format!("\"0:{t}\"")).collect();
    std::fs::write(
        path,
        format!(
            "server = \"{server}\"\ntoken = \"{TOKEN}\"\nname = \"reloader\"\nremote = [{}]\n",
            remote.join(", ")
        ),
    )
    .unwrap();
}

fn hangup(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The next line from `lines` containing `text`, within [`PATIENCE`].
async fn line_with(lines: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.recv().await {
            if line.contains(text) {
                return Some(line);
            }
        }
        None
    });
    found
        .await
        .unwrap_or_else(|_| panic!("no line with {text:?} in time"))
        .unwrap_or_else(|| panic!("the client exited before a line with {text:?}"))
}

/// Writes `chunk` and reads its echo back.
async fn round_trip(stream: &mut TcpStream, chunk: &[u8]) {
    stream.write_all(chunk).await.unwrap();
    let mut back = vec![0u8; chunk.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert!(back == chunk, "the echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_added_and_removed_tunnels_and_leaves_the_rest() {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |_| {}).await;
    let (kept, dropped, added) = (
        echo_service().await,
        echo_service().await,
        echo_service().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    config(&path, server.addr, &[kept, dropped]);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = Ready::of(&mut child);
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = errors_tx.send(line);
        }
    });
    let (first, kept_public) = out.next().await;
    let (second, dropped_public) = out.next().await;
    assert!(first.ends_with(&kept.to_string()), "{first}");
    assert!(second.ends_with(&dropped.to_string()), "{second}");
    let mut visitor = TcpStream::connect(kept_public).await.unwrap();
    round_trip(&mut visitor, &[7u8; 100_000]).await;

    // One tunnel out, one in.
    config(&path, server.addr, &[kept, added]);
    hangup(&child);
    let (closed, at) = out.next().await;
    assert!(
        closed.contains(" closed: ") && closed.ends_with(&dropped.to_string()),
        "{closed}"
    );
    assert_eq!(at, dropped_public);
    let (opened, added_public) = out.next().await;
    assert!(
        opened.contains(" ready: ") && opened.ends_with(&added.to_string()),
        "{opened}"
    );
    line_with(&mut errors, "configuration reloaded").await;

    // The unchanged tunnel and its open stream were not touched.
    round_trip(&mut visitor, &[8u8; 100_000]).await;
    assert_eq!(echo_check(added_public, 1 << 20, 1).await, 1 << 20);
    let events = rec
        .wait_for("the removed tunnel to close on the server", |evs| {
            evs.iter().any(|e| matches!(e, Ev::TunnelClose(..)))
        })
        .await;
    assert!(
        TcpStream::connect(dropped_public).await.is_err(),
        "the removed tunnel's port is closed"
    );
    let logins = events
        .iter()
        .filter(|e| matches!(e, Ev::Connect(..)))
        .count();
    let tunnels_closed = events
        .iter()
        .filter(|e| matches!(e, Ev::TunnelClose(..)))
        .count();
    assert_eq!(logins, 1, "no new login: {events:#?}");
    assert_eq!(
        tunnels_closed, 1,
        "only the removed tunnel closed: {events:#?}"
    );

    // A broken file: refused with the reason, everything stays.
    std::fs::write(&path, "server = \"x\"\nremote = [\"80:nowhere\"]\n").unwrap();
    hangup(&child);
    let refused = line_with(&mut errors, "reload refused").await;
    assert!(
        refused.contains("the current tunnels stay")
            && refused.contains("client.toml")
            && refused.contains("line 2"),
        "{refused}"
    );
    // toml's message goes on below, quoting the line and the problem.
    line_with(&mut errors, "invalid tunnel spec '80:nowhere'").await;
    round_trip(&mut visitor, &[9u8; 100_000]).await;
    assert_eq!(echo_check(added_public, 1 << 20, 2).await, 1 << 20);
    assert_eq!(
        rec.events()
            .iter()
            .filter(|e| matches!(e, Ev::TunnelClose(..)))
            .count(),
        1
    );

    // The added tunnel moves to another service on the same port: the old
    // one closes, the new one gets the port as soon as the server lets go.
    let moved = echo_service().await;
    let remote = format!(
        "server = \"{}\"\ntoken = \"{TOKEN}\"\nname = \"reloader\"\nremote = [\"0:{kept}\", \"{}:{moved}\"]\n",
        server.addr,
        added_public.port()
    );
    std::fs::write(&path, remote).unwrap();
    hangup(&child);
    let (closed, at) = out.next().await;
    assert!(
        closed.contains(" closed: ") && at == added_public,
        "{closed}"
    );
    let (opened, again) = out.next().await;
    assert!(
        opened.contains(" ready: ") && opened.ends_with(&moved.to_string()),
        "{opened}"
    );
    assert_eq!(again, added_public, "the same port, another target");
    assert_eq!(echo_check(again, 1 << 20, 3).await, 1 << 20);
    round_trip(&mut visitor, &[10u8; 100_000]).await;

    drop(visitor);
    child.kill().await.unwrap();
    server.stop().await;
}
