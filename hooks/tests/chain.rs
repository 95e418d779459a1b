//! Gate dispatch through `HookChain::open_client` / `open_tunnel` /
//! `open_stream`: ordering, short-circuiting, `on_rejected` delivery and
//! panic isolation under both error strategies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    addr, chain_of, client, client_at, errors_heard, open_client, stream, tunnel, Act, Log,
    QuietPanics, Rec, PANIC_MARK,
};
use reitunnel_hooks::{
    ClientInfo, CloseReason, ErrorStrategy, Hook, HookChain, Reason, Refusal, RefuseCode, Scope,
    SERVER,
};

/// Which gate a test goes through.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Client,
    Tunnel,
    Stream,
}

const KINDS: [Kind; 3] = [Kind::Client, Kind::Tunnel, Kind::Stream];

/// The hooks of [`three`], in chain order.
const HOOKS: [&str; 3] = ["h1", "h2", "h3"];

impl Kind {
    /// The `Rec` log label of the gate method.
    fn gate(self) -> &'static str {
        match self {
            Kind::Client => "client_connect",
            Kind::Tunnel => "tunnel_open",
            Kind::Stream => "stream_open",
        }
    }

    /// The `Rec` log label of the scope and of the close event.
    fn scope(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Tunnel => "tunnel",
            Kind::Stream => "stream",
        }
    }

    /// Opens a fresh subject of this kind on `chain`; on success closes it
    /// with `Finished` at once.
    fn open(self, chain: &HookChain) -> Result<(), Refusal> {
        match self {
            Kind::Client => open_client(chain, client())?.close(CloseReason::Finished),
            Kind::Tunnel => chain.open_tunnel(tunnel())?.close(CloseReason::Finished),
            Kind::Stream => chain.open_stream(stream())?.close(CloseReason::Finished),
        }
        Ok(())
    }

    /// The gate entries of the first `n` hooks of [`three`].
    fn gates(self, n: usize) -> Vec<String> {
        HOOKS[..n]
            .iter()
            .map(|h| format!("{h}:{}", self.gate()))
            .collect()
    }

    /// The `on_error` entries of all three hooks when h2 panicked in this scope.
    fn h2_panic_heard(self) -> Vec<String> {
        errors_heard(&HOOKS, self.scope(), "h2", "panicked")
    }

    /// The close entries of all three hooks for a subject closed `Finished`
    /// with no bytes.
    fn closes(self) -> Vec<String> {
        HOOKS.iter().map(|h| closed(h, self)).collect()
    }

    /// The `on_rejected` entries of all three hooks for `refusal` by `by`,
    /// with each hook's `passed_gate` flag.
    fn rejections(self, by: &str, passed: [bool; 3], refusal: &Refusal) -> Vec<String> {
        HOOKS
            .iter()
            .zip(passed)
            .map(|(h, p)| rejected(h, self, by, p, refusal))
            .collect()
    }
}

/// A log and a chain of the gates h1, h2, h3 answering `acts`, in order.
fn three(strategy: ErrorStrategy, [h1, h2, h3]: [Act; 3]) -> (Log, HookChain) {
    chain_of(strategy, &[("h1", h1), ("h2", h2), ("h3", h3)], Rec::gate)
}

/// The `on_rejected` entry `hook` logs for `refusal` of a `kind` subject.
fn rejected(hook: &str, kind: Kind, by: &str, passed: bool, refusal: &Refusal) -> String {
    format!(
        "{hook}:rejected {} by={by} passed={passed} msg={}",
        kind.scope(),
        refusal.reason.message
    )
}

/// The close entry `hook` logs for a `kind` subject closed `Finished` with no bytes.
fn closed(hook: &str, kind: Kind) -> String {
    format!(
        "{hook}:{}_close finished in=0 out=0 streams={}",
        kind.scope(),
        u8::from(matches!(kind, Kind::Stream))
    )
}

#[test]
fn default_strategy_is_stop_on_error() {
    assert_eq!(ErrorStrategy::default(), ErrorStrategy::StopOnError);
    let chain = HookChain::builder().build();
    assert_eq!(chain.strategy(), ErrorStrategy::StopOnError);
    assert!(chain.names().is_empty());
    assert!(HookChain::default().names().is_empty());
}

#[test]
fn names_are_in_builder_order() {
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Rec::new("b", &log))
        .shared(std::sync::Arc::new(Rec::new("a", &log)))
        .hook(Rec::new("c", &log))
        .strategy(ErrorStrategy::CollectAndContinue)
        .build();
    assert_eq!(chain.names(), ["b", "a", "c"]);
    assert_eq!(chain.strategy(), ErrorStrategy::CollectAndContinue);
    let debug = format!("{chain:?}");
    assert!(debug.contains("\"b\", \"a\", \"c\""), "{debug}");
    // A clone is the same chain.
    assert_eq!(chain.clone().names(), chain.names());
}

