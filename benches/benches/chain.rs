//! Per-chunk cost of the hook chain: what `on_data` costs the relay for one
//! 64 KiB chunk, with no data hooks, with each built-in that looks at data
//! alone, and with all of them (limits set high enough never to throttle).
//!
//! `cargo bench -p reitunnel-benches --bench chain`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use reitunnel_examples::{data_builtins, full_chain};
use reitunnel_hooks::{
    ChunkTime, ClientId, ClientInfo, Direction, HookChain, Login, Open, StreamId, StreamInfo,
    TunnelId, TunnelInfo, TunnelKind,
};

/// A client, tunnel and stream opened through `chain`'s gates.
fn open_stream(chain: &HookChain) -> (Vec<Box<dyn std::any::Any>>, Open<StreamInfo>) {
    let nonce = [0u8; 32];
    let client = Arc::new(ClientInfo::new(
        ClientId(1),
        "bench",
        "127.0.0.1:1".parse().unwrap(),
    ));
    let login = Login {
        nonce: &nonce,
        proof: &nonce,
    };
    let c = chain.open_client(client.clone(), &login).expect("client");
    let tunnel = Arc::new(TunnelInfo::new(
        TunnelId(1),
        client,
        TunnelKind::Reverse,
        "127.0.0.1:2".parse().unwrap(),
        "127.0.0.1:3",
    ));
    let t = chain.open_tunnel(tunnel.clone()).expect("tunnel");
    let s = chain
        .open_stream(Arc::new(StreamInfo::new(
            StreamId(1),
            tunnel,
            "127.0.0.1:4".parse().unwrap(),
        )))
        .expect("stream");
    (vec![Box::new(c), Box::new(t)], s)
}

fn per_chunk(c: &mut Criterion) {
    let chunk = vec![0u8; 64 * 1024];
    let mut chains = vec![("no data hooks", HookChain::default())];
    for (name, hook) in data_builtins() {
        chains.push((name, HookChain::builder().shared(hook).build()));
    }
    chains.push(("all built-ins", full_chain()));
    let mut group = c.benchmark_group("on_data per 64 KiB chunk");
    for (name, chain) in &chains {
        let (_parents, stream) = open_stream(chain);
        group.bench_function(*name, |b| {
            b.iter(|| {
                // What the relay does per chunk.
                if stream.wants_data() {
                    let verdict = stream.on_data(Direction::Ingress, std::hint::black_box(&chunk));
                    let _ = std::hint::black_box(verdict);
                }
            })
        });
    }
    group.finish();
}

/// Chunks the relay moves in one wake-up of a busy stream, sharing one
/// clock stamp (for the second group).
const CHUNKS_PER_WAKE: u64 = 4;

/// The full chain as the relay calls it on a busy stream: one stamp per
/// wake-up, shared by its chunks. Reported per chunk.
fn per_chunk_shared_stamp(c: &mut Criterion) {
    let chunk = vec![0u8; 64 * 1024];
    let chain = full_chain();
    let (_parents, stream) = open_stream(&chain);
    let mut group = c.benchmark_group("on_data per 64 KiB chunk, 4 chunks per wake-up");
    group.bench_function("all built-ins", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                let time = ChunkTime::new();
                for _ in 0..CHUNKS_PER_WAKE {
                    let data = std::hint::black_box(&chunk);
                    let verdict = stream.on_data_at(Direction::Ingress, data, &time);
                    let _ = std::hint::black_box(verdict);
                }
            }
            start.elapsed() / CHUNKS_PER_WAKE as u32
        })
    });
    group.finish();
}

criterion_group!(benches, per_chunk, per_chunk_shared_stamp);
criterion_main!(benches);
