//! Per-chunk verdict combination through `HookChain::on_data`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{data, errors_heard, stream, Act, Log, QuietPanics, Rec, PANIC_MARK};
use reitunnel_hooks::{
    ChunkTime, DataEvent, Direction, ErrorStrategy, Hook, HookChain, Reason, RefuseCode, Verdict,
};

const CHUNK: &[u8] = b"0123456789";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A log and a chain of `Rec`s whose `on_data` answers as scripted.
fn chain_of(strategy: ErrorStrategy, acts: &[(&'static str, Act)]) -> (Log, HookChain) {
    common::chain_of(strategy, acts, Rec::data)
}

/// The verdict of `chain` on [`CHUNK`] flowing in `dir` on a fresh stream.
fn offer(chain: &HookChain, dir: Direction) -> Verdict {
    chain.on_data(&data(&stream(), dir, CHUNK), &[])
}

/// The `on_error` entries of the hooks a, b and c when b panicked on data.
fn b_panic_heard() -> Vec<String> {
    errors_heard(&["a", "b", "c"], "stream", "b", "panicked")
}

/// The entries of the hooks in `names` seeing [`CHUNK`] flow `dir` (`"in"` / `"out"`).
fn saw(names: &[&str], dir: &str) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("{n}:data {dir} len={}", CHUNK.len()))
        .collect()
}

#[test]
fn all_continue_is_continue_and_every_hook_sees_the_chunk() {
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Pass), ("c", Act::Pass)],
    );
    assert!(chain.wants_data());
    assert_eq!(offer(&chain, Direction::Ingress), Verdict::Continue);
    assert_eq!(log.take(), saw(&["a", "b", "c"], "in"));
    assert_eq!(offer(&chain, Direction::Egress), Verdict::Continue);
    assert_eq!(log.take(), saw(&["a", "b", "c"], "out"));
}

#[test]
fn empty_chain_wants_no_data_and_continues() {
    let chain = HookChain::default();
    assert!(!chain.wants_data());
    assert_eq!(offer(&chain, Direction::Ingress), Verdict::Continue);
}

#[test]
fn longest_throttle_wins_and_later_hooks_still_see_the_chunk() {
    for (first, second) in [(10, 30), (30, 10), (30, 30)] {
        let (log, chain) = chain_of(
            ErrorStrategy::StopOnError,
            &[
                ("a", Act::Throttle(ms(first))),
                ("b", Act::Pass),
                ("c", Act::Throttle(ms(second))),
                ("d", Act::Pass),
            ],
        );
        assert_eq!(
            offer(&chain, Direction::Ingress),
            Verdict::Throttle(ms(30)),
            "{first} ms then {second} ms"
        );
        assert_eq!(log.take(), saw(&["a", "b", "c", "d"], "in"));
    }
}

#[test]
fn single_throttle_is_returned_as_is() {
    let (_log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Throttle(ms(7)))],
    );
    assert_eq!(offer(&chain, Direction::Egress), Verdict::Throttle(ms(7)));
}

#[test]
fn zero_throttle_is_continue() {
    let (_log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Throttle(Duration::ZERO))],
    );
    assert_eq!(offer(&chain, Direction::Ingress), Verdict::Continue);
}

#[test]
fn close_short_circuits() {
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Pass),
            ("b", Act::Close("quota exhausted")),
            ("c", Act::Pass),
        ],
    );
    assert_eq!(
        offer(&chain, Direction::Ingress),
        Verdict::Close(Reason::forbidden("quota exhausted"))
    );
    assert_eq!(log.take(), saw(&["a", "b"], "in"));
}

#[test]
fn close_after_a_throttle_wins() {
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Throttle(ms(50))),
            ("b", Act::Close("stop")),
            ("c", Act::Throttle(ms(90))),
        ],
    );
    assert_eq!(
        offer(&chain, Direction::Egress),
        Verdict::Close(Reason::forbidden("stop"))
    );
    assert_eq!(log.take(), saw(&["a", "b"], "out"));
}

#[test]
fn panicking_data_hook_closes_under_stop_on_error() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Throttle(ms(5))),
            ("b", Act::Panic),
            ("c", Act::Pass),
        ],
    );
    let verdict = offer(&chain, Direction::Ingress);
    let Verdict::Close(reason) = verdict else {
        panic!("expected Close, got {verdict:?}");
    };
    assert_eq!(reason.code, RefuseCode::Other);
    assert!(reason.message.contains("'b'"), "{reason}");
    assert!(reason.message.contains("panicked"), "{reason}");
    assert!(reason.message.contains(PANIC_MARK), "{reason}");
    assert_eq!(
        log.take(),
        [saw(&["a", "b"], "in"), b_panic_heard()].concat()
    );
}

