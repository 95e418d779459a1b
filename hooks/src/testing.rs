//! A recording hook for tests: [`Recorder`] keeps every event it sees, in
//! order, and lets a test wait for a condition on them instead of sleeping;
//! [`assert_balanced`] checks the record for the promise every chain keeps
//! (each open has exactly one close, leaf first); [`StreamGate`] refuses
//! or panics at every visitor, to test what a refusal or a failing hook
//! does. Our own end-to-end tests use these; so can yours. A test helper,
//! not for production: it takes a lock per event, data chunks included.
//!
//! ```
//! use reitunnel_hooks::testing::{assert_balanced, Recorded, Recorder};
//! use reitunnel_hooks::*;
//! use std::sync::Arc;
//!
//! let rec = Recorder::new();
//! let chain = HookChain::builder().shared(rec.clone()).build();
//! let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse().unwrap()));
//! let client = chain.open_client(alice, &Login { nonce: &[0; 32], proof: &[0; 32] }).unwrap();
//! client.close(CloseReason::Finished);
//! let events = rec.events();
//! assert!(matches!(&events[0], Recorded::Connect(ClientId(1), name) if name == "alice"));
//! assert_balanced(&events);
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{
    AdminAction, ClientId, ClientInfo, CloseReason, DataEvent, Direction, ErrorEvent, Gate, Hook,
    HookResult, Reason, Rejection, Scope, StreamEnd, StreamId, StreamInfo, Totals, TunnelId,
    TunnelInfo, Verdict,
};

/// How long [`Recorder::wait_for`] waits before it fails the test: a guard
/// against a hang, never a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One recorded hook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A client opened (its gates passed): its id and name.
    Connect(ClientId, String),
    /// A client closed: the close reason's label and its totals.
    Disconnect(ClientId, String, Totals),
    /// A tunnel opened, of this client.
    TunnelOpen(TunnelId, ClientId),
    /// A tunnel closed: the reason's label and its totals.
    TunnelClose(TunnelId, String, Totals),
    /// A stream opened, in this tunnel.
    StreamOpen(StreamId, TunnelId),
    /// A stream closed: the reason's label and its totals.
    StreamClose(StreamId, String, Totals),
    /// A chunk of this many bytes went this way.
    Data(StreamId, Direction, usize),
    /// Something was refused, by a hook or by `"server"`.
    Rejected {
        /// Who refused.
        by: String,
        /// The reason, as displayed.
        reason: String,
    },
    /// An `on_error` event: the scope's kind and the error.
    Error(String),
    /// An operator's action: what, on whom, and how it went.
    Admin {
        /// `kick`, `close_tunnel`.
        action: String,
        /// The client's name or the tunnel's id.
        target: String,
        /// The outcome, in words.
        outcome: String,
    },
}

/// Records every event in order; tests wait for conditions on the record
/// ([`Recorder::wait_for`]) instead of sleeping.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Recorded>>,
    changed: Notify,
}

impl Recorder {
    /// A new, empty recorder, shared: give the chain a clone
    /// ([`HookChainBuilder::shared`](crate::HookChainBuilder::shared)) and keep one to read.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    fn push(&self, ev: Recorded) {
        self.events.lock().unwrap().push(ev);
        self.changed.notify_waiters();
    }

    /// Everything recorded so far, in order.
    pub fn events(&self) -> Vec<Recorded> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the record, and returns it; panics,
    /// naming `what` and showing the record, after [`PATIENCE`].
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let events = self.events.lock().unwrap();
                    if pred(&events) {
                        return events.clone();
                    }
                }
                notified.await;
            }
        };
        match tokio::time::timeout(PATIENCE, wait).await {
            Ok(events) => events,
            Err(_) => panic!("timed out waiting for {what}; events: {:#?}", self.events()),
        }
    }

    /// How many refusals (`on_rejected`) gave exactly `reason`.
    pub fn rejections(&self, reason: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Recorded::Rejected { reason: r, .. } if r == reason))
            .count()
    }

    /// The `on_error` events so far.
    pub fn errors(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::Error(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

impl Hook for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn on_open(&self, scope: Scope<'_>) {
        self.push(match scope {
            Scope::Client(c) => Recorded::Connect(c.id, c.name.to_string()),
            Scope::Tunnel(t) => Recorded::TunnelOpen(t.id, t.client.id),
            Scope::Stream(s) => Recorded::StreamOpen(s.id, s.tunnel.id),
            Scope::Server => return,
        });
    }
    fn on_client_disconnect(&self, c: &ClientInfo, r: &CloseReason, t: &Totals) -> HookResult {
        self.push(Recorded::Disconnect(
            c.id,
            r.label().to_owned(),
            zero_time(t),
        ));
        Ok(())
    }
    fn on_tunnel_close(&self, t: &TunnelInfo, r: &CloseReason, tot: &Totals) -> HookResult {
        self.push(Recorded::TunnelClose(
            t.id,
            r.label().to_owned(),
            zero_time(tot),
        ));
        Ok(())
    }
    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        self.push(Recorded::StreamClose(
            end.stream.id,
            end.reason.label().to_owned(),
            zero_time(end.totals),
        ));
        Ok(())
    }
    fn on_data(&self, e: &DataEvent<'_>) -> Verdict {
        self.push(Recorded::Data(e.stream.id, e.direction, e.data.len()));
        Verdict::Continue
    }
    fn on_rejected(&self, r: &Rejection<'_>) {
        self.push(Recorded::Rejected {
            by: r.by.to_owned(),
            reason: r.reason.to_string(),
        });
    }
    fn on_error(&self, e: &ErrorEvent<'_>) {
        self.push(Recorded::Error(format!("{}: {}", e.scope.kind(), e.error)));
    }
    fn on_admin(&self, a: &AdminAction<'_>) {
        self.push(Recorded::Admin {
            action: a.action.to_owned(),
            target: a.target.to_owned(),
            outcome: a.outcome.to_owned(),
        });
    }
}

