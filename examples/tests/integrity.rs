//! Integrity under the whole hook chain: 1 GiB each way through a tunnel
//! whose control connection is TLS, with every built-in data hook on the
//! server (rate limit, quota, meter, sampled counters, tracing, counters).
//! Every byte comes back as sent, and the meter's reported totals and the
//! counters equal the bytes moved, exactly.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reitunnel_examples::{data_builtins, echo_service, Loopback, LoopbackTls};
use reitunnel_hooks::builtin::{BandwidthMeter, Counters, MeterReport, MeterSink};
use reitunnel_hooks::HookChain;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;

/// Sums every meter report's per-client bytes.
#[derive(Default)]
struct Totals {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl MeterSink for Totals {
    fn report(&self, report: &MeterReport) {
        for usage in &report.clients {
            self.bytes_in.fetch_add(usage.bytes_in, Ordering::Relaxed);
            self.bytes_out.fetch_add(usage.bytes_out, Ordering::Relaxed);
        }
    }
}

/// Chunk `i` of a deterministic stream (xorshift64 seeded by `i`), so the
/// reader can check each chunk without keeping what was sent.
fn chunk(i: u64, buf: &mut [u8]) {
    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
}

#[test]
fn one_gib_each_way_through_tls_and_every_built_in_hook_arrives_whole_and_metered() {
    let totals = Arc::new(Totals::default());
    let meter = BandwidthMeter::new(vec![totals.clone() as Arc<dyn MeterSink>]);
    let counters = Arc::new(Counters::new());
    let mut chain = HookChain::builder();
    for (name, hook) in data_builtins() {
        if name != "meter" {
            chain = chain.shared(hook);
        }
    }
    let chain = chain.shared(meter).shared(counters.clone()).build();
    let tls = LoopbackTls::self_signed().unwrap();
    let tunnel = Loopback::start_with(echo_service(), chain, HookChain::default(), Some(&tls))
        .expect("loopback over TLS");

    let visitor = TcpStream::connect(tunnel.public_addr).unwrap();
    let mut writer = visitor.try_clone().unwrap();
    let chunks = GIB / CHUNK as u64;
    let sending = std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        for i in 0..chunks {
            chunk(i, &mut buf);
            writer.write_all(&buf).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let (mut reader, mut got, mut want) = (&visitor, vec![0u8; CHUNK], vec![0u8; CHUNK]);
    for i in 0..chunks {
        reader.read_exact(&mut got).unwrap();
        chunk(i, &mut want);
        assert!(got == want, "chunk {i} (of 1 MiB) came back different");
    }
    assert_eq!(
        reader.read(&mut got).unwrap(),
        0,
        "nothing after the last byte"
    );
    sending.join().unwrap();
    drop(visitor);
    // The server's stop waits for the stream's close, which sends the
    // meter's last report.
    tunnel.stop();

    let metered = (
        totals.bytes_in.load(Ordering::Relaxed),
        totals.bytes_out.load(Ordering::Relaxed),
    );
    assert_eq!(metered, (GIB, GIB), "the meter's reported totals");
    let counted = counters.snapshot();
    assert_eq!(
        (counted.bytes_in, counted.bytes_out),
        (GIB, GIB),
        "the counters"
    );
    assert_eq!(
        (counted.streams_total, counted.streams_active),
        (1, 0),
        "one stream, closed"
    );
}
