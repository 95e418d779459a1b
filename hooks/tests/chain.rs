//! Gate dispatch through `HookChain::open_client` / `open_tunnel` /
//! `open_stream`: ordering, short-circuiting, `on_rejected` delivery and
//! panic isolation under both error strategies.

mod common;

use common::{client, stream, tunnel, Act, Creds, Log, QuietPanics, Rec, PANIC_MARK};
use reitunnel_hooks::{
    CloseReason, ErrorStrategy, HookChain, Reason, Refusal, RefuseCode, Scope, SERVER,
};

/// Which gate a test goes through.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Client,
    Tunnel,
    Stream,
}

const KINDS: [Kind; 3] = [Kind::Client, Kind::Tunnel, Kind::Stream];

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
            Kind::Client => {
                let creds = Creds::new("token", "alice");
                let open = chain.open_client(client(), &creds.login())?;
                open.close(CloseReason::Finished);
            }
            Kind::Tunnel => chain.open_tunnel(tunnel())?.close(CloseReason::Finished),
            Kind::Stream => chain.open_stream(stream())?.close(CloseReason::Finished),
        }
        Ok(())
    }
}

fn three(log: &Log, strategy: ErrorStrategy, h1: Act, h2: Act, h3: Act) -> HookChain {
    HookChain::builder()
        .hook(Rec::new("h1", log).gate(h1))
        .hook(Rec::new("h2", log).gate(h2))
        .hook(Rec::new("h3", log).gate(h3))
        .strategy(strategy)
        .build()
}

