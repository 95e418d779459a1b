//! UDP tunnels end to end: a real server and client on loopback, visitors'
//! datagrams through `-R udp:` and `-L udp:` to a UDP echo service, and
//! dnsmasq from Debian answering dig through the client binary. Checked:
//! every datagram comes back whole and in order, each one is an `on_data`
//! event of its size, each visitor address is one flow (a stream with its
//! open and close), a quiet flow closes after the idle time, the flow cap
//! turns the next visitor away with the reason, and every open has its close.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use reitunnel_client::{LocalSpec, RemoteSpec, Transport};
use reitunnel_hooks::builtin::Quota;
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{Direction, HookChain};
use reitunnel_server::ForwardRule;
use reitunnel_testkit::{
    dig, dnsmasq_answering, echo_service, installed, pseudo_random, udp_echo_service, within, DIG,
    DNSMASQ,
};
use tokio::net::UdpSocket;

/// A visitor's socket on 127.0.0.1, sending to `to`.
async fn visitor(to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(to).await.unwrap();
    socket
}

/// Sends `datagram` and returns what comes back (one datagram).
async fn round_trip(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).await.unwrap();
    let mut back = vec![0u8; 65_536];
    let n = within(PATIENCE, "an echoed datagram", socket.recv(&mut back))
        .await
        .unwrap();
    back.truncate(n);
    back
}

