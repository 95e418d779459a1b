//! Per-chunk verdict combination through `HookChain::on_data`.

mod common;

use std::time::Duration;

use common::{data, stream, Act, Log, QuietPanics, Rec, PANIC_MARK};
use reitunnel_hooks::{Direction, ErrorStrategy, HookChain, Reason, RefuseCode, Verdict};

const CHUNK: &[u8] = b"0123456789";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn chain_of(log: &Log, strategy: ErrorStrategy, acts: &[(&'static str, Act)]) -> HookChain {
    acts.iter()
        .fold(HookChain::builder().strategy(strategy), |b, (name, act)| {
            b.hook(Rec::new(name, log).data(act.clone()))
        })
        .build()
}

fn saw(names: &[&str], dir: &str) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("{n}:data {dir} len={}", CHUNK.len()))
        .collect()
}

#[test]
fn all_continue_is_continue_and_every_hook_sees_the_chunk() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Pass), ("c", Act::Pass)],
    );
    assert!(chain.wants_data());
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Continue
    );
    assert_eq!(log.take(), saw(&["a", "b", "c"], "in"));
    assert_eq!(
        chain.on_data(&data(&s, Direction::Egress, CHUNK)),
        Verdict::Continue
    );
    assert_eq!(log.take(), saw(&["a", "b", "c"], "out"));
}

#[test]
fn empty_chain_wants_no_data_and_continues() {
    let chain = HookChain::default();
    assert!(!chain.wants_data());
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Continue
    );
}

#[test]
fn longest_throttle_wins_and_later_hooks_still_see_the_chunk() {
    for (first, second) in [(10, 30), (30, 10), (30, 30)] {
        let log = Log::new();
        let chain = chain_of(
            &log,
            ErrorStrategy::StopOnError,
            &[
                ("a", Act::Throttle(ms(first))),
                ("b", Act::Pass),
                ("c", Act::Throttle(ms(second))),
                ("d", Act::Pass),
            ],
        );
        let s = stream();
        assert_eq!(
            chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
            Verdict::Throttle(ms(30)),
            "{first} ms then {second} ms"
        );
        assert_eq!(log.take(), saw(&["a", "b", "c", "d"], "in"));
    }
}

#[test]
fn single_throttle_is_returned_as_is() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Throttle(ms(7)))],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Egress, CHUNK)),
        Verdict::Throttle(ms(7))
    );
}

#[test]
fn zero_throttle_is_continue() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[("a", Act::Throttle(Duration::ZERO))],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Continue
    );
}

#[test]
fn close_short_circuits() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Pass),
            ("b", Act::Close("quota exhausted")),
            ("c", Act::Pass),
        ],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Close(Reason::forbidden("quota exhausted"))
    );
    assert_eq!(log.take(), saw(&["a", "b"], "in"));
}

#[test]
fn close_after_a_throttle_wins() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Throttle(ms(50))),
            ("b", Act::Close("stop")),
            ("c", Act::Throttle(ms(90))),
        ],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Egress, CHUNK)),
        Verdict::Close(Reason::forbidden("stop"))
    );
    assert_eq!(log.take(), saw(&["a", "b"], "out"));
}

#[test]
fn reject_on_data_becomes_close() {
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[("a", Act::Reject("bad bytes")), ("b", Act::Pass)],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Close(Reason::forbidden("bad bytes"))
    );
    assert_eq!(log.take(), saw(&["a"], "in"));
}

#[test]
fn panicking_data_hook_closes_under_stop_on_error() {
    let _quiet = QuietPanics::new();
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Throttle(ms(5))),
            ("b", Act::Panic),
            ("c", Act::Pass),
        ],
    );
    let s = stream();
    let verdict = chain.on_data(&data(&s, Direction::Ingress, CHUNK));
    let Verdict::Close(reason) = verdict else {
        panic!("expected Close, got {verdict:?}");
    };
    assert_eq!(reason.code, RefuseCode::Other);
    assert!(reason.message.contains("'b'"), "{reason}");
    assert!(reason.message.contains("panicked"), "{reason}");
    assert!(reason.message.contains(PANIC_MARK), "{reason}");
    let mut expected = saw(&["a", "b"], "in");
    expected.extend([
        "a:error stream hook=b panicked".to_owned(),
        "b:error stream hook=b panicked".to_owned(),
        "c:error stream hook=b panicked".to_owned(),
    ]);
    assert_eq!(log.take(), expected);
}

#[test]
fn panicking_data_hook_is_ignored_under_collect_and_continue() {
    let _quiet = QuietPanics::new();
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::CollectAndContinue,
        &[("a", Act::Pass), ("b", Act::Panic), ("c", Act::Pass)],
    );
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Egress, CHUNK)),
        Verdict::Continue
    );
    let mut expected = saw(&["a", "b"], "out");
    expected.extend([
        "a:error stream hook=b panicked".to_owned(),
        "b:error stream hook=b panicked".to_owned(),
        "c:error stream hook=b panicked".to_owned(),
    ]);
    expected.extend(saw(&["c"], "out"));
    assert_eq!(log.take(), expected);

    // The chain keeps working after the panic, chunk after chunk, and the
    // other hooks' verdicts still count.
    let log = Log::new();
    let chain = chain_of(
        &log,
        ErrorStrategy::CollectAndContinue,
        &[("a", Act::Panic), ("b", Act::Throttle(ms(3)))],
    );
    for _ in 0..3 {
        assert_eq!(
            chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
            Verdict::Throttle(ms(3))
        );
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
    let s = stream();
    for dir in [Direction::Ingress, Direction::Egress] {
        assert_eq!(chain.on_data(&data(&s, dir, CHUNK)), Verdict::Continue);
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
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, CHUNK)),
        Verdict::Continue
    );
    assert!(log.entries().is_empty(), "{:?}", log.entries());
}

#[test]
fn data_event_carries_the_bytes_and_stream() {
    struct Check;
    impl reitunnel_hooks::Hook for Check {
        fn name(&self) -> &str {
            "check"
        }
        fn on_data(&self, ev: &reitunnel_hooks::DataEvent<'_>) -> Verdict {
            assert_eq!(ev.data, CHUNK);
            assert_eq!(ev.stream.id, reitunnel_hooks::StreamId(1));
            assert_eq!(ev.direction, Direction::Egress);
            Verdict::Close(Reason::forbidden("checked"))
        }
    }
    let chain = HookChain::builder().hook(Check).build();
    let s = stream();
    // If an assertion inside the hook failed, the chain would catch the
    // panic and turn it into a Close with RefuseCode::Other instead.
    assert_eq!(
        chain.on_data(&data(&s, Direction::Egress, CHUNK)),
        Verdict::Close(Reason::forbidden("checked"))
    );
}