#[test]
fn panicking_data_hook_is_ignored_under_collect_and_continue() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::CollectAndContinue,
        &[("a", Act::Pass), ("b", Act::Panic), ("c", Act::Pass)],
    );
    assert_eq!(offer(&chain, Direction::Egress), Verdict::Continue);
    assert_eq!(
        log.take(),
        [saw(&["a", "b"], "out"), b_panic_heard(), saw(&["c"], "out")].concat()
    );

    // The chain keeps working after the panic, chunk after chunk, and the
    // other hooks' verdicts still count.
    let (log, chain) = chain_of(
        ErrorStrategy::CollectAndContinue,
        &[("a", Act::Panic), ("b", Act::Throttle(ms(3)))],
    );
    for _ in 0..3 {
        assert_eq!(offer(&chain, Direction::Ingress), Verdict::Throttle(ms(3)));
    }
    assert_eq!(log.count("b:data"), 3);
}

#[test]
fn hooks_not_wanting_data_are_never_called_for_data() {
    let log = Log::new();
    // `quiet` would panic if its on_data were ever called.
    let chain = HookChain::builder()
        .hook(Rec::new("quiet", &log).data(Act::Panic).no_data())
        .hook(Rec::new("meter", &log))
        .hook(Rec::new("quiet2", &log).data(Act::Close("never")).no_data())
        .build();
    assert!(chain.wants_data());
    for dir in [Direction::Ingress, Direction::Egress] {
        assert_eq!(offer(&chain, dir), Verdict::Continue);
    }
    assert_eq!(
        log.take(),
        [saw(&["meter"], "in"), saw(&["meter"], "out")].concat()
    );
}

#[test]
fn chain_of_hooks_not_wanting_data_wants_no_data() {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Rec::new("a", &log).data(Act::Panic).no_data())
        .hook(Rec::new("b", &log).data(Act::Close("never")).no_data())
        .build();
    assert!(!chain.wants_data());
    assert_eq!(offer(&chain, Direction::Ingress), Verdict::Continue);
    assert!(log.entries().is_empty(), "{:?}", log.entries());
}

#[test]
fn data_event_carries_the_bytes_and_stream() {
    struct Check;
    impl reitunnel_hooks::Hook for Check {
        fn name(&self) -> &str {
            "check"
        }
        fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
            assert_eq!(ev.data, CHUNK);
            assert_eq!(ev.stream.id, reitunnel_hooks::StreamId(1));
            assert_eq!(ev.direction, Direction::Egress);
            Verdict::Close(Reason::forbidden("checked"))
        }
    }
    let chain = HookChain::builder().hook(Check).build();
    // If an assertion inside the hook failed, the chain would catch the
    // panic and turn it into a Close with RefuseCode::Other instead.
    assert_eq!(
        offer(&chain, Direction::Egress),
        Verdict::Close(Reason::forbidden("checked"))
    );
}

/// Records the time each chunk was offered at, as hooks see it.
#[derive(Default)]
struct Stamps(Mutex<Vec<Instant>>);

impl Hook for Stamps {
    fn name(&self) -> &str {
        "stamps"
    }
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        self.0.lock().expect("stamps").push(ev.now());
        Verdict::Continue
    }
}

#[test]
fn hooks_of_one_chunk_share_one_stamp_and_the_relay_shares_it_per_wake_up() {
    let (first, second) = (Arc::new(Stamps::default()), Arc::new(Stamps::default()));
    let chain = HookChain::builder()
        .shared(first.clone())
        .shared(second.clone())
        .build();
    let session = common::Session::open(&chain, common::client(), 1);
    let s = session.stream(1);

    // One chunk: both hooks see the same instant.
    let _ = s.on_data(Direction::Ingress, CHUNK);
    // Two chunks in one wake-up: one stamp for both.
    let time = ChunkTime::new();
    let _ = s.on_data_at(Direction::Ingress, CHUNK, &time);
    let _ = s.on_data_at(Direction::Egress, CHUNK, &time);
    // A later chunk gets a later (or equal) stamp of its own.
    let _ = s.on_data(Direction::Ingress, CHUNK);

    let a = first.0.lock().expect("stamps").clone();
    let b = second.0.lock().expect("stamps").clone();
    assert_eq!(a, b, "every hook of a chunk sees the same stamp");
    assert_eq!(a.len(), 4);
    assert_eq!(a[1], a[2], "chunks of one wake-up share the stamp");
    assert!(a[0] <= a[1] && a[2] <= a[3]);
    assert_eq!(a[1], time.now());
}
