//! Kills, shutdowns and hook verdicts through a real tunnel: every open has
//! exactly one close, and the server keeps serving everyone else.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use reitunnel_client::{ClientError, RemoteSpec};
use reitunnel_hooks::testing::StreamGate;
use reitunnel_hooks::{
    DataEvent, ErrorStrategy, Hook, HookChain, HookResult, Reason, ServerInfo, Verdict,
};
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn has(events: &[Ev], f: impl Fn(&Ev) -> bool) -> bool {
    events.iter().any(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_closes_everything_once_and_gets_its_leased_port_back() {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |_| {}).await;
    let echo = echo_service().await;
    // A bystander whose tunnel must survive the kill.
    let bystander = connect(server.addr, "bystander").await;
    let safe = reverse(&bystander, echo).await;

    let mut child = spawn_client(
        server.addr,
        &["--name", "victim", "-R", &format!("0:{echo}")],
    );
    let (line, public) = Ready::of(&mut child).next().await;
    // "tunnel N ready: 127.0.0.1:PORT -> 127.0.0.1:ECHO"
    assert!(
        line.starts_with("tunnel ") && line.ends_with(&format!("-> {echo}")),
        "{line}"
    );

    // Start an endless transfer (bounded at 1 GiB) and kill once bytes flow.
    let visitor = TcpStream::connect(public).await.unwrap();
    let (mut r, mut w) = visitor.into_split();
    let writer = tokio::spawn(async move {
        let buf = vec![7u8; 64 * 1024];
        for _ in 0..16 * 1024 {
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    rec.wait_for("1 MiB echoed through the victim", |e| {
        e.iter()
            .filter_map(|e| match e {
                Ev::Data(_, reitunnel_hooks::Direction::Egress, n) => Some(*n),
                _ => None,
            })
            .sum::<usize>()
            >= 1 << 20
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    let events = rec
        .wait_for("the victim's stream to close", |e| {
            has(e, |e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    // The visitor is cut off, not left hanging.
    tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("visitor closed")
        .unwrap();
    writer.abort();
    let victim = events
        .iter()
        .find_map(|e| match e {
            Ev::Connect(id, name) if name == "victim" => Some(*id),
            _ => None,
        })
        .unwrap();
    let stream_reason = events.iter().find_map(|e| match e {
        Ev::StreamClose(_, r, t) => Some((r.clone(), t.bytes_in)),
        _ => None,
    });
    let (reason, bytes_in) = stream_reason.expect("stream closed");
    assert!(reason == "connection_lost" || reason == "error", "{reason}");
    assert!(bytes_in >= 1 << 20);
    assert!(
        !has(
            &rec.events(),
            |e| matches!(e, Ev::Disconnect(id, ..) if *id == victim)
        ),
        "the lease keeps the vanished client open"
    );
    // The port is leased to the vanished client: another is told whose it is...
    let spec: RemoteSpec = format!("{public}:{echo}").parse().unwrap();
    let other = connect(server.addr, "other").await;
    // The port is leased once the victim's session has noticed the loss,
    // a moment after its stream closed; until then the port is simply busy.
    let mut answer = other.open_reverse(spec.clone()).await;
    for _ in 0..1000 {
        match &answer {
            Err(ClientError::TunnelRefused { message, .. })
                if message.contains("cannot listen") =>
            {
                answer = other.open_reverse(spec.clone()).await;
            }
            _ => break,
        }
    }
    match answer {
        Err(ClientError::TunnelRefused { message, .. }) => assert!(
            message.contains(&format!(
                "port {} is leased to client 'victim'",
                public.port()
            )),
            "{message}"
        ),
        got => panic!("another client took a leased port: {got:?}"),
    }
    other.shutdown().await.unwrap();
    // ...and the victim, back within the lease, gets the same port, visitors and all.
    let back = connect(server.addr, "victim").await;
    let again = back
        .open_reverse(spec)
        .await
        .expect("the leased port comes back");
    assert_eq!(again.public_addr, public);
    // The lease kept the old tunnel and client open; the claim closed them,
    // tunnel first, before the new tunnel opened on the same listener.
    let events = rec.events();
    let at = |f: &dyn Fn(&Ev) -> bool| events.iter().position(f);
    let old_tunnel = at(&|e| matches!(e, Ev::TunnelClose(_, r, _) if r == "connection_lost"))
        .expect("the leased tunnel closed at the claim");
    let old_client =
        at(&|e| matches!(e, Ev::Disconnect(id, r, _) if *id == victim && r == "connection_lost"))
            .expect("the vanished client closed after its leased tunnel");
    let new_tunnel =
        at(&|e| matches!(e, Ev::TunnelOpen(_, c) if *c == back.id())).expect("the new tunnel");
    assert!(
        old_tunnel < old_client && old_client < new_tunnel,
        "{events:#?}"
    );
    assert_eq!(echo_check(public, 100_000, 6).await, 100_000);
    // Leaving in order frees the port at once.
    back.shutdown().await.unwrap();
    rec.wait_for("the returned victim's disconnect", |ev| {
        ev.iter()
            .filter(|e| matches!(e, Ev::Disconnect(_, r, _) if r == "finished"))
            .count()
            >= 2
    })
    .await;
    TcpListener::bind(public)
        .await
        .expect("the port is free after an orderly goodbye");
    // The bystander never noticed.
    assert_eq!(echo_check(safe.public_addr, 200_000, 4).await, 200_000);
    bystander.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Notes `on_server_stop` into the shared record so ordering can be checked.
struct StopMarker(Arc<Recorder>);
impl Hook for StopMarker {
    fn name(&self) -> &str {
        "stop_marker"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_server_stop(&self, _: &ServerInfo) -> HookResult {
        self.0.on_error(&reitunnel_hooks::ErrorEvent {
            scope: reitunnel_hooks::Scope::Server,
            error: &std::io::Error::other("server stopped"),
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_closes_streams_tunnels_clients_then_stops() {
    let rec = Recorder::new();
    let chain = HookChain::builder()
        .shared(rec.clone())
        .hook(StopMarker(rec.clone()))
        .build();
    let server = TestServer::start(chain, |_| {}).await;
    let echo = echo_service().await;
    let mut clients = Vec::new();
    let mut visitors = Vec::new();
    for name in ["a", "b"] {
        let client = connect(server.addr, name).await;
        let tunnel = reverse(&client, echo).await;
        let mut v = TcpStream::connect(tunnel.public_addr).await.unwrap();
        v.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        v.read_exact(&mut buf).await.unwrap(); // the stream is open end to end
        visitors.push(v);
        clients.push(client);
    }
    server.stop().await;
    let events = rec.events();
    assert_balanced(&events);
    for e in &events {
        match e {
            Ev::StreamClose(_, r, _) | Ev::TunnelClose(_, r, _) | Ev::Disconnect(_, r, _) => {
                assert_eq!(r, "shutdown", "{events:#?}")
            }
            _ => {}
        }
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Ev::Disconnect(..)))
            .count(),
        2
    );
    assert_eq!(
        events.last(),
        Some(&Ev::Error("server: server stopped".into())),
        "on_server_stop comes last"
    );
    for client in clients {
        tokio::time::timeout(PATIENCE, client.ended())
            .await
            .expect("client noticed the goodbye");
        let err = client.shutdown().await.expect_err("server said goodbye");
        assert_eq!(
            err.to_string(),
            "server closed the session: server is shutting down"
        );
    }
    for mut v in visitors {
        assert_eq!(
            v.read(&mut [0u8; 8]).await.unwrap_or(0),
            0,
            "visitor closed"
        );
    }
}

/// Closes a stream once it carried `limit` bytes in.
struct CloseAfter {
    limit: usize,
    seen: AtomicUsize,
}
impl Hook for CloseAfter {
    fn name(&self) -> &str {
        "close_after"
    }
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        if self.seen.fetch_add(ev.data.len(), Ordering::Relaxed) + ev.data.len() > self.limit {
            Verdict::Close(Reason::limit_reached("byte limit"))
        } else {
            Verdict::Continue
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_close_verdicts_act_on_real_visitors() {
    let echo = echo_service().await;

    // Refused at the stream gate: the visitor is disconnected, hooks hear why.
    let rec = Recorder::new();
    let server = TestServer::start(
        HookChain::builder()
            .shared(rec.clone())
            .hook(StreamGate::Refuse {
                name: "no_visitors",
                reason: "closed for maintenance",
            })
            .build(),
        |_| {},
    )
    .await;
    let client = connect(server.addr, "rejected").await;
    let tunnel = reverse(&client, echo).await;
    let mut v = TcpStream::connect(tunnel.public_addr).await.unwrap();
    assert_eq!(v.read(&mut [0u8; 8]).await.unwrap_or(0), 0);
    rec.wait_for("stream rejection", |e| {
        has(e, |e| matches!(e, Ev::Rejected { by, reason } if by == "no_visitors" && reason == "closed for maintenance"))
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
    assert!(
        !has(&rec.events(), |e| matches!(e, Ev::StreamClose(..))),
        "a refused stream never closes"
    );

    // Close on data: the stream ends at the limit, with the hook's reason.
    let rec = Recorder::new();
    let limit = 256 * 1024;
    let server = TestServer::start(
        HookChain::builder()
            .shared(rec.clone())
            .hook(CloseAfter {
                limit,
                seen: AtomicUsize::new(0),
            })
            .build(),
        |_| {},
    )
    .await;
    let client = connect(server.addr, "limited").await;
    let tunnel = reverse(&client, echo).await;
    let v = TcpStream::connect(tunnel.public_addr).await.unwrap();
    let (mut r, mut w) = v.into_split();
    let writer = tokio::spawn(async move {
        let buf = vec![1u8; 64 * 1024];
        for _ in 0..64 {
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut echoed = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        echoed += n;
    }
    writer.abort();
    assert!(
        echoed <= limit,
        "no byte past the limit was forwarded: {echoed}"
    );
    let events = rec
        .wait_for("stream close", |e| {
            has(e, |e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    let totals = events.iter().find_map(|e| match e {
        Ev::StreamClose(_, r, t) if r == "hook" => Some(*t),
        _ => None,
    });
    assert!(totals.expect("closed by the hook").bytes_in <= limit as u64);
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_never_takes_the_server_down() {
    let echo = echo_service().await;
    for strategy in [
        ErrorStrategy::StopOnError,
        ErrorStrategy::CollectAndContinue,
    ] {
        let rec = Recorder::new();
        let chain = HookChain::builder()
            .strategy(strategy)
            .hook(StreamGate::Panic {
                name: "boom",
                message: "boom hook exploded",
            })
            .shared(rec.clone())
            .build();
        let server = TestServer::start(chain, |_| {}).await;
        let client = connect(server.addr, "panics").await;
        let tunnel = reverse(&client, echo).await;
        for round in 0..2 {
            let mut v = TcpStream::connect(tunnel.public_addr).await.unwrap();
            v.write_all(b"hello").await.unwrap();
            let mut got = Vec::new();
            v.shutdown().await.unwrap();
            let _ = v.read_to_end(&mut got).await;
            match strategy {
                // Fails closed: the visitor is refused, but the next one is handled too.
                ErrorStrategy::StopOnError => assert!(got.is_empty(), "round {round}"),
                // Fails open: the other hooks decide, the visitor is served.
                ErrorStrategy::CollectAndContinue => assert_eq!(got, b"hello", "round {round}"),
            }
        }
        let errors = rec.errors();
        assert_eq!(
            errors
                .iter()
                .filter(|m| m.contains("hook 'boom' panicked: boom hook exploded"))
                .count(),
            2,
            "{strategy:?}: {errors:?}"
        );
        client.shutdown().await.unwrap();
        server.stop().await;
        assert_balanced(&rec.events());
    }
}

/// A client that logs in and says goodbye at once, before reading what the
/// server sent (the Pong to its first Ping): the server must still read the
/// goodbye, every time, and not take it for a lost connection (which would
/// hold the client's ports on a lease). Before the client let the server
/// close first, the closing socket's reset destroyed the goodbye in about
/// two sessions out of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_goodbye_is_always_read_as_one() {
    const SESSIONS: usize = 100;
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |_| {}).await;
    for _ in 0..SESSIONS {
        connect(server.addr, "hasty")
            .await
            .shutdown()
            .await
            .unwrap();
    }
    let events = rec
        .wait_for("every session to end", |evs| {
            evs.iter()
                .filter(|e| matches!(e, Ev::Disconnect(..)))
                .count()
                == SESSIONS
        })
        .await;
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Disconnect(_, reason, _) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(reasons.iter().all(|r| *r == "finished"), "{reasons:?}");
    assert_eq!(rec.errors(), Vec::<String>::new());
    assert_balanced(&events);
    server.stop().await;
}

/// A client shut down while a visitor's stream is open: its own hooks see
/// the stream, the tunnel and itself close as `shutdown` (not as if they
/// had finished), the server's see a logout, and both balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_shutdown_closes_what_it_cuts_as_shutdown() {
    let server_rec = Recorder::new();
    let server = TestServer::start(
        HookChain::builder().shared(server_rec.clone()).build(),
        |_| {},
    )
    .await;
    let (client, client_rec) = recorded_client(server.addr, "leaving").await;
    let tunnel = reverse(&client, echo_service().await).await;
    let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
    visitor.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    visitor.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");

    client.shutdown().await.unwrap();
    let mine = client_rec.events();
    assert_balanced(&mine);
    assert_eq!(
        closed_as(&mine),
        ["shutdown", "shutdown", "shutdown"],
        "{mine:#?}"
    );
    let theirs = server_rec
        .wait_for("the logout", |e| {
            e.iter().any(|e| matches!(e, Ev::Disconnect(..)))
        })
        .await;
    assert_eq!(closed_as(&theirs)[2], "finished", "{theirs:#?}");
    // The visitor is told: its connection ends.
    assert_eq!(visitor.read(&mut echo).await.unwrap_or(0), 0);
    server.stop().await;
    assert_balanced(&server_rec.events());
}

/// Why the first stream, tunnel and client closed, in that order.
fn closed_as(events: &[Ev]) -> [String; 3] {
    let reason = |i: usize| {
        events
            .iter()
            .find_map(|e| match (i, e) {
                (0, Ev::StreamClose(_, r, _))
                | (1, Ev::TunnelClose(_, r, _))
                | (2, Ev::Disconnect(_, r, _)) => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    [reason(0), reason(1), reason(2)]
}

/// A server whose every task is dropped mid-session (its runtime shut down,
/// as when a program embedding it ends without stopping it): each open
/// still has one close, streams before their tunnel, tunnels before their
/// client, though nothing closed them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dropped_mid_session_still_closes_leaf_first() {
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .spawn(TestServer::start(chain, |_| {}))
        .await
        .unwrap();
    let echo = echo_service().await;
    let mut clients = Vec::new();
    let mut visitors = Vec::new();
    for name in ["one", "two", "three"] {
        let client = connect(server.addr, name).await;
        for _ in 0..2 {
            let tunnel = reverse(&client, echo).await;
            for _ in 0..3 {
                let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
                visitor.write_all(b"open").await.unwrap();
                visitor.read_exact(&mut [0u8; 4]).await.unwrap();
                visitors.push(visitor);
            }
        }
        clients.push(client);
    }
    rec.wait_for("every stream open", |e| {
        e.iter().filter(|e| matches!(e, Ev::StreamOpen(..))).count() == visitors.len()
    })
    .await;

    tokio::task::spawn_blocking(move || drop(runtime))
        .await
        .unwrap();
    let events = rec.events();
    assert_balanced(&events);
    let aborted = events
        .iter()
        .filter(|e| matches!(e, Ev::StreamClose(_, r, _) if r == "aborted"))
        .count();
    assert_eq!(aborted, visitors.len(), "{events:#?}");
    drop(server);
    for mut visitor in visitors {
        assert_eq!(visitor.read(&mut [0u8; 4]).await.unwrap_or(0), 0);
    }
}
