//! A packet-level path between two network namespaces: every IP packet is
//! held half the round trip in each direction (first in, first out), with
//! optional random loss. Unlike `delay-proxy`, nothing here ends TCP, so
//! every connection sees the delay with its own kernel windows, as across
//! a real network.
//!
//! `delay-line NS_A NS_B RTT_MS [LOSS] [MTU]` creates the namespaces (if
//! missing), a TUN device in each (`rtd-a` at 198.18.0.1 in NS_A, `rtd-b`
//! at 198.18.0.2 in NS_B: the benchmarking range), forwards between them,
//! prints `ready` on stdout, and serves until killed; the caller deletes
//! the namespaces. Needs root (TUN, `ip netns`). This kernel has no
//! `sch_netem`, hence a forwarder of our own.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// The two ends' addresses, in 198.18.0.0/15 (RFC 2544, for benchmarks).
const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Packets in flight per direction: at 9000-byte packets, 360 MB, more
/// than any window here reaches in one delay. Past it, packets are dropped
/// (a full router queue).
const IN_FLIGHT: usize = 40_000;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (ns_a, ns_b, rtt, loss, mtu) = match &args[1..] {
        [a, b, rtt, rest @ ..] if rest.len() <= 2 => (
            a.clone(),
            b.clone(),
            Duration::from_millis(rtt.parse().expect("RTT_MS")),
            rest.first()
                .map_or(0.0, |l| l.parse::<f64>().expect("LOSS")),
            rest.get(1).map_or(9000, |m| m.parse::<u16>().expect("MTU")),
        ),
        _ => {
            eprintln!("usage: delay-line NS_A NS_B RTT_MS [LOSS (0.001 = 0.1 %)] [MTU (9000)]");
            std::process::exit(2);
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let a = Arc::new(end(&ns_a, "rtd-a", ADDR_A, ADDR_B, mtu)?);
            let b = Arc::new(end(&ns_b, "rtd-b", ADDR_B, ADDR_A, mtu)?);
            let one_way = rtt / 2;
            tokio::spawn(direction(a.clone(), b.clone(), one_way, loss, mtu));
            tokio::spawn(direction(b, a, one_way, loss, mtu));
            println!("ready");
            std::future::pending::<std::io::Result<()>>().await
        })
}

/// Runs `ip` with `args`; a failure ends the program, naming the command.
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {} failed: {status}", args.join(" "));
}

/// One end: namespace `ns` (made if missing, loopback up), and a TUN device
/// `name` made here, then moved into it (the open device goes on working)
/// with `local` on it and `peer` behind it.
fn end(
    ns: &str,
    name: &str,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    mtu: u16,
) -> std::io::Result<AsyncDevice> {
    let exists = Command::new("ip")
        .args(["netns", "exec", ns, "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        ip(&["netns", "add", ns]);
    }
    ip(&["-n", ns, "link", "set", "lo", "up"]);
    let device = DeviceBuilder::new().name(name).mtu(mtu).build_async()?;
    ip(&["link", "set", name, "netns", ns]);
    let (local, peer) = (local.to_string(), format!("{peer}/32"));
    ip(&["-n", ns, "addr", "add", &local, "peer", &peer, "dev", name]);
    ip(&["-n", ns, "link", "set", name, "mtu", &mtu.to_string(), "up"]);
    Ok(device)
}

/// Moves packets from `from` to `to`, each sent `delay` after it arrived,
/// in order; a share `loss` of them is dropped.
async fn direction(
    from: Arc<AsyncDevice>,
    to: Arc<AsyncDevice>,
    delay: Duration,
    loss: f64,
    mtu: u16,
) {
    let (queue, mut due) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    tokio::spawn(async move {
        while let Some((at, packet)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.send(&packet).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::new();
    loop {
        buf.resize(usize::from(mtu) + 64, 0);
        let Ok(n) = from.recv(&mut buf).await else {
            return;
        };
        let packet = buf.split_to(n).freeze();
        if loss > 0.0 && fastrand::f64() < loss {
            continue;
        }
        // A full queue drops, as a router's would.
        let _ = queue.try_send((Instant::now() + delay, packet));
    }
}
