//! The command-line client after losing its server: it logs in again with
//! backoff, re-opens every tunnel on the same public port, and traffic
//! flows; the restarted server is a new server on the same address. A
//! login refused for now (the server full) is retried too, not an exit.

mod common;

use common::*;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::echo_service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_the_client_back_on_the_same_port() {
    let echo = echo_service().await;
    let first = TestServer::start(HookChain::default(), |_| {}).await;
    let control = first.addr;
    let mut child = spawn_client(
        control,
        &["--reconnect-max", "1", "-R", &format!("0:{echo}")],
    );
    let mut ready = Ready::of(&mut child);
    let (_, public) = ready.next().await;
    assert_eq!(echo_check(public, 100_000, 1).await, 100_000);

    first.stop().await;
    let rec = Recorder::new();
    let second = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |c| {
        c.listen = control;
    })
    .await;
    assert_eq!(ready.next().await.1, public, "the same public port");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_is_waited_for_not_exited_on() {
    let echo = echo_service().await;
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let server = TestServer::start(chain, |c| c.limits.max_clients = 1).await;
    let occupant = connect(server.addr, "occupant").await;
    let mut child = spawn_client(
        server.addr,
        &["--reconnect-max", "1", "-R", &format!("0:{echo}")],
    );
    let mut ready = Ready::of(&mut child);
    rec.wait_for("the command-line client refused", |e| {
        e.iter()
            .any(|e| matches!(e, Ev::Rejected { reason, .. } if reason.contains("server is full")))
    })
    .await;
    occupant.shutdown().await.unwrap();
    let (_, public) = ready.next().await;
    assert_eq!(echo_check(public, 100_000, 3).await, 100_000);
    assert!(child.try_wait().unwrap().is_none(), "the client exited");
    child.kill().await.unwrap();
    server.stop().await;
}
