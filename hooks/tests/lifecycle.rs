//! Observers: `server_start` / `server_stop` error strategies and
//! `MultiError`, and the open/close balance of `Open` handles, including
//! how stream bytes roll up into tunnel and client totals.

mod common;

use std::sync::{Arc, Mutex};

use common::{
    client, open_client, server_info, stream, stream_of, tunnel_of, Act, Log, QuietPanics, Rec,
};
use reitunnel_hooks::{
    CloseReason, Direction, ErrorStrategy, Hook, HookChain, HookErrorKind, HookResult, MultiError,
    Open, Reason, StreamEnd, StreamInfo, Totals, TunnelInfo,
};

/// A log and a chain of `Rec`s whose server and close observers answer as scripted.
fn chain_of(strategy: ErrorStrategy, acts: &[(&'static str, Act)]) -> (Log, HookChain) {
    common::chain_of(strategy, acts, |rec, act| {
        rec.server(act.clone()).close(act)
    })
}

/// A log and a chain of the observers "a" and "b", neither failing.
fn two_passing() -> (Log, HookChain) {
    chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Pass)],
    )
}

/// Moves `open` into a thread that panics while holding it, so the `Open`
/// is dropped during unwinding, and checks that the thread did panic.
fn drop_while_unwinding(open: Open<StreamInfo>) {
    let joined = std::thread::spawn(move || {
        let _owned = open;
        panic!("{} while holding an Open", common::PANIC_MARK);
    })
    .join();
    assert!(joined.is_err());
}

/// The `(hook, kind)` of every failure in `err`, in order.
fn failures(err: &MultiError) -> Vec<(String, &'static str)> {
    err.errors
        .iter()
        .map(|e| (e.hook.clone(), common::kind_label(&e.kind)))
        .collect()
}

/// The log entries that end with `suffix`.
fn ending(log: &Log, suffix: &str) -> Vec<String> {
    log.entries()
        .into_iter()
        .filter(|e| e.ends_with(suffix))
        .collect()
}

// ---------------------------------------------------------------------------
// server_start / server_stop

#[test]
fn server_start_calls_every_hook_in_order() {
    for strategy in [
        ErrorStrategy::StopOnError,
        ErrorStrategy::CollectAndContinue,
    ] {
        let (log, chain) = chain_of(
            strategy,
            &[("a", Act::Pass), ("b", Act::Pass), ("c", Act::Pass)],
        );
        chain.server_start(&server_info()).expect("no hook fails");
        assert_eq!(
            log.take(),
            ["a:server_start", "b:server_start", "c:server_start"]
        );
    }
}

#[test]
fn server_start_stops_at_first_error_under_stop_on_error() {
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Pass),
            ("b", Act::Fail("disk full")),
            ("c", Act::Fail("unreached")),
        ],
    );
    let err = chain.server_start(&server_info()).expect_err("b fails");
    assert_eq!(failures(&err), [("b".to_owned(), "failed")]);
    assert_eq!(err.to_string(), "1 hook failed: hook 'b' failed: disk full");
    // c's on_server_start never ran, but every hook heard about b's failure.
    assert_eq!(
        log.take(),
        [
            "a:server_start",
            "b:server_start",
            "a:error server hook=b failed",
            "b:error server hook=b failed",
            "c:error server hook=b failed",
        ]
    );
}

#[test]
fn server_start_panic_counts_as_failure_under_stop_on_error() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Panic), ("b", Act::Pass)],
    );
    let err = chain.server_start(&server_info()).expect_err("a panics");
    assert_eq!(failures(&err), [("a".to_owned(), "panicked")]);
    let text = err.to_string();
    assert!(
        text.starts_with("1 hook failed: hook 'a' panicked: "),
        "{text}"
    );
    assert!(text.contains(common::PANIC_MARK), "{text}");
    assert_eq!(log.count("b:server_start"), 0);
}

