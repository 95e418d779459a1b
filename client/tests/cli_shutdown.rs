//! Graceful shutdown of the `reitunnel-client` binary: SIGTERM refuses new
//! visitors and closes its `-L` listener, lets a transfer under way finish,
//! then says goodbye and exits 0; the server's hooks see the stream finish
//! before the tunnel and the client close.

mod common;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_server::ForwardRule;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_streams_then_says_goodbye() {
    let echo = echo_service().await;
    let rec = Recorder::new();
    let rule: ForwardRule = format!("127.0.0.1:{}", echo.port()).parse().unwrap();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.allow_forward = vec![rule];
    })
    .await;
    let (remote, local) = (format!("0:{echo}"), format!("0:{echo}"));
    let args = ["--name", "drainer", "-R", &remote, "-L", &local];
    let mut child = spawn_client(server.addr, &args);
    let mut ready = Ready::of(&mut child);
    let (_, public) = ready.next().await;
    let (_, local) = ready.next().await;

    // A transfer under way: the first MiB is through before the signal.
    let mut pattern = Pattern::new(3);
    let mut payload = vec![0u8; 32 * MIB];
    pattern.fill(&mut payload);
    let visitor = TcpStream::connect(public).await.unwrap();
    let (mut r, mut w) = visitor.into_split();
    w.write_all(&payload[..MIB]).await.unwrap();
    let mut first = vec![0u8; MIB];
    r.read_exact(&mut first).await.unwrap();
    assert!(first == payload[..MIB]);

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(kill.unwrap().success());
    // The -L listener closes at once: a new local connection is refused
    // (wait for it: the signal is handled asynchronously).
    let refused = async {
        while TcpStream::connect(local).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("the -L listener closes");

    let rest = payload[MIB..].to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&rest).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    r.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(
        echoed.len(),
        payload.len() - MIB,
        "echoed bytes after the signal"
    );
    assert!(echoed == payload[MIB..], "echo differs after the signal");

    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the client exits after the drain")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let events = rec
        .wait_for("the client's disconnect", |ev| {
            ev.iter().any(|e| matches!(e, Ev::Disconnect(..)))
        })
        .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::StreamClose(_, reason, t) if reason == "finished" && t.bytes_in == (32 * MIB) as u64)),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::Disconnect(_, reason, _) if reason == "finished")),
        "{events:#?}"
    );
    server.stop().await;
    assert_balanced(&rec.events());
}