#[test]
fn all_gates_pass_in_order_then_close_reaches_every_hook() {
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::StopOnError,
            [Act::Pass, Act::Pass, Act::Pass],
        );
        kind.open(&chain)
            .unwrap_or_else(|r| panic!("{kind:?} refused: {r:?}"));
        assert_eq!(
            log.take(),
            [kind.gates(3), kind.closes()].concat(),
            "{kind:?}"
        );
    }
}

#[test]
fn reject_from_second_of_three_short_circuits() {
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::StopOnError,
            [Act::Pass, Act::Reject("no entry"), Act::Pass],
        );
        let refusal = kind.open(&chain).expect_err("h2 rejects");
        assert_eq!(
            refusal,
            Refusal {
                reason: Reason::forbidden("no entry"),
                by: "h2".to_owned(),
            },
            "{kind:?}"
        );
        // h3's gate is never asked; every hook hears on_rejected exactly
        // once, and only h1 (whose gate ran and passed) has passed_gate.
        // Nothing refused gets a close event.
        assert_eq!(
            log.take(),
            [
                kind.gates(2),
                kind.rejections("h2", [true, false, false], &refusal),
            ]
            .concat(),
            "{kind:?}"
        );
    }
}

#[test]
fn reject_from_first_hook_asks_no_one_else() {
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::StopOnError,
            [Act::Reject("first"), Act::Pass, Act::Pass],
        );
        let refusal = kind.open(&chain).expect_err("h1 rejects");
        assert_eq!(refusal.by, "h1");
        assert_eq!(
            log.take(),
            [
                kind.gates(1),
                kind.rejections("h1", [false, false, false], &refusal),
            ]
            .concat(),
            "{kind:?}"
        );
    }
}

#[test]
fn reject_short_circuits_under_collect_and_continue_too() {
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::CollectAndContinue,
            [Act::Pass, Act::Reject("no entry"), Act::Pass],
        );
        let refusal = kind.open(&chain).expect_err("h2 rejects");
        assert_eq!(refusal.by, "h2");
        assert_eq!(log.count(&format!("h3:{}", kind.gate())), 0, "{kind:?}");
        assert_eq!(log.containing(":rejected").len(), 3, "{kind:?}");
    }
}

#[test]
fn panicking_gate_fails_closed_under_stop_on_error() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::StopOnError,
            [Act::Pass, Act::Panic, Act::Pass],
        );
        let refusal = kind.open(&chain).expect_err("a panicking gate refuses");
        assert_eq!(refusal.by, "h2", "{kind:?}");
        assert_eq!(refusal.reason.code, RefuseCode::Other, "{kind:?}");
        let msg = &refusal.reason.message;
        assert!(msg.contains("h2"), "{kind:?}: {msg}");
        assert!(msg.contains("panicked"), "{kind:?}: {msg}");
        assert!(msg.contains(PANIC_MARK), "{kind:?}: {msg}");

        assert_eq!(
            log.take(),
            [
                kind.gates(2),
                // The failure is reported to every hook, naming h2 ...
                kind.h2_panic_heard(),
                // ... then it is a refusal by h2; h3 is never asked.
                kind.rejections("h2", [true, false, false], &refusal),
            ]
            .concat(),
            "{kind:?}"
        );
    }
}

#[test]
fn panicking_gate_fails_open_under_collect_and_continue() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::CollectAndContinue,
            [Act::Pass, Act::Panic, Act::Pass],
        );
        kind.open(&chain)
            .unwrap_or_else(|r| panic!("{kind:?}: the failing hook fails open, got {r:?}"));
        assert_eq!(
            log.take(),
            [
                kind.gates(2),
                kind.h2_panic_heard(),
                vec![format!("h3:{}", kind.gate())],
                kind.closes(),
            ]
            .concat(),
            "{kind:?}"
        );
    }
}

#[test]
fn failed_gate_does_not_count_as_passed_when_a_later_gate_rejects() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let (log, chain) = three(
            ErrorStrategy::CollectAndContinue,
            [Act::Panic, Act::Pass, Act::Reject("later")],
        );
        let refusal = kind.open(&chain).expect_err("h3 rejects");
        assert_eq!(refusal.by, "h3");
        assert_eq!(refusal.reason, Reason::forbidden("later"));
        assert_eq!(
            log.containing(":rejected"),
            kind.rejections("h3", [false, true, false], &refusal),
            "{kind:?}"
        );
        assert_eq!(log.containing(":error").len(), 3, "{kind:?}");
    }
}

#[test]
fn panicking_on_rejected_is_isolated_and_reported() {
    let _quiet = QuietPanics::new();
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Rec::new("h1", &log).rejected(Act::Panic))
        .hook(Rec::new("h2", &log).gate(Act::Reject("no")))
        .hook(Rec::new("h3", &log))
        .build();
    let refusal = chain.open_stream(stream()).expect_err("h2 rejects");
    assert_eq!(refusal.by, "h2");
    assert_eq!(
        log.take(),
        [
            Kind::Stream.gates(2),
            vec![rejected("h1", Kind::Stream, "h2", true, &refusal)],
            errors_heard(&HOOKS, "stream", "h1", "panicked"),
            vec![
                rejected("h2", Kind::Stream, "h2", false, &refusal),
                rejected("h3", Kind::Stream, "h2", false, &refusal),
            ],
        ]
        .concat()
    );
}

