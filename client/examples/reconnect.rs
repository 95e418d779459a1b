//! The client library keeping a tunnel up across a server restart: a
//! [`Supervisor`] logs in, opens its tunnel, and when the connection is
//! lost logs in again with backoff and opens the tunnel again; what each
//! tunnel does arrives as a [`Report`] for the program to show.
//!
//! `cargo run -p reitunnel-client --example reconnect` starts a server
//! (the library, in-process) and an echo service, supervises a client with
//! one tunnel, sends a visitor through, restarts the server on the same
//! address, waits for the tunnel to come back, sends another visitor, and
//! stops. `cargo test` runs it.

use std::net::SocketAddr;
use std::time::Duration;

use reitunnel_client::{ClientConfig, Report, Supervised, Supervisor};
use reitunnel_hooks::{HookChain, Secret};
use reitunnel_program::Signals;
use reitunnel_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A server on `addr` until the returned sender is used (or dropped).
async fn server(
    addr: SocketAddr,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = ServerConfig::new(addr, Some(Secret::new("s3cret")));
    config.default_bind_ip = "127.0.0.1".parse().unwrap();
    let server = Server::bind(config, HookChain::default()).await.unwrap();
    let bound = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (bound, stop, running)
}

/// One echo exchange through the tunnel's public address.
async fn visit(public: SocketAddr) {
    let mut visitor = TcpStream::connect(public).await.unwrap();
    visitor.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    visitor.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
}

/// A report as the program shows it, with the public address of a ready tunnel.
type Shown = (Option<SocketAddr>, String);

/// The next tunnel to be ready, printing every report on the way.
async fn next_ready(reports: &mut mpsc::UnboundedReceiver<Shown>) -> SocketAddr {
    loop {
        let (ready, line) = reports.recv().await.expect("the supervisor ended");
        println!("{line}");
        if let Some(public) = ready {
            return public;
        }
    }
}

#[tokio::main]
async fn main() {
    let echo = reitunnel_testkit::echo_service().await;
    let (addr, stop, running) = server("127.0.0.1:0".parse().unwrap()).await;

    let wanted = Supervised {
        client: ClientConfig::new(addr.to_string(), "laptop", Secret::new("s3cret")),
        remote: vec![format!("0:{echo}").parse().unwrap()],
        local: Vec::new(),
        drain: Duration::from_secs(5),
        // Retry at least every 200 ms: the restart below is quick.
        reconnect_max: Duration::from_millis(200),
    };
    let (signals, send) = Signals::by_hand();
    let (tx, mut reports) = mpsc::unbounded_channel();
    let show = move |report: Report| {
        let shown = match &report {
            Report::Ready { kind, ready, .. } => (
                Some(ready.public_addr),
                format!(
                    "{} {} ready: {} -> {}",
                    kind.word(),
                    ready.id.0,
                    ready.public_addr,
                    ready.target
                ),
            ),
            Report::Reconnecting {
                error,
                attempt,
                wait,
            } => (
                None,
                format!("connection lost ({error}); attempt {attempt} in {wait:?}"),
            ),
            other => (None, format!("{other:?}")),
        };
        let _ = tx.send(shown);
    };
    let supervisor = Supervisor::new(wanted, HookChain::default());
    let supervised =
        tokio::spawn(supervisor.run(signals, || Err("no reload here".to_owned()), show));

    let public = next_ready(&mut reports).await;
    visit(public).await;
    println!("a visitor went through {public}");

    // The server restarts on the same address; the client finds it again.
    stop.send(()).unwrap();
    running.await.unwrap();
    let (_, stop, running) = server(addr).await;
    let public = next_ready(&mut reports).await;
    visit(public).await;
    println!("after the restart, a visitor went through {public}");

    send.stop();
    supervised.await.unwrap().unwrap();
    stop.send(()).unwrap();
    running.await.unwrap();
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        super::main();
    }
}
