//! The built-in `Sampler`: which data events reach the wrapped hook, with
//! how many skipped bytes, the remainder on close, and that everything else
//! (gates, closes, errors, per-stream state) passes through unchanged.

mod common;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{client, open_client, server_info, stream_of, tunnel_of, Act, Log, Rec};
use reitunnel_hooks::builtin::{Sampler, Sampling};
use reitunnel_hooks::{
    CloseReason, DataEvent, Direction, Gate, Hook, HookChain, HookResult, Open, Reason, RefuseCode,
    Scope, StreamEnd, StreamInfo, StreamState, Verdict,
};

/// A data hook that logs what it is told, with its own per-stream state
/// (`"state-s<id>"`), so tests see whether the sampler hands it through.
struct Probe {
    log: Log,
}

impl Probe {
    fn new(log: &Log) -> Self {
        Probe { log: log.clone() }
    }
}

fn state_label(state: Option<&String>) -> &str {
    state.map_or("none", String::as_str)
}

impl Hook for Probe {
    fn name(&self) -> &str {
        "probe"
    }

    fn on_open(&self, scope: Scope<'_>) {
        self.log.push(format!("open {}", scope.kind()));
    }

    fn stream_state(&self, s: &StreamInfo) -> Option<StreamState> {
        Some(Box::new(format!("state-{}", s.id)))
    }

    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        self.log.push(format!(
            "data {} {} len={} skipped={} state={}",
            ev.stream.id,
            ev.direction.as_str(),
            ev.data.len(),
            ev.skipped,
            state_label(ev.state::<String>()),
        ));
        Verdict::Continue
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        self.log.push(format!(
            "close {} {} state={}",
            end.stream.id,
            end.reason.label(),
            state_label(end.state::<String>()),
        ));
        Ok(())
    }
}

fn one_in(n: u64) -> Sampling {
    Sampling::OneIn(NonZeroU64::new(n).expect("n > 0"))
}

/// A log and a chain of a `Probe` sampled with `sampling`.
fn sampled_probe(sampling: Sampling) -> (Log, HookChain) {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Sampler::new(Probe::new(&log), sampling))
        .build();
    (log, chain)
}

/// Opens stream `id` of a fresh tunnel of `client()` directly (no client or tunnel gate).
fn open_stream(chain: &HookChain, id: u64) -> Open<StreamInfo> {
    chain
        .open_stream(stream_of(&tunnel_of(&client(), 1), id))
        .expect("stream gate")
}

/// Offers one chunk of `len` bytes; the sampler never changes the verdict of a passing hook.
fn offer(open: &Open<StreamInfo>, dir: Direction, len: usize) {
    assert_eq!(open.on_data(dir, &vec![7u8; len]), Verdict::Continue);
}

/// The sum of `len + skipped` over the probe's data entries for `dir` (`"in"`/`"out"`).
fn bytes_seen(log: &Log, dir: &str) -> u64 {
    log.entries()
        .iter()
        .filter_map(|e| e.strip_prefix("data "))
        .filter(|e| e.split(' ').nth(1) == Some(dir))
        .map(|e| {
            e.split(' ')
                .filter_map(|f| {
                    f.strip_prefix("len=")
                        .or_else(|| f.strip_prefix("skipped="))
                })
                .map(|n| n.parse::<u64>().expect("number"))
                .sum::<u64>()
        })
        .sum()
}

/// The probe's data and close entries (dropping `open …`).
fn data_and_closes(log: &Log) -> Vec<String> {
    log.entries()
        .into_iter()
        .filter(|e| !e.starts_with("open "))
        .collect()
}

#[test]
fn name_wraps_the_inner_name_and_wants_data_follows_it() {
    let log = Log::new();
    let sampled = Sampler::new(Rec::new("x", &log), one_in(4));
    assert_eq!(sampled.name(), "sampled(x)");
    assert!(sampled.wants_data());
    assert!(!Sampler::new(Rec::new("y", &log).no_data(), one_in(4)).wants_data());
    let chain = HookChain::builder()
        .hook(Sampler::new(Rec::new("y", &log).no_data(), one_in(4)))
        .build();
    assert!(!chain.wants_data());
}

#[test]
fn one_in_four_forwards_chunks_1_5_9_with_the_bytes_they_stand_for() {
    let (log, chain) = sampled_probe(one_in(4));
    let open = open_stream(&chain, 1);
    // Chunk k (1-based) has 2^(k-1) bytes, so every sum of skipped chunks is unique.
    for k in 0..10 {
        offer(&open, Direction::Ingress, 1 << k);
    }
    assert_eq!(
        data_and_closes(&log),
        [
            "data s1 in len=1 skipped=0 state=state-s1",
            "data s1 in len=16 skipped=14 state=state-s1", // chunks 2..4: 2+4+8
            "data s1 in len=256 skipped=224 state=state-s1", // chunks 6..8: 32+64+128
        ]
    );
    open.close(CloseReason::Finished);
    assert_eq!(
        data_and_closes(&log)[3..],
        [
            // Chunk 10 was never forwarded: the remainder comes before the close.
            "data s1 in len=0 skipped=512 state=state-s1",
            "close s1 finished state=state-s1",
        ]
    );
    assert_eq!(bytes_seen(&log, "in"), 1023);
    assert_eq!(bytes_seen(&log, "out"), 0);
}

