//! The built-in `RateLimit`: byte buckets per client and per tunnel (each
//! direction its own) that throttle and never refuse, and connection rates
//! (streams per client, visitors and logins per IP) that reject.
//!
//! The byte buckets run on the real clock. Waits are asserted against
//! bounds that hold however slowly the test runs: a wait never exceeds the
//! time its bytes cost, and falls short of it by at most the time that
//! passed since the bucket was last charged (measured around the calls).

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, client_at, open_client, stream_of, tunnel_of, Session};
use reitunnel_hooks::builtin::{ByteRate, EventRate, RateLimit, RateLimitConfig};
use reitunnel_hooks::{
    ClientInfo, Direction, Hook, HookChain, Open, Refusal, RefuseCode, StreamInfo, Verdict,
};

const KIB: u32 = 1024;
const RATE: u32 = 1024 * KIB; // 1 MiB/s
const BURST: u32 = 64 * KIB;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// 1 MiB/s with a 64 KiB burst.
fn mib_per_sec() -> ByteRate {
    ByteRate {
        bytes_per_sec: nz(RATE),
        burst: nz(BURST),
    }
}

/// `per_sec` events per second, `burst` at once.
fn events(per_sec: u32, burst: u32) -> EventRate {
    EventRate {
        per_sec: nz(per_sec),
        burst: nz(burst),
    }
}

/// How long `bytes` take at `RATE`.
fn cost(bytes: u32) -> Duration {
    Duration::from_secs_f64(f64::from(bytes) / f64::from(RATE))
}

/// A shared `RateLimit` with `cfg`, alone in a chain.
fn limited(cfg: RateLimitConfig) -> (Arc<RateLimit>, HookChain) {
    let limit = Arc::new(RateLimit::new(cfg));
    let chain = HookChain::builder().shared(limit.clone()).build();
    (limit, chain)
}

/// Only `per_client` at 1 MiB/s.
fn per_client() -> RateLimitConfig {
    RateLimitConfig {
        per_client: Some(mib_per_sec()),
        ..Default::default()
    }
}

/// The client session `id`, logged in from 127.0.0.`id`.
fn client_n(id: u64) -> Arc<ClientInfo> {
    let last = u8::try_from(id).expect("small id");
    client_at(
        id,
        &format!("client{id}"),
        SocketAddr::from(([127, 0, 0, last], 50_000)),
    )
}

/// The time before client 1's buckets exist (every wait is measured
/// from it), its session through `chain` and its stream 1.
fn timed_stream(chain: &HookChain) -> (Instant, Session, Open<StreamInfo>) {
    let start = Instant::now();
    let session = Session::open(chain, client_n(1), 1);
    let s = session.stream(1);
    (start, session, s)
}

/// A chunk of `len` bytes.
fn chunk(len: u32) -> Vec<u8> {
    vec![0u8; len as usize]
}

/// Offers a chunk of `len` bytes moving `dir`.
fn offer(open: &Open<StreamInfo>, dir: Direction, len: u32) -> Verdict {
    open.on_data(dir, &chunk(len))
}

/// Asserts that `verdict` holds a chunk about `expected`: at most 1.5×, and at
/// least the smaller of half of it and `expected - slack` (`slack`: the
/// time that passed since the bucket was charged up to `expected`). When
/// `slack` covers all of `expected`, `Continue` is accepted too.
fn assert_held_about(verdict: &Verdict, expected: Duration, slack: Duration) {
    let low = (expected / 2).min(expected.saturating_sub(slack));
    let high = expected * 3 / 2;
    match verdict {
        Verdict::Continue if low.is_zero() => {}
        Verdict::Throttle(d) => assert!(
            (low..=high).contains(d),
            "held {d:?}, expected about {expected:?} (between {low:?} and {high:?})"
        ),
        other => panic!("expected Throttle of about {expected:?}, got {other:?}"),
    }
}

/// Offers chunks of `len` until `total` bytes went out, all passing at once.
fn spend(open: &Open<StreamInfo>, dir: Direction, len: u32, total: u32) {
    for _ in 0..total / len {
        assert_eq!(offer(open, dir, len), Verdict::Continue);
    }
}

#[test]
fn per_client_burst_passes_then_the_next_chunk_waits_for_its_time() {
    let (limit, chain) = limited(per_client());
    assert!(limit.wants_data() && chain.wants_data());
    assert_eq!(limit.name(), "rate_limit");
    let (start, _session, s) = timed_stream(&chain);
    spend(&s, Direction::Ingress, 16 * KIB, BURST);
    assert_eq!(limit.throttled_chunks(), 0);

    let v = offer(&s, Direction::Ingress, 16 * KIB);
    assert_held_about(&v, cost(16 * KIB), start.elapsed());
    assert_eq!(limit.throttled_chunks(), u64::from(v != Verdict::Continue));
}