fn rejected(hook: &str, kind: Kind, by: &str, passed: bool, refusal: &Refusal) -> String {
    format!(
        "{hook}:rejected {} by={by} passed={passed} msg={}",
        kind.scope(),
        refusal.reason.message
    )
}

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
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::StopOnError,
            Act::Pass,
            Act::Pass,
            Act::Pass,
        );
        kind.open(&chain)
            .unwrap_or_else(|r| panic!("{kind:?} refused: {r:?}"));
        let g = kind.gate();
        assert_eq!(
            log.take(),
            [
                format!("h1:{g}"),
                format!("h2:{g}"),
                format!("h3:{g}"),
                closed("h1", kind),
                closed("h2", kind),
                closed("h3", kind),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn reject_from_second_of_three_short_circuits() {
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::StopOnError,
            Act::Pass,
            Act::Reject("no entry"),
            Act::Pass,
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
        let g = kind.gate();
        // h3's gate is never asked; every hook hears on_rejected exactly
        // once, and only h1 (whose gate ran and passed) has passed_gate.
        // Nothing refused gets a close event.
        assert_eq!(
            log.take(),
            [
                format!("h1:{g}"),
                format!("h2:{g}"),
                rejected("h1", kind, "h2", true, &refusal),
                rejected("h2", kind, "h2", false, &refusal),
                rejected("h3", kind, "h2", false, &refusal),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn reject_from_first_hook_asks_no_one_else() {
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::StopOnError,
            Act::Reject("first"),
            Act::Pass,
            Act::Pass,
        );
        let refusal = kind.open(&chain).expect_err("h1 rejects");
        assert_eq!(refusal.by, "h1");
        let g = kind.gate();
        assert_eq!(
            log.take(),
            [
                format!("h1:{g}"),
                rejected("h1", kind, "h1", false, &refusal),
                rejected("h2", kind, "h1", false, &refusal),
                rejected("h3", kind, "h1", false, &refusal),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn reject_short_circuits_under_collect_and_continue_too() {
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::CollectAndContinue,
            Act::Pass,
            Act::Reject("no entry"),
            Act::Pass,
        );
        let refusal = kind.open(&chain).expect_err("h2 rejects");
        assert_eq!(refusal.by, "h2");
        assert_eq!(log.count(&format!("h3:{}", kind.gate())), 0, "{kind:?}");
        assert_eq!(log.containing(":rejected").len(), 3, "{kind:?}");
    }
}

#[test]
fn close_from_a_gate_refuses_and_throttle_lets_through() {
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::StopOnError,
            Act::Throttle(std::time::Duration::from_secs(5)),
            Act::Close("closing"),
            Act::Pass,
        );
        let refusal = kind.open(&chain).expect_err("a gate's Close refuses");
        assert_eq!(refusal.by, "h2");
        assert_eq!(refusal.reason, Reason::forbidden("closing"));
        assert_eq!(log.count(&format!("h3:{}", kind.gate())), 0);
        // The throttling gate counts as passed.
        assert!(log
            .entries()
            .contains(&rejected("h1", kind, "h2", true, &refusal)));
    }
}

#[test]
fn panicking_gate_fails_closed_under_stop_on_error() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::StopOnError,
            Act::Pass,
            Act::Panic,
            Act::Pass,
        );
        let refusal = kind.open(&chain).expect_err("a panicking gate refuses");
        assert_eq!(refusal.by, "h2", "{kind:?}");
        assert_eq!(refusal.reason.code, RefuseCode::Other, "{kind:?}");
        let msg = &refusal.reason.message;
        assert!(msg.contains("h2"), "{kind:?}: {msg}");
        assert!(msg.contains("panicked"), "{kind:?}: {msg}");
        assert!(msg.contains(PANIC_MARK), "{kind:?}: {msg}");

        let g = kind.gate();
        let s = kind.scope();
        assert_eq!(
            log.take(),
            [
                format!("h1:{g}"),
                format!("h2:{g}"),
                // The failure is reported to every hook, naming h2 ...
                format!("h1:error {s} hook=h2 panicked"),
                format!("h2:error {s} hook=h2 panicked"),
                format!("h3:error {s} hook=h2 panicked"),
                // ... then it is a refusal by h2; h3 is never asked.
                rejected("h1", kind, "h2", true, &refusal),
                rejected("h2", kind, "h2", false, &refusal),
                rejected("h3", kind, "h2", false, &refusal),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn panicking_gate_fails_open_under_collect_and_continue() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::CollectAndContinue,
            Act::Pass,
            Act::Panic,
            Act::Pass,
        );
        kind.open(&chain)
            .unwrap_or_else(|r| panic!("{kind:?}: the failing hook fails open, got {r:?}"));
        let g = kind.gate();
        let s = kind.scope();
        assert_eq!(
            log.take(),
            [
                format!("h1:{g}"),
                format!("h2:{g}"),
                format!("h1:error {s} hook=h2 panicked"),
                format!("h2:error {s} hook=h2 panicked"),
                format!("h3:error {s} hook=h2 panicked"),
                format!("h3:{g}"),
                closed("h1", kind),
                closed("h2", kind),
                closed("h3", kind),
            ],
            "{kind:?}"
        );
    }
}

#[test]
fn failed_gate_does_not_count_as_passed_when_a_later_gate_rejects() {
    let _quiet = QuietPanics::new();
    for kind in KINDS {
        let log = Log::new();
        let chain = three(
            &log,
            ErrorStrategy::CollectAndContinue,
            Act::Panic,
            Act::Pass,
            Act::Reject("later"),
        );
        let refusal = kind.open(&chain).expect_err("h3 rejects");
        assert_eq!(refusal.by, "h3");
        assert_eq!(refusal.reason, Reason::forbidden("later"));
        assert_eq!(
            log.containing(":rejected"),
            [
                rejected("h1", kind, "h3", false, &refusal),
                rejected("h2", kind, "h3", true, &refusal),
                rejected("h3", kind, "h3", false, &refusal),
            ],
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
            "h1:stream_open".to_owned(),
            "h2:stream_open".to_owned(),
            rejected("h1", Kind::Stream, "h2", true, &refusal),
            "h1:error stream hook=h1 panicked".to_owned(),
            "h2:error stream hook=h1 panicked".to_owned(),
            "h3:error stream hook=h1 panicked".to_owned(),
            rejected("h2", Kind::Stream, "h2", false, &refusal),
            rejected("h3", Kind::Stream, "h2", false, &refusal),
        ]
    );
}

#[test]
fn server_refusal_reaches_every_hook_without_asking_gates() {
    let log = Log::new();
    let chain = three(
        &log,
        ErrorStrategy::StopOnError,
        Act::Pass,
        Act::Pass,
        Act::Pass,
    );
    let t = tunnel();
    let refusal = chain.refuse(Scope::Tunnel(&t), Reason::limit_reached("too many tunnels"));
    assert_eq!(refusal.by, SERVER);
    assert_eq!(refusal.reason.code, RefuseCode::LimitReached);
    assert_eq!(
        log.take(),
        [
            rejected("h1", Kind::Tunnel, "server", false, &refusal),
            rejected("h2", Kind::Tunnel, "server", false, &refusal),
            rejected("h3", Kind::Tunnel, "server", false, &refusal),
        ]
    );
}

#[test]
fn error_reaches_every_hook_even_if_one_on_error_panics() {
    let _quiet = QuietPanics::new();
    let log = Log::new();
    let chain = HookChain::builder()
        .hook(Rec::new("h1", &log).error(Act::Panic))
        .hook(Rec::new("h2", &log))
        .build();
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