#[test]
fn close_hands_each_direction_its_remainder_and_totals_stay_exact() {
    let (log, chain) = sampled_probe(one_in(3));
    let open = open_stream(&chain, 1);
    let (mut sent_in, mut sent_out) = (0, 0);
    for k in 1..=8usize {
        offer(&open, Direction::Ingress, 10 * k + 1);
        sent_in += 10 * k as u64 + 1;
        if k <= 5 {
            offer(&open, Direction::Egress, 100 * k + 3);
            sent_out += 100 * k as u64 + 3;
        }
    }
    // Ingress chunks 1, 4, 7 and egress chunks 1, 4 were forwarded, each
    // direction counting its own chunks.
    assert_eq!(log.count("data s1 in "), 3);
    assert_eq!(log.count("data s1 out "), 2);
    assert!(bytes_seen(&log, "in") < sent_in);
    assert!(bytes_seen(&log, "out") < sent_out);

    open.close(CloseReason::Finished);
    let tail = &data_and_closes(&log)[5..];
    assert_eq!(
        tail,
        [
            "data s1 in len=0 skipped=81 state=state-s1", // chunk 8
            "data s1 out len=0 skipped=503 state=state-s1", // chunk 5
            "close s1 finished state=state-s1",
        ]
    );
    assert_eq!(bytes_seen(&log, "in"), sent_in);
    assert_eq!(bytes_seen(&log, "out"), sent_out);
}

#[test]
fn close_without_a_remainder_sends_no_empty_event() {
    let (log, chain) = sampled_probe(one_in(2));
    let open = open_stream(&chain, 1);
    offer(&open, Direction::Ingress, 5); // forwarded
    offer(&open, Direction::Ingress, 6); // skipped
    offer(&open, Direction::Ingress, 7); // forwarded, carrying the 6
    open.close(CloseReason::Shutdown);
    assert_eq!(
        data_and_closes(&log),
        [
            "data s1 in len=5 skipped=0 state=state-s1",
            "data s1 in len=7 skipped=6 state=state-s1",
            "close s1 shutdown state=state-s1",
        ]
    );
}

#[test]
fn sampling_and_state_are_per_stream() {
    let (log, chain) = sampled_probe(one_in(2));
    let s1 = open_stream(&chain, 1);
    let s2 = open_stream(&chain, 2);
    offer(&s1, Direction::Ingress, 1); // s1 #1: forwarded
    offer(&s2, Direction::Ingress, 2); // s2 #1: forwarded, although s1 is mid-cycle
    offer(&s1, Direction::Ingress, 3); // s1 #2: skipped
    offer(&s2, Direction::Ingress, 4); // s2 #2: skipped
    offer(&s2, Direction::Ingress, 5); // s2 #3: forwarded, carrying s2's 4 only
    s2.close(CloseReason::Finished);
    s1.close(CloseReason::Aborted);
    assert_eq!(
        data_and_closes(&log),
        [
            "data s1 in len=1 skipped=0 state=state-s1",
            "data s2 in len=2 skipped=0 state=state-s2",
            "data s2 in len=5 skipped=4 state=state-s2",
            "close s2 finished state=state-s2",
            "data s1 in len=0 skipped=3 state=state-s1",
            "close s1 aborted state=state-s1",
        ]
    );
}

#[test]
fn every_interval_forwards_the_first_chunk_and_folds_a_burst() {
    let (log, chain) = sampled_probe(Sampling::Every(Duration::from_secs(3600)));
    let open = open_stream(&chain, 1);
    for len in [10, 20, 30, 40, 50] {
        offer(&open, Direction::Ingress, len);
    }
    offer(&open, Direction::Egress, 1); // each direction has its own clock
    offer(&open, Direction::Egress, 2);
    assert_eq!(
        data_and_closes(&log),
        [
            "data s1 in len=10 skipped=0 state=state-s1",
            "data s1 out len=1 skipped=0 state=state-s1",
        ]
    );
    open.close(CloseReason::Finished);
    assert_eq!(
        data_and_closes(&log)[2..],
        [
            "data s1 in len=0 skipped=140 state=state-s1",
            "data s1 out len=0 skipped=2 state=state-s1",
            "close s1 finished state=state-s1",
        ]
    );
}

