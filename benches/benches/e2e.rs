//! End-to-end benchmark: the same workloads direct over loopback and
//! through a tunnel (without and with hooks), interleaved in one run,
//! printed as ratios so machine noise cancels out as far as it can.
//!
//! `cargo bench -p reitunnel-benches --bench e2e`
//! Environment: `BENCH_MIB` (bulk size, default 1024), `BENCH_RTT` (round
//! trips, default 20000), `BENCH_ROUNDS` (default 3).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use reitunnel_examples::{echo_service, full_chain, sink_service, Loopback, LoopbackTls};
use reitunnel_hooks::builtin::Counters;
use reitunnel_hooks::HookChain;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `bytes` to a sink and waits for its count: Gbit/s.
fn bulk(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let buf = vec![0xa5u8; 256 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).expect("sink count");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), bytes, "sink received everything");
    bytes as f64 * 8.0 / secs / 1e9
}

/// One-byte request/response against an echo: round trips per second.
fn round_trips(addr: SocketAddr, n: u64) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    let start = Instant::now();
    for i in 0..n {
        s.write_all(&[i as u8]).unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i as u8);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Every data-path built-in on the server, counters on the client.
fn hooks() -> (HookChain, HookChain) {
    let client = HookChain::builder()
        .shared(Arc::new(Counters::new()))
        .build();
    (full_chain(), client)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    reitunnel_program::tune_allocator();
    let mib = env("BENCH_MIB", 1024);
    let rtt_n = env("BENCH_RTT", 20_000);
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let sink = sink_service();
    let echo = echo_service();
    let plain_sink = Loopback::start(sink, HookChain::default(), HookChain::default()).unwrap();
    let plain_echo = Loopback::start(echo, HookChain::default(), HookChain::default()).unwrap();
    let (s, c) = hooks();
    let hooked_sink = Loopback::start(sink, s, c).unwrap();
    let (s, c) = hooks();
    let hooked_echo = Loopback::start(echo, s, c).unwrap();
    let tls = LoopbackTls::self_signed().unwrap();
    let (s, c) = hooks();
    let tls_sink = Loopback::start_with(sink, s, c, Some(&tls)).unwrap();
    let (s, c) = hooks();
    let tls_echo = Loopback::start_with(echo, s, c, Some(&tls)).unwrap();

    let names = [
        "direct loopback",
        "tunnel, no hooks",
        "tunnel, all built-ins",
        "tunnel, TLS, built-ins",
    ];
    let n = names.len();
    let sinks = [
        sink,
        plain_sink.public_addr,
        hooked_sink.public_addr,
        tls_sink.public_addr,
    ];
    let echos = [
        echo,
        plain_echo.public_addr,
        hooked_echo.public_addr,
        tls_echo.public_addr,
    ];
    let mut gbps = vec![Vec::new(); n];
    let mut rtts = vec![Vec::new(); n];
    // Warm up every path once (connections, buffers, window growth).
    for i in 0..n {
        bulk(sinks[i], 64 << 20);
        round_trips(echos[i], 1000);
    }
    for _ in 0..rounds {
        for i in 0..n {
            gbps[i].push(bulk(sinks[i], mib << 20));
            rtts[i].push(round_trips(echos[i], rtt_n));
        }
    }
    let gbps: Vec<f64> = gbps.into_iter().map(median).collect();
    let rtts: Vec<f64> = rtts.into_iter().map(median).collect();
    println!(
        "reitunnel e2e, loopback, {} cores: bulk {mib} MiB one way, {rtt_n} one-byte round trips; median of {rounds} interleaved rounds",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{:<24} {:>10} {:>8} {:>14} {:>8}",
        "path", "Gbit/s", "ratio", "round trips/s", "ratio"
    );
    for i in 0..n {
        println!(
            "{:<24} {:>10.2} {:>8.2} {:>14.0} {:>8.2}",
            names[i],
            gbps[i],
            gbps[i] / gbps[0],
            rtts[i],
            rtts[i] / rtts[0]
        );
    }
    println!(
        "hooks on / hooks off: bulk {:.2}, round trips {:.2}; TLS / plain (both hooked): bulk {:.2}, round trips {:.2}",
        gbps[2] / gbps[1],
        rtts[2] / rtts[1],
        gbps[3] / gbps[2],
        rtts[3] / rtts[2]
    );
    for lb in [
        plain_sink,
        plain_echo,
        hooked_sink,
        hooked_echo,
        tls_sink,
        tls_echo,
    ] {
        lb.stop();
    }
}