/// A server whose flows close after one quiet second, and its recorder.
async fn udp_server(
    tweak: impl FnOnce(&mut reitunnel_server::ServerConfig),
) -> (TestServer, std::sync::Arc<Recorder>) {
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let server = TestServer::start(chain, |cfg| {
        cfg.limits.udp_flow_idle = Duration::from_secs(1);
        tweak(cfg);
    })
    .await;
    (server, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_keep_their_boundaries_order_and_events_and_a_quiet_flow_closes() {
    let echo = udp_echo_service().await;
    let (server, rec) = udp_server(|_| {}).await;
    let client = connect(server.addr, "udp").await;
    let spec: RemoteSpec = format!("udp:0:{echo}").parse().unwrap();
    assert_eq!(spec.transport, Transport::Udp);
    let tunnel = client.open_reverse(spec).await.unwrap();
    let socket = visitor(tunnel.public_addr).await;

    // One at a time, sizes from 1 byte to 60,000: each comes back whole.
    let sizes = [1usize, 7, 512, 1400, 1473, 9000, 60_000, 3];
    for (i, &size) in sizes.iter().enumerate() {
        let datagram = pseudo_random(i as u64, size);
        assert_eq!(
            round_trip(&socket, &datagram).await,
            datagram,
            "size {size}"
        );
    }
    // A burst: all come back, in order.
    let burst: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    for datagram in &burst {
        socket.send(datagram).await.unwrap();
    }
    for datagram in &burst {
        let mut back = vec![0u8; 1024];
        let n = within(PATIENCE, "the burst", socket.recv(&mut back))
            .await
            .unwrap();
        assert_eq!(&back[..n], &datagram[..]);
    }

    // One flow, one data event per datagram of its size each way, then
    // the idle close with every byte counted.
    let events = rec
        .wait_for("the quiet flow's close", |events| {
            events.iter().any(|e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    let opens = events
        .iter()
        .filter(|e| matches!(e, Ev::StreamOpen(..)))
        .count();
    assert_eq!(opens, 1, "one visitor address is one flow");
    let sent: Vec<usize> = sizes
        .iter()
        .copied()
        .chain(burst.iter().map(Vec::len))
        .collect();
    let seen = |dir: Direction| -> Vec<usize> {
        events
            .iter()
            .filter_map(|e| match e {
                Ev::Data(_, d, n) if *d == dir => Some(*n),
                _ => None,
            })
            .collect()
    };
    assert_eq!(seen(Direction::Ingress), sent);
    assert_eq!(seen(Direction::Egress), sent);
    let Some(Ev::StreamClose(_, reason, totals)) =
        events.iter().find(|e| matches!(e, Ev::StreamClose(..)))
    else {
        unreachable!()
    };
    assert_eq!(reason, "timeout");
    let total: usize = sent.iter().sum();
    assert_eq!(
        (totals.bytes_in, totals.bytes_out),
        (total as u64, total as u64)
    );

    // The visitor writes again: a new flow.
    assert_eq!(round_trip(&socket, b"again").await, b"again");
    client.shutdown().await.unwrap();
    server.stop().await;
    let events = rec.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Ev::StreamOpen(..)))
            .count(),
        2
    );
    assert_balanced(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_visitors_are_many_flows_and_the_cap_turns_the_next_away() {
    const VISITORS: usize = 40;
    let echo = udp_echo_service().await;
    let (server, rec) = udp_server(|cfg| cfg.limits.max_udp_flows_per_tunnel = VISITORS).await;
    let client = connect(server.addr, "udp-many").await;
    let tunnel = client
        .open_reverse(format!("udp:0:{echo}").parse().unwrap())
        .await
        .unwrap();
    let public = tunnel.public_addr;
    let mut visitors = Vec::new();
    for v in 0..VISITORS {
        visitors.push(tokio::spawn(async move {
            let socket = visitor(public).await;
            for i in 0..10u64 {
                let datagram = pseudo_random(v as u64 * 100 + i, 200 + v);
                assert_eq!(round_trip(&socket, &datagram).await, datagram);
            }
            socket
        }));
    }
    let mut sockets = Vec::new();
    for v in visitors {
        sockets.push(v.await.unwrap());
    }
    // All 40 still open (each quiet for less than the idle time is not
    // guaranteed on a loaded machine, so count opens, not live flows).
    let opens = |events: &[Ev]| {
        events
            .iter()
            .filter(|e| matches!(e, Ev::StreamOpen(..)))
            .count()
    };
    assert!(opens(&rec.events()) >= VISITORS);
    // Keep the 40 busy while one more writes: it is turned away, named.
    let extra = visitor(public).await;
    let keep_busy = async {
        loop {
            for s in &sockets {
                let _ = round_trip(s, b"busy").await;
            }
        }
    };
    let turned_away = rec.wait_for("the 41st flow's refusal", |events| {
        events.iter().any(|e| {
            matches!(e, Ev::Rejected { reason, .. }
                if reason.contains("flow turned away: limit max_udp_flows_per_tunnel = 40 reached"))
        })
    });
    let poke = async {
        loop {
            extra.send(b"let me in").await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        _ = turned_away => {}
        () = keep_busy => unreachable!(),
        () = poke => unreachable!(),
    }
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Anyone can send a datagram from a new address (or forge one), so UDP
/// flows must not spend what TCP visitors need: flows from one address are
/// capped by `max_udp_flows_per_ip`, apart from its TCP visitors, and a
/// refused flow asks again a second later rather than staying refused for
/// as long as it keeps sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_from_one_address_are_capped_apart_and_a_refusal_passes() {
    const PER_IP: usize = 100;
    let echo = udp_echo_service().await;
    let tcp_echo = echo_service().await;
    let (server, rec) = udp_server(|cfg| {
        cfg.limits.max_udp_flows_per_ip = PER_IP;
        cfg.limits.max_visitors_per_ip = 50;
        // Far longer than the test: only the refusal's own hold ends it.
        cfg.limits.udp_flow_idle = Duration::from_secs(3600);
    })
    .await;
    let client = connect(server.addr, "udp-per-ip").await;
    let spec = || format!("udp:0:{echo}").parse::<RemoteSpec>().unwrap();
    let first = client.open_reverse(spec()).await.unwrap();
    let second = client.open_reverse(spec()).await.unwrap();
    let mut admitted = Vec::new();
    for v in 0..PER_IP {
        let socket = visitor(first.public_addr).await;
        let datagram = pseudo_random(v as u64, 100);
        assert_eq!(round_trip(&socket, &datagram).await, datagram);
        admitted.push(socket);
    }
    // The same address's TCP visitors are counted apart: they still get in.
    let tcp = reverse(&client, tcp_echo).await;
    assert_eq!(echo_check(tcp.public_addr, 100_000, 9).await, 100_000);
    // One more flow from this address, on the other tunnel: refused, named.
    let late = visitor(second.public_addr).await;
    let refused = rec.wait_for("the 101st flow's refusal", |events| {
        events.iter().any(|e| {
            matches!(e, Ev::Rejected { reason, .. }
                if reason == "flow turned away: limit max_udp_flows_per_ip = 100 reached")
        })
    });
    let poke = async {
        loop {
            late.send(b"let me in").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = refused => {}
        () = poke => unreachable!(),
    }
    // The first tunnel's flows end with it; the late visitor keeps sending
    // and is let in within its hold, without ever going quiet.
    client.close_tunnel(first.id).await.unwrap();
    let answered = async {
        let mut back = [0u8; 64];
        loop {
            late.send(b"let me in").await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), late.recv(&mut back)).await
            {
                return back[..n].to_vec();
            }
        }
    };
    let back = within(PATIENCE, "the late flow let in", answered).await;
    assert_eq!(back, b"let me in");
    drop(admitted);
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_forward_reaches_the_target_behind_the_server() {
    let echo = udp_echo_service().await;
    let (server, rec) = udp_server(|cfg| {
        cfg.allow_forward = vec![format!("{echo}").parse::<ForwardRule>().unwrap()];
    })
    .await;
    let client = connect(server.addr, "udp-forward").await;
    let spec: LocalSpec = format!("udp:0:{echo}").parse().unwrap();
    let forward = client.open_forward(spec).await.unwrap();
    let socket = visitor(forward.public_addr).await;
    for i in 0..20u64 {
        let datagram = pseudo_random(i, 300 + i as usize * 50);
        assert_eq!(round_trip(&socket, &datagram).await, datagram);
    }
    rec.wait_for("the forward flow's idle close", |events| {
        events
            .iter()
            .any(|e| matches!(e, Ev::StreamClose(_, reason, _) if reason == "timeout"))
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_dnsmasqs_answer_through_the_client_binary() {
    if !installed(DNSMASQ, "dnsmasq-base") || !installed(DIG, "dnsutils") {
        return;
    }
    let (_dnsmasq, dns) = tokio::task::block_in_place(|| {
        dnsmasq_answering("example.test", "192.0.2.1".parse().unwrap())
    });
    let (server, rec) = udp_server(|_| {}).await;
    let mut child = spawn_client(server.addr, &["-R", &format!("udp:0:{dns}")]);
    let (_, public) = Ready::of(&mut child).next().await;
    for name in ["www.example.test", "mail.example.test"] {
        let answer = tokio::task::spawn_blocking(move || dig(public, name))
            .await
            .unwrap();
        assert_eq!(answer, "192.0.2.1", "{name}");
    }
    // Each dig query came from a port of its own: a flow each.
    let events = rec
        .wait_for("both flows' data", |events| {
            events
                .iter()
                .filter(|e| matches!(e, Ev::Data(_, Direction::Egress, _)))
                .count()
                >= 2
        })
        .await;
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Ev::StreamOpen(..)))
            .count()
            >= 2
    );
    child.kill().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_datagrams_and_ends_the_flow_at_its_limit() {
    const QUOTA: u64 = 20_000;
    let echo = udp_echo_service().await;
    let quota = Quota::new(QUOTA, Duration::from_secs(86_400), EventBus::new());
    let rec = Recorder::new();
    let chain = HookChain::builder().hook(quota).shared(rec.clone()).build();
    let server = TestServer::start(chain, |_| {}).await;
    let client = connect(server.addr, "udp-quota").await;
    let tunnel = client
        .open_reverse(format!("udp:0:{echo}").parse().unwrap())
        .await
        .unwrap();
    let socket = visitor(tunnel.public_addr).await;
    // 1,000-byte datagrams, each counted both ways, until the quota ends
    // the flow: each datagram sent is either echoed or the one it stopped.
    let mut echoed = 0u64;
    let quota_closed = |events: &[Ev]| {
        events
            .iter()
            .any(|e| matches!(e, Ev::StreamClose(_, reason, _) if reason == "hook"))
    };
    for i in 0..40u64 {
        let datagram = pseudo_random(i, 1000);
        socket.send(&datagram).await.unwrap();
        let mut back = vec![0u8; 2048];
        tokio::select! {
            got = socket.recv(&mut back) => {
                assert_eq!(&back[..got.unwrap()], &datagram[..]);
                echoed += 1;
            }
            _ = rec.wait_for("the flow's close by the quota", quota_closed) => break,
        }
    }
    assert!(
        (9..=10).contains(&echoed),
        "{echoed} echoes of 1,000 bytes under a quota of {QUOTA} bytes both ways"
    );
    let events = rec.events();
    let totals = events
        .iter()
        .find_map(|e| match e {
            Ev::StreamClose(_, _, t) => Some(*t),
            _ => None,
        })
        .unwrap();
    assert!(
        totals.bytes_in + totals.bytes_out <= QUOTA + 1000,
        "{totals:?}"
    );
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_client_ends_its_flows_at_once_not_at_the_drain_timeout() {
    let echo = udp_echo_service().await;
    // The server would keep the flow for an hour: only the drain can end it.
    let (server, rec) =
        udp_server(|cfg| cfg.limits.udp_flow_idle = Duration::from_secs(3600)).await;
    let (client, client_rec) = recorded_client(server.addr, "udp-drain").await;
    let tunnel = client
        .open_reverse(format!("udp:0:{echo}").parse().unwrap())
        .await
        .unwrap();
    let socket = visitor(tunnel.public_addr).await;
    let datagram = pseudo_random(1, 500);
    assert_eq!(round_trip(&socket, &datagram).await, datagram);

    // An hour's drain ends because the flow does, not at its deadline.
    let drain = client.shutdown_graceful(Duration::from_secs(3600), std::future::pending());
    within(PATIENCE, "the client's drain", drain).await.unwrap();
    let closes: Vec<String> = client_rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::StreamClose(_, reason, _) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(closes, ["shutdown"], "the flow's close on the client");
    server.stop().await;
    assert_balanced(&client_rec.events());
    assert_balanced(&rec.events());
}