#[test]
fn streams_of_one_client_share_its_buckets_other_clients_have_their_own() {
    let (_, chain) = limited(per_client());
    let start = Instant::now();
    let alice = Session::open(&chain, client_n(1), 1);
    let bob = Session::open(&chain, client_n(2), 2);
    let (a1, a2, b1) = (alice.stream(1), alice.stream(2), bob.stream(3));
    assert_eq!(offer(&a1, Direction::Ingress, BURST), Verdict::Continue);
    let v = offer(&a2, Direction::Ingress, 32 * KIB);
    assert_held_about(&v, cost(32 * KIB), start.elapsed());
    assert_eq!(offer(&b1, Direction::Ingress, BURST), Verdict::Continue);
}

#[test]
fn a_chunk_larger_than_the_burst_waits_in_proportion_and_is_never_refused() {
    let (_, chain) = limited(per_client());
    for (id, size) in [(1, 256 * KIB), (2, 512 * KIB)] {
        let start = Instant::now();
        let session = Session::open(&chain, client_n(id), id);
        let v = offer(&session.stream(id), Direction::Egress, size);
        // The burst's worth passes at once; the rest waits at the rate.
        assert_held_about(&v, cost(size - BURST), start.elapsed());
    }
}

#[test]
fn each_direction_has_its_own_bucket() {
    let (_, chain) = limited(per_client());
    let (start, _session, s) = timed_stream(&chain);
    spend(&s, Direction::Ingress, BURST, BURST);
    let v = offer(&s, Direction::Ingress, BURST);
    assert_held_about(&v, cost(BURST), start.elapsed());
    spend(&s, Direction::Egress, 32 * KIB, BURST);
}

#[test]
fn per_tunnel_buckets_are_per_tunnel_and_direction() {
    let (_, chain) = limited(RateLimitConfig {
        per_tunnel: Some(mib_per_sec()),
        ..Default::default()
    });
    let start = Instant::now();
    let t1 = Session::open(&chain, client_n(1), 1);
    let t2 = chain
        .open_tunnel(tunnel_of(t1.client.info(), 2))
        .expect("second tunnel of the same client");
    let (s1, s2) = (t1.stream(1), t1.stream(2));
    spend(&s1, Direction::Egress, BURST, BURST);
    let v = offer(&s2, Direction::Egress, 16 * KIB);
    assert_held_about(&v, cost(16 * KIB), start.elapsed());
    spend(&s2, Direction::Ingress, BURST, BURST);
    let s3 = chain.open_stream(stream_of(t2.info(), 3)).expect("stream");
    spend(&s3, Direction::Egress, BURST, BURST);
}

#[test]
fn the_slower_of_client_and_tunnel_limits_wins() {
    let (_, chain) = limited(RateLimitConfig {
        per_client: Some(mib_per_sec()),
        per_tunnel: Some(ByteRate {
            bytes_per_sec: nz(RATE / 4),
            burst: nz(BURST),
        }),
        ..Default::default()
    });
    let (start, _session, s) = timed_stream(&chain);
    spend(&s, Direction::Ingress, BURST, BURST);
    let v = offer(&s, Direction::Ingress, 16 * KIB);
    assert_held_about(&v, cost(16 * KIB) * 4, start.elapsed());
}

#[test]
fn no_byte_limits_want_no_data() {
    let gates_only = RateLimitConfig {
        streams_per_client: Some(events(1, 1)),
        visitors_per_ip: Some(events(1, 1)),
        logins_per_ip: Some(events(1, 1)),
        ..Default::default()
    };
    for cfg in [RateLimitConfig::default(), gates_only] {
        let (limit, chain) = limited(cfg);
        assert!(!limit.wants_data() && !chain.wants_data());
        let session = Session::open(&chain, client_n(1), 1);
        assert!(!session.stream(1).wants_data());
    }
    let (limit, _) = limited(RateLimitConfig {
        per_tunnel: Some(mib_per_sec()),
        ..Default::default()
    });
    assert!(limit.wants_data());
}

#[test]
fn streams_without_a_gated_client_are_not_limited() {
    // A client that never passed this hook's connect gate has no bucket.
    let (limit, chain) = limited(per_client());
    let t = tunnel_of(&client_n(1), 1);
    let s = chain.open_stream(stream_of(&t, 1)).expect("stream");
    spend(&s, Direction::Ingress, BURST, 4 * BURST);
    assert_eq!(limit.throttled_chunks(), 0);
}

