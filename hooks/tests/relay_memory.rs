//! What the relay holds on the heap: nothing for a stream that only ever
//! moved small chunks, two big buffers while bulk data flows, and nothing
//! again once the stream has idled for `SHRINK_AFTER`. Counted by a global
//! allocator that tracks live bytes; alone in its test binary, so no other
//! test's allocations mix in.

#![allow(unsafe_code)] // the counting allocator

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::stream;
use reitunnel_hooks::relay::{relay, RelayConfig, SHRINK_AFTER};
use reitunnel_hooks::{CloseReason, HookChain};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Round trips `len` bytes visitor -> service in chunks of `chunk`.
async fn push(
    visitor: &mut tokio::io::DuplexStream,
    service: &mut tokio::io::DuplexStream,
    len: usize,
    chunk: usize,
) {
    let out = vec![7u8; chunk];
    let mut back = vec![0u8; chunk];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk);
        visitor.write_all(&out[..n]).await.unwrap();
        service.read_exact(&mut back[..n]).await.unwrap();
        assert!(back[..n].iter().all(|&b| b == 7));
        left -= n;
    }
}

#[tokio::test(start_paused = true)]
async fn big_buffers_only_while_bulk_and_given_back_after_idle() {
    let cfg = RelayConfig::default();
    let (mut visitor, mut visitor_near) = duplex(256 * 1024);
    let (mut service_near, mut service) = duplex(256 * 1024);
    let chain = HookChain::default();
    let open = chain.open_stream(stream()).expect("opens");
    let relayed = tokio::spawn(async move {
        let reason = relay(&mut visitor_near, &mut service_near, &open, &cfg).await;
        open.close(reason.clone());
        reason
    });

    // Small request/response chunks: no big buffer.
    let base = live();
    push(&mut visitor, &mut service, 64 * 1024, 512).await;
    assert!(
        live() - base < 16 * 1024,
        "small chunks grew the heap by {} bytes",
        live() - base
    );

    // Bulk: a big buffer appears.
    push(&mut visitor, &mut service, 4 << 20, 64 * 1024).await;
    let bulk = live();
    assert!(
        bulk - base >= cfg.max_chunk as isize,
        "bulk grew the heap by only {} bytes",
        bulk - base
    );

    // Idle past SHRINK_AFTER (paused clock: no real wait): it is given back.
    tokio::time::sleep(SHRINK_AFTER * 3).await;
    assert!(
        bulk - live() >= cfg.max_chunk as isize,
        "idle kept {} bytes of the {} bulk grew",
        live() - base,
        bulk - base
    );

    // And the stream still carries bulk data after shrinking.
    push(&mut visitor, &mut service, 1 << 20, 64 * 1024).await;
    drop((visitor, service));
    assert_eq!(relayed.await.unwrap(), CloseReason::Finished);
}
