//! The command-line client on a terminal (a pseudo-terminal made by
//! `tests/tty/in_pty.py`): its status block shows the tunnel connecting,
//! then ready with its public address, the rate moving while a visitor
//! sends, and "reconnecting in N s" once the server is gone; the block is
//! redrawn in place (cursor up, line cleared), not scrolled.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, pseudo_random, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout};

/// The longest the test's visitor keeps sending: the load loop's bound.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(120);

/// Everything the terminal has shown so far.
struct Screen {
    out: ChildStdout,
    seen: String,
}

impl Screen {
    /// Reads until `found` holds for what was shown, and returns its answer.
    async fn until<T>(&mut self, what: &str, found: impl Fn(&str) -> Option<T>) -> T {
        let reading = async {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(answer) = found(&self.seen) {
                    return answer;
                }
                let n = self.out.read(&mut buf).await.unwrap();
                assert!(n > 0, "the terminal closed before {what}:\n{}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        within(PATIENCE, what, reading).await
    }
}

/// The client under a pseudo-terminal; its stdin closing ends it.
fn on_a_terminal(server: SocketAddr, args: &[&str]) -> (Child, Screen) {
    let mut child = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tty/in_pty.py"))
        .arg(env!("CARGO_BIN_EXE_reitunnel-client"))
        .args(["--server", &server.to_string()])
        .args(args)
        .env("REITUNNEL_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the client in a pseudo-terminal");
    let out = child.stdout.take().unwrap();
    (
        child,
        Screen {
            out,
            seen: String::new(),
        },
    )
}

/// The public address on the last `ready` line shown.
fn ready_at(screen: &str) -> Option<SocketAddr> {
    let line = screen
        .rsplit("ready   ")
        .next()
        .filter(|_| screen.contains("ready   "))?;
    line.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_state_address_and_live_rate_in_place() {
    let echo = echo_service().await;
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let spec = format!("0:{echo}");
    let (mut child, mut screen) =
        on_a_terminal(server.addr, &["--reconnect-max", "30", "-R", &spec]);

    screen
        .until("the connecting line", |s| {
            s.contains("connecting").then_some(())
        })
        .await;
    let public = screen.until("the ready line", ready_at).await;
    // A visitor keeps sending until the rate on the screen is above zero.
    let traffic = tokio::spawn(async move {
        let mut visitor = TcpStream::connect(public).await.unwrap();
        let payload = pseudo_random(5, 64 << 10);
        let mut back = vec![0u8; payload.len()];
        let started = tokio::time::Instant::now();
        while started.elapsed() < TRAFFIC_LIMIT {
            visitor.write_all(&payload).await.unwrap();
            visitor.read_exact(&mut back).await.unwrap();
            assert_eq!(back, payload);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let rate = screen
        .until("a rate above zero", |s| {
            let last = s.rsplit(" in ").next()?;
            let shown = last.split("/s").next()?;
            (s.contains(" in ") && !shown.starts_with("0 B")).then(|| shown.to_owned())
        })
        .await;
    traffic.abort();
    // Redrawn in place: the cursor goes back up over the block and each line is cleared.
    assert!(
        screen.seen.contains("\x1b[2A") && screen.seen.contains("\r\x1b[2K"),
        "{:?}",
        screen.seen
    );
    assert!(screen
        .seen
        .contains(&format!("reitunnel-client -> {}", server.addr)));

    server.stop().await;
    screen
        .until("the reconnecting line", |s| {
            s.contains("reconnecting in ").then_some(())
        })
        .await;
    assert!(screen.seen.contains("lost (attempt 1)"), "{}", screen.seen);
    drop(child.stdin.take()); // in_pty.py ends the client
    within(PATIENCE, "the client to end", child.wait())
        .await
        .unwrap();
    println!("rate shown: {rate}/s");
}