/// Durations differ run to run; events compare without them.
fn zero_time(t: &Totals) -> Totals {
    Totals {
        duration: Duration::ZERO,
        ..*t
    }
}

/// A stream gate named `name` that answers every visitor the same way.
#[derive(Debug, Clone, Copy)]
pub enum StreamGate {
    /// Refuses with `Forbidden` and this reason.
    Refuse {
        /// Its name, the `by` of the rejection.
        name: &'static str,
        /// The reason the visitor's refusal carries.
        reason: &'static str,
    },
    /// Panics with this message (the chain isolates it and reports it).
    Panic {
        /// Its name, which the reported failure names.
        name: &'static str,
        /// The panic's message.
        message: &'static str,
    },
}

impl Hook for StreamGate {
    fn name(&self) -> &str {
        match self {
            StreamGate::Refuse { name, .. } | StreamGate::Panic { name, .. } => name,
        }
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_stream_open(&self, _: &StreamInfo) -> Gate {
        match self {
            StreamGate::Refuse { reason, .. } => Gate::Refuse(Reason::forbidden(*reason)),
            StreamGate::Panic { message, .. } => panic!("{message}"),
        }
    }
}

/// Every open has exactly one close, and closes run leaf first: a stream
/// before its tunnel, a tunnel before its client.
pub fn assert_balanced(events: &[Recorded]) {
    let mut open_at: HashMap<String, usize> = HashMap::new();
    let mut close_at: HashMap<String, usize> = HashMap::new();
    let mut parent: HashMap<String, String> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let (key, opening) = match e {
            Recorded::Connect(c, _) => (format!("{c}"), true),
            Recorded::Disconnect(c, ..) => (format!("{c}"), false),
            Recorded::TunnelOpen(t, c) => {
                parent.insert(format!("{t}"), format!("{c}"));
                (format!("{t}"), true)
            }
            Recorded::TunnelClose(t, ..) => (format!("{t}"), false),
            Recorded::StreamOpen(s, t) => {
                parent.insert(format!("{s}"), format!("{t}"));
                (format!("{s}"), true)
            }
            Recorded::StreamClose(s, ..) => (format!("{s}"), false),
            _ => continue,
        };
        let map = if opening { &mut open_at } else { &mut close_at };
        assert!(
            map.insert(key.clone(), i).is_none(),
            "{key} {} twice: {events:#?}",
            if opening { "opened" } else { "closed" }
        );
    }
    // Opens are recorded from `on_open`, after every gate: each must close.
    let unclosed: Vec<_> = open_at
        .keys()
        .filter(|k| !close_at.contains_key(*k))
        .collect();
    assert!(
        unclosed.is_empty(),
        "never closed: {unclosed:?}\n{events:#?}"
    );
    for (key, &closed) in &close_at {
        let opened = open_at
            .get(key)
            .unwrap_or_else(|| panic!("{key} closed but never opened"));
        assert!(opened < &closed, "{key} closed before it opened");
        if let Some(p) = parent.get(key) {
            let parent_closed = close_at.get(p).copied().unwrap_or(usize::MAX);
            assert!(
                closed < parent_closed,
                "{key} closed after its parent {p}: {events:#?}"
            );
        }
    }
}