/// Asserts that `refused` is the rate limiter's, naming `what`.
fn assert_refused(refused: Result<impl std::fmt::Debug, Refusal>, what: &str) {
    let refusal = refused.expect_err("over the rate");
    assert_eq!(refusal.by, "rate_limit");
    assert_eq!(refusal.reason.code, RefuseCode::LimitReached);
    assert!(
        refusal.reason.message.contains(what),
        "{:?} names {what}",
        refusal.reason.message
    );
}

#[test]
fn streams_per_client_refuses_the_third_quick_stream() {
    let (_, chain) = limited(RateLimitConfig {
        streams_per_client: Some(events(1, 2)),
        ..Default::default()
    });
    let alice = Session::open(&chain, client_n(1), 1);
    let bob = Session::open(&chain, client_n(2), 2);
    let _kept = [alice.stream(1), alice.stream(2)];
    assert_refused(alice.try_stream_from(3, addr(40_000)), "client1");
    let _bobs = [bob.stream(4), bob.stream(5)];
}

#[test]
fn visitors_per_ip_refuses_the_third_visitor_from_one_address() {
    let (_, chain) = limited(RateLimitConfig {
        visitors_per_ip: Some(events(1, 2)),
        ..Default::default()
    });
    let visitor = SocketAddr::from(([10, 0, 0, 1], 40_000));
    let other = SocketAddr::from(([10, 0, 0, 2], 40_000));
    let alice = Session::open(&chain, client_n(1), 1);
    let bob = Session::open(&chain, client_n(2), 2);
    let _first = alice.try_stream_from(1, visitor).expect("first visit");
    let _second = bob
        .try_stream_from(2, visitor)
        .expect("second visit, other client");
    assert_refused(alice.try_stream_from(3, visitor), "10.0.0.1");
    let _elsewhere = alice.try_stream_from(4, other).expect("other address");
}

#[test]
fn logins_per_ip_refuses_the_third_login_from_one_address() {
    let (_, chain) = limited(RateLimitConfig {
        logins_per_ip: Some(events(1, 2)),
        ..Default::default()
    });
    let from = addr(50_000);
    let _first = open_client(&chain, client_at(1, "a", from)).expect("first");
    let _second = open_client(&chain, client_at(2, "b", from)).expect("second");
    assert_refused(open_client(&chain, client_at(3, "c", from)), "127.0.0.1");
    let _other = open_client(&chain, client_n(4)).expect("another address");
}

#[test]
fn a_throttled_chunk_is_charged_so_the_next_waits_a_full_chunk() {
    // Inherently time-based: the buckets run on the real clock.
    let (_, chain) = limited(per_client());
    let (start, _session, s) = timed_stream(&chain);
    spend(&s, Direction::Ingress, BURST, BURST);
    let before = Instant::now();
    let v = offer(&s, Direction::Ingress, BURST);
    assert_held_about(&v, cost(BURST), start.elapsed());
    let Verdict::Throttle(wait) = v else {
        return; // this run was too slow to say more
    };
    std::thread::sleep(wait);
    let v = offer(&s, Direction::Ingress, BURST);
    // It may fall short of a chunk's time by what the sleep overshot.
    let overshoot = before.elapsed().saturating_sub(wait);
    assert_held_about(&v, cost(BURST), overshoot);
}

#[test]
fn honouring_the_waits_holds_the_long_run_rate() {
    // Inherently time-based: 12 chunks of 64 KiB at 1 MiB/s, about 0.7 s.
    const CHUNKS: u32 = 12;
    let (limit, chain) = limited(per_client());
    let (start, _session, s) = timed_stream(&chain);
    let data = chunk(BURST);
    for _ in 0..CHUNKS {
        match s.on_data(Direction::Egress, &data) {
            Verdict::Continue => {}
            Verdict::Throttle(d) => {
                assert!(
                    d <= cost(BURST),
                    "one chunk never waits more than its time: {d:?}"
                );
                std::thread::sleep(d);
            }
            other => panic!("bytes are slowed, never refused: {other:?}"),
        }
    }
    let took = start.elapsed();
    // The burst passes at once; every later chunk costs its time, which no
    // wait is allowed to skip, and a late wake-up is made up later.
    let least = cost(BURST) * (CHUNKS - 1) - Duration::from_millis(1);
    assert!(took >= least, "{took:?} < {least:?}: faster than the limit");
    assert!(took <= least * 3 / 2, "{took:?}: far slower than the limit");
    assert!(limit.throttled_chunks() >= u64::from(CHUNKS) / 2);
}
