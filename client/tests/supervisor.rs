//! The library's `Supervisor`, in-process: it opens the tunnels asked
//! for, applies a reloaded list to the running session (closing what is
//! gone, opening what is new, keeping the rest), logs in again after the
//! server went away with each tunnel on the port it had, and returns on the
//! stop signal.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client_config, echo_check, TestServer, PATIENCE};
use reitunnel_client::{Kind, RemoteSpec, Report, Supervised, Supervisor};
use reitunnel_hooks::HookChain;
use reitunnel_program::Signals;
use reitunnel_testkit::echo_service;
use reitunnel_testkit::within;
use tokio::sync::mpsc;

/// What a report said, owned, to send out of the callback.
#[derive(Debug, PartialEq)]
enum Seen {
    Ready(Kind, SocketAddr, String),
    Closed(Kind, SocketAddr, String),
    Failed(String),
    Reconnecting,
}

fn seen(report: Report) -> Seen {
    match report {
        Report::Ready { kind, ready, .. } => {
            Seen::Ready(kind, ready.public_addr, ready.target.clone())
        }
        Report::Closed { kind, ready, .. } => {
            Seen::Closed(kind, ready.public_addr, ready.target.clone())
        }
        Report::Failed { error, .. } => Seen::Failed(error.to_string()),
        Report::Reconnecting { .. } => Seen::Reconnecting,
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within(PATIENCE, "the next report", seen.recv())
        .await
        .expect("supervisor gone")
}

fn remote(target: SocketAddr) -> RemoteSpec {
    format!("0:{target}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_tunnels_open_over_reloads_and_a_server_restart() {
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let (first, second) = (echo_service().await, echo_service().await);
    let settings = Supervised {
        client: client_config(server.addr, "supervised"),
        remote: vec![remote(first)],
        local: Vec::new(),
        drain: Duration::from_secs(5),
        reconnect_max: Duration::from_millis(200),
    };
    // What the next reload reads, as a config file would be.
    let next_settings = Arc::new(Mutex::new(settings.clone()));
    let reload = {
        let next_settings = next_settings.clone();
        move || Ok(next_settings.lock().unwrap().clone())
    };
    let (signals, send) = Signals::by_hand();
    let (tx, mut reports) = mpsc::unbounded_channel();
    let running = tokio::spawn(Supervisor::new(settings.clone(), HookChain::default()).run(
        signals,
        reload,
        move |r| {
            let _ = tx.send(seen(r));
        },
    ));

    let Seen::Ready(Kind::Reverse, public, target) = next(&mut reports).await else {
        panic!("first report is not a ready tunnel");
    };
    assert_eq!(target, first.to_string());
    assert_eq!(echo_check(public, 256 << 10, 1).await, 256 << 10);

    // A reload that keeps the first tunnel and adds a second.
    next_settings.lock().unwrap().remote.push(remote(second));
    send.reload();
    let Seen::Ready(Kind::Reverse, public2, target2) = next(&mut reports).await else {
        panic!("the added tunnel did not open");
    };
    assert_eq!(target2, second.to_string());
    assert_eq!(echo_check(public2, 64 << 10, 2).await, 64 << 10);
    assert_eq!(echo_check(public, 64 << 10, 3).await, 64 << 10);

    // A reload that drops the first: it closes, the second is untouched.
    next_settings.lock().unwrap().remote.remove(0);
    send.reload();
    assert_eq!(
        next(&mut reports).await,
        Seen::Closed(Kind::Reverse, public, first.to_string())
    );

    // The server goes away and comes back on the same address: the
    // supervisor logs in again and reopens the tunnel on its port.
    let addr = server.addr;
    server.stop().await;
    assert_eq!(next(&mut reports).await, Seen::Reconnecting);
    let server = TestServer::start(HookChain::default(), |cfg| cfg.listen = addr).await;
    loop {
        match next(&mut reports).await {
            Seen::Reconnecting => continue,
            ready => {
                assert_eq!(
                    ready,
                    Seen::Ready(Kind::Reverse, public2, second.to_string())
                );
                break;
            }
        }
    }
    assert_eq!(echo_check(public2, 64 << 10, 4).await, 64 << 10);

    send.stop();
    within(PATIENCE, "run after the stop", running)
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_first_login_that_fails_is_final() {
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let mut client = client_config(server.addr, "supervised");
    client.token = reitunnel_hooks::builtin::Secret::new("wrong");
    let settings = Supervised {
        client,
        remote: vec![remote(echo_service().await)],
        local: Vec::new(),
        drain: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(30),
    };
    let (signals, _send) = Signals::by_hand();
    let error = Supervisor::new(settings, HookChain::default())
        .run(signals, || Err("no reload".to_owned()), |_| {})
        .await
        .expect_err("a wrong token was retried");
    assert!(error.to_string().contains("refused"), "{error}");
    server.stop().await;
}
