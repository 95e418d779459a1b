//! Heap allocations per MiB moved through a tunnel, counted by a global
//! allocator: a server and a client in this process (each on its own
//! runtime, as the binaries run them) carry a bulk upload to a sink, and
//! one-byte round trips to an echo service. Everything allocated while the
//! bytes move is counted, both sides of the tunnel and the services
//! (which allocate nothing per chunk after their first read). Also prints
//! the heap an idle tunnel holds (server and client together: one session,
//! one tunnel) right after it opened and after it moved the upload and
//! then idled past the relay's shrink time.
//!
//! `cargo run --release -p reitunnel-benches --bin alloc-count [MIB]`

#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use reitunnel_examples::{echo_service, full_chain, sink_service, Loopback};
use reitunnel_hooks::HookChain;

struct Counting;

static CALLS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One allocation of `size` bytes, replacing `freed` bytes (a realloc).
fn count(size: usize, freed: usize) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    LIVE.fetch_add(size as i64 - freed as i64, Ordering::Relaxed);
}

/// Heap bytes in use now.
fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// (allocations, bytes allocated) so far.
fn counted() -> (u64, u64) {
    (CALLS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}

/// Uploads `mib` MiB to the sink behind `addr` and waits for its count.
fn upload(addr: SocketAddr, mib: u64, buf: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let total = mib << 20;
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).expect("sink count");
    assert_eq!(u64::from_be_bytes(count), total, "the sink got every byte");
}

/// `n` one-byte round trips through the echo behind `addr`.
fn round_trips(addr: SocketAddr, n: u32) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut b = [0u8; 1];
    for i in 0..n {
        s.write_all(&[i as u8]).expect("write");
        s.read_exact(&mut b).expect("read");
        assert_eq!(b[0], i as u8);
    }
}

/// Allocations while `f` runs, minus those of a warm-up run of `warm`.
fn measure(warm: impl Fn(), f: impl Fn()) -> (u64, u64) {
    warm();
    let (c0, b0) = counted();
    f();
    let (c1, b1) = counted();
    (c1 - c0, b1 - b0)
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let buf = vec![0xa5u8; 256 * 1024];
    let sink = sink_service();
    let echo = echo_service();
    println!(
        "allocations through a loopback tunnel (server + client + services), {mib} MiB upload"
    );
    println!(
        "{:<14} {:>13} {:>18} {:>20} {:>18} {:>18}",
        "hooks",
        "allocs / MiB",
        "KiB alloc'd / MiB",
        "allocs / round trip",
        "idle tunnel KiB",
        "after use KiB"
    );
    for (name, hooks) in [
        ("none", HookChain::default()),
        ("all built-ins", full_chain()),
    ] {
        let before = live();
        let up = Loopback::start(sink, hooks.clone(), HookChain::default()).expect("tunnel");
        let idle = live() - before;
        let (calls, bytes) = measure(
            || upload(up.public_addr, 4, &buf),
            || upload(up.public_addr, mib, &buf),
        );
        // Past the relay's shrink time (1 s): what stays is the session's own.
        std::thread::sleep(Duration::from_millis(1500));
        let used = live() - before;
        up.stop();
        let rt = Loopback::start(echo, hooks, HookChain::default()).expect("tunnel");
        let trips = 2_000;
        let (rt_calls, _) = measure(
            || round_trips(rt.public_addr, 100),
            || round_trips(rt.public_addr, trips),
        );
        rt.stop();
        println!(
            "{:<14} {:>13.1} {:>18.1} {:>20.2} {:>18.1} {:>18.1}",
            name,
            calls as f64 / mib as f64,
            bytes as f64 / 1024.0 / mib as f64,
            rt_calls as f64 / f64::from(trips),
            idle as f64 / 1024.0,
            used as f64 / 1024.0,
        );
    }
}