#[test]
fn nested_samplers_keep_totals_exact() {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Sampler::new(
            Sampler::new(Probe::new(&log), one_in(3)),
            one_in(2),
        ))
        .build();
    let open = open_stream(&chain, 1);
    let mut sent = 0;
    for len in 1..=20u64 {
        offer(&open, Direction::Egress, len as usize);
        sent += len;
    }
    // 10 of 20 pass the outer sampler, 4 of those the inner one.
    assert_eq!(log.count("data s1 out "), 4);
    open.close(CloseReason::Finished);
    assert_eq!(bytes_seen(&log, "out"), sent);
    assert_eq!(log.count("close s1 finished state=state-s1"), 1);
}

/// Runs the same life cycle (without data) through `chain`, whose hooks log into `log`.
fn life_cycle_without_data(chain: &HookChain) {
    chain.server_start(&server_info()).expect("start");
    let c = open_client(chain, client()).expect("client");
    let t = chain.open_tunnel(tunnel_of(c.info(), 1)).expect("tunnel");
    let s = chain.open_stream(stream_of(t.info(), 1)).expect("stream");
    let err = std::io::Error::other("disk on fire");
    chain.error(Scope::Stream(s.info()), &err);
    s.close(CloseReason::Finished);
    assert!(chain.open_stream(stream_of(t.info(), 2)).is_err());
    t.close(CloseReason::Finished);
    c.close(CloseReason::ConnectionLost);
    chain.server_stop(&server_info()).expect("stop");
}

#[test]
fn non_data_events_reach_the_wrapped_hook_unchanged() {
    // The same life cycle through a plain `Rec` and through a sampled one
    // leaves the same log, refused stream (by a later hook) included.
    let logs = [true, false].map(|wrap| {
        let log = Log::new();
        let rec = Rec::new("x", &log);
        let builder = if wrap {
            HookChain::builder().hook(Sampler::new(rec, one_in(4)))
        } else {
            HookChain::builder().hook(rec)
        };
        let chain = builder.hook(DenySecondStream::default()).build();
        life_cycle_without_data(&chain);
        log.take()
    });
    assert_eq!(logs[0], logs[1]);
    assert!(logs[0].contains(&"x:error stream other: disk on fire".to_owned()));
    assert!(logs[0].contains(&"x:rejected stream by=deny passed=true msg=no".to_owned()));
    assert!(logs[0].contains(&"x:client_close connection_lost in=0 out=0 streams=1".to_owned()));
    assert_eq!(logs[0].len(), 11, "{:#?}", logs[0]);
}

/// A gate named "deny" that lets the first stream through and refuses the rest.
#[derive(Default)]
struct DenySecondStream(AtomicU64);

impl Hook for DenySecondStream {
    fn name(&self) -> &str {
        "deny"
    }

    fn wants_data(&self) -> bool {
        false
    }

    fn on_stream_open(&self, _: &StreamInfo) -> Gate {
        if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
            Gate::Allow
        } else {
            Gate::Refuse(Reason::forbidden("no"))
        }
    }
}

#[test]
fn wrapped_gate_verdicts_decide_under_the_sampler_name() {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Sampler::new(
            Rec::new("x", &log).gate(Act::Reject("nope")),
            one_in(4),
        ))
        .build();
    let refusal = open_client(&chain, client()).expect_err("refused");
    assert_eq!(refusal.by, "sampled(x)");
    assert_eq!(refusal.reason, Reason::forbidden("nope"));
    assert_eq!(refusal.reason.code, RefuseCode::Forbidden);
    assert_eq!(
        log.take(),
        [
            "x:client_connect",
            "x:rejected client by=sampled(x) passed=false msg=nope"
        ]
    );
}

#[test]
fn wrapped_data_verdicts_pass_through_for_forwarded_chunks_only() {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Sampler::new(
            Rec::new("x", &log).data(Act::Throttle(Duration::from_millis(5))),
            one_in(2),
        ))
        .build();
    let open = open_stream(&chain, 1);
    let chunk = [0u8; 8];
    let verdicts: Vec<Verdict> = (0..4)
        .map(|_| open.on_data(Direction::Ingress, &chunk))
        .collect();
    let throttle = Verdict::Throttle(Duration::from_millis(5));
    assert_eq!(
        verdicts,
        [
            throttle.clone(),
            Verdict::Continue,
            throttle,
            Verdict::Continue
        ]
    );
}

#[test]
fn on_open_reaches_the_wrapped_hook() {
    let (log, chain) = sampled_probe(one_in(4));
    let c = open_client(&chain, client()).expect("client");
    let t = chain.open_tunnel(tunnel_of(c.info(), 1)).expect("tunnel");
    let s = chain.open_stream(stream_of(t.info(), 1)).expect("stream");
    assert_eq!(
        log.matching("open "),
        ["open client", "open tunnel", "open stream"]
    );
    s.close(CloseReason::Finished);
}