#[test]
fn server_refusal_reaches_every_hook_without_asking_gates() {
    let (log, chain) = three(
        ErrorStrategy::StopOnError,
        [Act::Pass, Act::Pass, Act::Pass],
    );
    let t = tunnel();
    let refusal = chain.refuse(Scope::Tunnel(&t), Reason::limit_reached("too many tunnels"));
    assert_eq!(refusal.by, SERVER);
    assert_eq!(refusal.reason.code, RefuseCode::LimitReached);
    assert_eq!(
        log.take(),
        Kind::Tunnel.rejections("server", [false, false, false], &refusal)
    );
}

#[test]
fn error_reaches_every_hook_even_if_one_on_error_panics() {
    let _quiet = QuietPanics::new();
    let (log, chain) = chain_of(
        ErrorStrategy::StopOnError,
        &[("h1", Act::Panic), ("h2", Act::Pass)],
        Rec::error,
    );
    let err = std::io::Error::other("accept failed");
    chain.error(Scope::Server, &err);
    // Delivered once per hook; the panic inside on_error is not reported again.
    assert_eq!(
        log.take(),
        [
            "h1:error server other: accept failed",
            "h2:error server other: accept failed",
        ]
    );
}

/// Records each heartbeat it is told of; the first one panics.
#[derive(Default)]
struct Beats(std::sync::Mutex<Vec<Duration>>);

impl Hook for Beats {
    fn name(&self) -> &str {
        "beats"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_heartbeat(&self, _: &ClientInfo, rtt: Duration) {
        let mut seen = self.0.lock().unwrap();
        seen.push(rtt);
        if seen.len() == 1 {
            drop(seen);
            panic!("first heartbeat");
        }
    }
}

#[test]
fn a_heartbeat_is_stored_on_the_client_and_reaches_every_hook() {
    let _quiet = QuietPanics::new();
    let beats = Arc::new(Beats::default());
    let chain = HookChain::builder()
        .shared(beats.clone())
        .shared(beats.clone())
        .build();
    let alice = client_at(1, "alice", addr(1));
    assert_eq!(alice.rtt(), None);
    chain.heartbeat(&alice, Duration::from_micros(1500));
    assert_eq!(alice.rtt(), Some(Duration::from_micros(1500)));
    // The first hook's panic is contained; the second still hears it.
    assert_eq!(beats.0.lock().unwrap().len(), 2);
    chain.heartbeat(&alice, Duration::ZERO);
    assert_eq!(
        alice.rtt(),
        Some(Duration::from_micros(1)),
        "a zero round trip still reads as measured"
    );
}

/// Notes its starts and stops in a shared log; `fail` makes its start fail.
struct Starts {
    name: &'static str,
    fail: bool,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hook for Starts {
    fn name(&self) -> &str {
        self.name
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_server_start(&self, _: &reitunnel_hooks::ServerInfo) -> reitunnel_hooks::HookResult {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        if self.fail {
            return Err("no".into());
        }
        Ok(())
    }
    fn on_server_stop(&self, _: &reitunnel_hooks::ServerInfo) -> reitunnel_hooks::HookResult {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
        Ok(())
    }
}

#[test]
fn a_failed_start_is_undone_for_the_hooks_that_started() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = |name, fail| Starts {
        name,
        fail,
        log: log.clone(),
    };
    let server = reitunnel_hooks::ServerInfo {
        name: "t".into(),
        listen: addr(1),
    };
    let chain = HookChain::builder()
        .hook(hook("a", false))
        .hook(hook("b", false))
        .hook(hook("c", true))
        .hook(hook("d", false))
        .build();
    let err = chain.server_start_or_undo(&server).unwrap_err();
    assert!(err.to_string().contains("c"), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        ["start a", "start b", "start c", "stop b", "stop a"]
    );
}

#[test]
fn chains_combine_and_subtract_by_instance() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = |name| -> Arc<dyn Hook> {
        Arc::new(Starts {
            name,
            fail: false,
            log: log.clone(),
        })
    };
    let (a, b, c) = (shared("a"), shared("b"), shared("c"));
    let ab = HookChain::builder()
        .shared(a.clone())
        .shared(b.clone())
        .build();
    let bc = HookChain::builder()
        .shared(b.clone())
        .shared(c.clone())
        .build();
    assert_eq!(ab.without(&bc).names(), ["a"]);
    assert_eq!(ab.with(&bc).names(), ["a", "b", "c"]);
    assert_eq!(bc.prepend_shared(a.clone()).without(&ab).names(), ["c"]);
    // Another instance of the same kind of hook is another hook.
    let other_a = HookChain::builder().shared(shared("a")).build();
    assert_eq!(other_a.without(&ab).names(), ["a"]);
}