#[test]
fn server_start_collects_every_failure_under_collect_and_continue() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::CollectAndContinue,
        &[
            ("a", Act::Fail("no config")),
            ("ok", Act::Pass),
            ("b", Act::Panic),
            ("c", Act::Fail("no port")),
        ],
    );
    let err = chain
        .server_start(&server_info())
        .expect_err("three hooks fail");
    assert_eq!(
        failures(&err),
        [
            ("a".to_owned(), "failed"),
            ("b".to_owned(), "panicked"),
            ("c".to_owned(), "failed"),
        ]
    );
    assert_eq!(
        ending(&log, ":server_start"),
        [
            "a:server_start",
            "ok:server_start",
            "b:server_start",
            "c:server_start"
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("3 hooks failed: hook 'a' failed: no config; hook 'b' panicked: "),
        "{text}"
    );
    assert!(text.ends_with("; hook 'c' failed: no port"), "{text}");
    // Each failure reached every hook's on_error once.
    for hook in ["a", "ok", "b", "c"] {
        assert_eq!(
            log.matching(&format!("{hook}:error")),
            [
                format!("{hook}:error server hook=a failed"),
                format!("{hook}:error server hook=b panicked"),
                format!("{hook}:error server hook=c failed"),
            ]
        );
    }
}

#[test]
fn multi_error_display_names_every_hook() {
    let (_log, chain) = chain_of(
        ErrorStrategy::CollectAndContinue,
        &[("a", Act::Fail("no config")), ("b", Act::Fail("no port"))],
    );
    let err = chain.server_start(&server_info()).expect_err("both fail");
    assert_eq!(err.errors.len(), 2);
    assert_eq!(
        err.to_string(),
        "2 hooks failed: hook 'a' failed: no config; hook 'b' failed: no port"
    );
    assert_eq!(err.errors[0].to_string(), "hook 'a' failed: no config");
    match &err.errors[1].kind {
        HookErrorKind::Failed(source) => assert_eq!(source.to_string(), "no port"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn server_stop_runs_every_hook_whatever_the_strategy() {
    for strategy in [
        ErrorStrategy::StopOnError,
        ErrorStrategy::CollectAndContinue,
    ] {
        let (log, chain) = chain_of(
            strategy,
            &[
                ("a", Act::Fail("flush failed")),
                ("b", Act::Pass),
                ("c", Act::Fail("gone")),
            ],
        );
        let err = chain.server_stop(&server_info()).expect_err("a and c fail");
        assert_eq!(
            failures(&err),
            [("a".to_owned(), "failed"), ("c".to_owned(), "failed")]
        );
        assert_eq!(
            ending(&log, ":server_stop"),
            ["a:server_stop", "b:server_stop", "c:server_stop"],
            "{strategy:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Open / close balance

#[test]
fn close_fires_exactly_once_with_the_given_reason() {
    let (log, chain) = two_passing();

    let open = chain.open_stream(stream()).expect("opens");
    assert_eq!(log.take(), ["a:stream_open", "b:stream_open"]);
    open.close(CloseReason::Hook(Reason::limit_reached("quota")));
    // `close` consumes the handle; its Drop must not fire a second event.
    assert_eq!(
        log.take(),
        [
            "a:stream_close hook in=0 out=0 streams=1",
            "b:stream_close hook in=0 out=0 streams=1"
        ]
    );

    let open = open_client(&chain, client()).expect("opens");
    open.close(CloseReason::ConnectionLost);
    assert_eq!(
        log.take(),
        [
            "a:client_connect",
            "b:client_connect",
            "a:client_close connection_lost in=0 out=0 streams=0",
            "b:client_close connection_lost in=0 out=0 streams=0",
        ]
    );

    let open = chain.open_tunnel(tunnel_of(&client(), 9)).expect("opens");
    open.close(CloseReason::Shutdown);
    assert_eq!(
        log.take(),
        [
            "a:tunnel_open",
            "b:tunnel_open",
            "a:tunnel_close shutdown in=0 out=0 streams=0",
            "b:tunnel_close shutdown in=0 out=0 streams=0",
        ]
    );
}

#[test]
fn close_delivers_the_exact_reason() {
    #[derive(Default)]
    struct Reasons(Mutex<Vec<CloseReason>>);
    impl Hook for Reasons {
        fn name(&self) -> &str {
            "reasons"
        }
        fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
            self.0.lock().unwrap().push(end.reason.clone());
            Ok(())
        }
    }
    let hook = Arc::new(Reasons::default());
    let chain = HookChain::builder().shared(hook.clone()).build();
    let reasons = [
        CloseReason::Finished,
        CloseReason::Hook(Reason::forbidden("x")),
        CloseReason::TargetUnreachable("connection refused".into()),
        CloseReason::Error("reset".into()),
    ];
    for r in &reasons {
        chain.open_stream(stream()).expect("opens").close(r.clone());
    }
    drop(chain.open_stream(stream()).expect("opens"));
    let mut expected = reasons.to_vec();
    expected.push(CloseReason::Aborted);
    assert_eq!(*hook.0.lock().unwrap(), expected);
}

#[test]
fn dropping_an_open_fires_aborted_once() {
    let (log, chain) = two_passing();

    let open = chain.open_tunnel(tunnel_of(&client(), 1)).expect("opens");
    assert_eq!(open.info().id, reitunnel_hooks::TunnelId(1));
    assert_eq!(open.chain().names(), ["a", "b"]);
    log.take();
    drop(open);
    assert_eq!(
        log.take(),
        [
            "a:tunnel_close aborted in=0 out=0 streams=0",
            "b:tunnel_close aborted in=0 out=0 streams=0"
        ]
    );

    // Also when the owning thread panics.
    let _quiet = QuietPanics::new();
    let open = chain.open_stream(stream()).expect("opens");
    log.take();
    drop_while_unwinding(open);
    assert_eq!(
        log.take(),
        [
            "a:stream_close aborted in=0 out=0 streams=1",
            "b:stream_close aborted in=0 out=0 streams=1"
        ]
    );
}

#[test]
fn close_observer_panicking_while_the_owner_unwinds_does_not_abort() {
    let _quiet = QuietPanics::new();
    let (log, chain) = common::chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Panic), ("b", Act::Pass)],
        Rec::close,
    );
    let open = chain.open_stream(stream()).expect("opens");
    log.take();
    // The Open's Drop runs during unwinding and a hook panics inside it; the
    // chain must catch that second panic (otherwise the process aborts).
    drop_while_unwinding(open);
    assert_eq!(
        log.take(),
        [
            "a:stream_close aborted in=0 out=0 streams=1",
            "a:error stream hook=a panicked",
            "b:error stream hook=a panicked",
            "b:stream_close aborted in=0 out=0 streams=1",
        ]
    );
}

#[test]
fn refused_subject_gets_no_close_event() {
    let (log, chain) = common::chain_of(
        ErrorStrategy::StopOnError,
        &[("a", Act::Pass), ("b", Act::Reject("no"))],
        Rec::gate,
    );
    let _ = chain.open_stream(stream()).expect_err("b rejects");
    let _ = chain
        .open_tunnel(tunnel_of(&client(), 1))
        .expect_err("b rejects");
    assert!(log.containing("_close").is_empty(), "{:?}", log.entries());
}

/// Records the totals of every close, and what the parent meters held when
/// each stream close was delivered.
#[derive(Default)]
struct Totaller {
    streams: Mutex<Vec<(Totals, Totals, Totals)>>,
    tunnels: Mutex<Vec<Totals>>,
    clients: Mutex<Vec<Totals>>,
}

impl Hook for Totaller {
    fn name(&self) -> &str {
        "totaller"
    }
    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let (s, t) = (end.stream, end.totals);
        let tunnel_now = s.tunnel.meter.totals(s.tunnel.opened_at);
        let client_now = s.tunnel.client.meter.totals(s.tunnel.client.opened_at);
        self.streams
            .lock()
            .unwrap()
            .push((*t, tunnel_now, client_now));
        Ok(())
    }
    fn on_tunnel_close(&self, _: &TunnelInfo, _: &CloseReason, t: &Totals) -> HookResult {
        self.tunnels.lock().unwrap().push(*t);
        Ok(())
    }
    fn on_client_disconnect(
        &self,
        _: &reitunnel_hooks::ClientInfo,
        _: &CloseReason,
        t: &Totals,
    ) -> HookResult {
        self.clients.lock().unwrap().push(*t);
        Ok(())
    }
}

fn bytes(t: &Totals) -> (u64, u64, u64) {
    (t.bytes_in, t.bytes_out, t.streams)
}

#[test]
fn stream_bytes_roll_up_into_tunnel_and_client_before_their_close() {
    let hook = Arc::new(Totaller::default());
    let chain = HookChain::builder().shared(hook.clone()).build();

    let c = client();
    let client_open = open_client(&chain, c.clone()).expect("client");
    let t1 = chain.open_tunnel(tunnel_of(&c, 1)).expect("tunnel 1");
    let t2 = chain.open_tunnel(tunnel_of(&c, 2)).expect("tunnel 2");

    let s1 = chain.open_stream(stream_of(t1.info(), 1)).expect("s1");
    let s2 = chain.open_stream(stream_of(t1.info(), 2)).expect("s2");
    let s3 = chain.open_stream(stream_of(t2.info(), 3)).expect("s3");
    s1.info().meter.add(Direction::Ingress, 100);
    s1.info().meter.add(Direction::Egress, 1_000);
    s2.info().meter.add(Direction::Ingress, 20);
    s2.info().meter.add(Direction::Egress, 2);
    s2.info().meter.add(Direction::Ingress, 5);
    s3.info().meter.add(Direction::Egress, 7);

    // Nothing reaches the parents while streams are open.
    assert_eq!(
        bytes(&t1.info().meter.totals(t1.info().opened_at)),
        (0, 0, 0)
    );

    s1.close(CloseReason::Finished);
    drop(s2); // aborted streams count too
    s3.close(CloseReason::Finished);
    {
        let streams = hook.streams.lock().unwrap();
        let seen: Vec<_> = streams
            .iter()
            .map(|(s, t, c)| (bytes(s), bytes(t), bytes(c)))
            .collect();
        assert_eq!(
            seen,
            [
                // stream's own totals, then its tunnel's and client's meters
                // as seen from inside its close event: already included.
                ((100, 1_000, 1), (100, 1_000, 1), (100, 1_000, 1)),
                ((25, 2, 1), (125, 1_002, 2), (125, 1_002, 2)),
                ((0, 7, 1), (0, 7, 1), (125, 1_009, 3)),
            ]
        );
    }

    t1.close(CloseReason::Finished);
    t2.close(CloseReason::Finished);
    let tunnels: Vec<_> = hook.tunnels.lock().unwrap().iter().map(bytes).collect();
    // Each tunnel's totals are the exact sum of its streams'.
    assert_eq!(tunnels, [(125, 1_002, 2), (0, 7, 1)]);

    client_open.close(CloseReason::Finished);
    let clients: Vec<_> = hook.clients.lock().unwrap().iter().map(bytes).collect();
    // The client's are the sum of all its streams', counted once (not once
    // more through its tunnels).
    assert_eq!(clients, [(125, 1_009, 3)]);
}

#[test]
fn close_observers_run_on_every_hook_even_when_earlier_ones_fail() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[
            ("a", Act::Fail("audit log full")),
            ("b", Act::Panic),
            ("c", Act::Pass),
        ],
    );

    chain
        .open_stream(stream())
        .expect("opens")
        .close(CloseReason::Finished);
    assert_eq!(
        log.take(),
        [
            "a:stream_open",
            "b:stream_open",
            "c:stream_open",
            "a:stream_close finished in=0 out=0 streams=1",
            "a:error stream hook=a failed",
            "b:error stream hook=a failed",
            "c:error stream hook=a failed",
            "b:stream_close finished in=0 out=0 streams=1",
            "a:error stream hook=b panicked",
            "b:error stream hook=b panicked",
            "c:error stream hook=b panicked",
            "c:stream_close finished in=0 out=0 streams=1",
        ]
    );

    // Same for tunnels and clients, and for the implicit close on drop.
    drop(chain.open_tunnel(tunnel_of(&client(), 1)).expect("opens"));
    assert_eq!(
        log.containing("tunnel_close aborted").len(),
        3,
        "{:?}",
        log.entries()
    );
    open_client(&chain, client())
        .expect("opens")
        .close(CloseReason::Shutdown);
    assert_eq!(
        log.containing("client_close shutdown").len(),
        3,
        "{:?}",
        log.entries()
    );
}
