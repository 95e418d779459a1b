//! Shared helpers for the hooks crate's integration tests: a scriptable
//! recording hook, fixture builders and a guard that silences deliberate panics.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::panic::{self, PanicHookInfo};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reitunnel_hooks::builtin::Counters;
use reitunnel_hooks::events::{Event, EventBus, EventSink};
use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, DataEvent, Direction, ErrorEvent, ErrorStrategy, Gate, Hook,
    HookChain, HookError, HookErrorKind, HookResult, Login, Open, Reason, Refusal, Rejection,
    ServerInfo, StreamEnd, StreamId, StreamInfo, Totals, TunnelId, TunnelInfo, TunnelKind, Verdict,
};
use reitunnel_proto::auth::{NONCE_LEN, PROOF_LEN};

/// Every deliberate panic message starts with this, so [`QuietPanics`] can
/// silence exactly those and still print real test failures.
pub const PANIC_MARK: &str = "deliberate test panic";

/// A log shared by the hooks of one chain, to check order across hooks.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Log::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, entry: String) {
        self.lock().push(entry);
    }

    /// All entries so far.
    pub fn entries(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// All entries so far, clearing the log.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    /// Entries that start with `prefix`.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Entries that contain `needle`.
    pub fn containing(&self, needle: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|e| e.contains(needle))
            .cloned()
            .collect()
    }

    /// How many entries start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.matching(prefix).len()
    }
}

/// What a scripted hook does when one of its methods is called.
#[derive(Clone, Debug, Default)]
pub enum Act {
    /// `Continue` / `Ok(())`.
    #[default]
    Pass,
    /// Gates: `Gate::Refuse(Reason::forbidden(msg))`.
    Reject(&'static str),
    /// Data: `Verdict::Close(Reason::forbidden(msg))`.
    Close(&'static str),
    /// Data: `Verdict::Throttle(d)`.
    Throttle(Duration),
    /// Observers return `Err(msg)`; gates and data treat it as `Pass`.
    Fail(&'static str),
    /// Panics with a message starting with [`PANIC_MARK`].
    Panic,
}

impl Act {
    fn gate(&self, hook: &str) -> Gate {
        match self {
            Act::Pass | Act::Fail(_) => Gate::Allow,
            Act::Reject(m) => Gate::Refuse(Reason::forbidden(*m)),
            Act::Close(_) | Act::Throttle(_) => panic!("{self:?} is a data verdict, not a gate's"),
            Act::Panic => panic!("{PANIC_MARK} in {hook}"),
        }
    }

    fn verdict(&self, hook: &str) -> Verdict {
        match self {
            Act::Pass | Act::Fail(_) => Verdict::Continue,
            Act::Close(m) => Verdict::Close(Reason::forbidden(*m)),
            Act::Throttle(d) => Verdict::Throttle(*d),
            Act::Reject(_) => panic!("{self:?} is a gate's answer, not a data verdict"),
            Act::Panic => panic!("{PANIC_MARK} in {hook}"),
        }
    }

    /// For methods without an answer: only `Panic` does anything.
    fn act(&self, hook: &str) {
        if let Act::Panic = self {
            panic!("{PANIC_MARK} in {hook}");
        }
    }

    fn result(&self, hook: &str) -> HookResult {
        match self {
            Act::Fail(m) => Err((*m).into()),
            Act::Panic => panic!("{PANIC_MARK} in {hook}"),
            _ => Ok(()),
        }
    }
}

/// A hook that records every call into a shared [`Log`] as `"<name>:<event>"`
/// and answers as scripted.
pub struct Rec {
    pub name: &'static str,
    pub log: Log,
    /// Answer of the three gates.
    pub gate: Act,
    /// Answer of `on_data`.
    pub data: Act,
    /// Answer of `on_server_start` / `on_server_stop`.
    pub server: Act,
    /// Answer of the three close observers.
    pub close: Act,
    /// Behaviour of `on_rejected` (only `Panic` matters).
    pub rejected: Act,
    /// Behaviour of `on_error` (only `Panic` matters).
    pub error: Act,
    pub wants_data: bool,
}

impl Rec {
    pub fn new(name: &'static str, log: &Log) -> Self {
        Rec {
            name,
            log: log.clone(),
            gate: Act::Pass,
            data: Act::Pass,
            server: Act::Pass,
            close: Act::Pass,
            rejected: Act::Pass,
            error: Act::Pass,
            wants_data: true,
        }
    }

    pub fn gate(mut self, act: Act) -> Self {
        self.gate = act;
        self
    }

    pub fn data(mut self, act: Act) -> Self {
        self.data = act;
        self
    }

    pub fn server(mut self, act: Act) -> Self {
        self.server = act;
        self
    }

    pub fn close(mut self, act: Act) -> Self {
        self.close = act;
        self
    }

    pub fn rejected(mut self, act: Act) -> Self {
        self.rejected = act;
        self
    }

    pub fn error(mut self, act: Act) -> Self {
        self.error = act;
        self
    }

    pub fn no_data(mut self) -> Self {
        self.wants_data = false;
        self
    }

    fn rec(&self, what: impl std::fmt::Display) {
        self.log.push(format!("{}:{what}", self.name));
    }
}

/// `"failed"` or `"panicked"`.
pub fn kind_label(kind: &HookErrorKind) -> &'static str {
    match kind {
        HookErrorKind::Failed(_) => "failed",
        HookErrorKind::Panicked(_) => "panicked",
    }
}

impl Hook for Rec {
    fn name(&self) -> &str {
        self.name
    }

    fn wants_data(&self) -> bool {
        self.wants_data
    }

    fn on_server_start(&self, _server: &ServerInfo) -> HookResult {
        self.rec("server_start");
        self.server.result(self.name)
    }

    fn on_server_stop(&self, _server: &ServerInfo) -> HookResult {
        self.rec("server_stop");
        self.server.result(self.name)
    }

    fn on_client_connect(&self, _client: &ClientInfo, _login: &Login<'_>) -> Gate {
        self.rec("client_connect");
        self.gate.gate(self.name)
    }

    fn on_client_disconnect(
        &self,
        _client: &ClientInfo,
        reason: &CloseReason,
        t: &Totals,
    ) -> HookResult {
        self.rec(format_args!(
            "client_close {} in={} out={} streams={}",
            reason.label(),
            t.bytes_in,
            t.bytes_out,
            t.streams
        ));
        self.close.result(self.name)
    }

    fn on_tunnel_open(&self, _tunnel: &TunnelInfo) -> Gate {
        self.rec("tunnel_open");
        self.gate.gate(self.name)
    }

    fn on_tunnel_close(
        &self,
        _tunnel: &TunnelInfo,
        reason: &CloseReason,
        t: &Totals,
    ) -> HookResult {
        self.rec(format_args!(
            "tunnel_close {} in={} out={} streams={}",
            reason.label(),
            t.bytes_in,
            t.bytes_out,
            t.streams
        ));
        self.close.result(self.name)
    }

    fn on_stream_open(&self, _stream: &StreamInfo) -> Gate {
        self.rec("stream_open");
        self.gate.gate(self.name)
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let (reason, t) = (end.reason, end.totals);
        self.rec(format_args!(
            "stream_close {} in={} out={} streams={}",
            reason.label(),
            t.bytes_in,
            t.bytes_out,
            t.streams
        ));
        self.close.result(self.name)
    }

    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        self.rec(format_args!(
            "data {} len={}",
            ev.direction.as_str(),
            ev.data.len()
        ));
        self.data.verdict(self.name)
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        self.rec(format_args!(
            "rejected {} by={} passed={} msg={}",
            r.scope.kind(),
            r.by,
            r.passed_gate,
            r.reason.message
        ));
        self.rejected.act(self.name);
    }

    fn on_error(&self, ev: &ErrorEvent<'_>) {
        match ev.error.downcast_ref::<HookError>() {
            Some(he) => self.rec(format_args!(
                "error {} hook={} {}",
                ev.scope.kind(),
                he.hook,
                kind_label(&he.kind)
            )),
            None => self.rec(format_args!(
                "error {} other: {}",
                ev.scope.kind(),
                ev.error
            )),
        }
        self.error.act(self.name);
    }
}

// ---------------------------------------------------------------------------
// Fixtures

/// A loopback address for event fixtures. Never bound: no test here opens a socket.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn server_info() -> ServerInfo {
    ServerInfo {
        name: "test-server".into(),
        listen: addr(7000),
    }
}

pub fn client() -> Arc<ClientInfo> {
    Arc::new(ClientInfo::new(ClientId(1), "alice", addr(50_000)))
}

pub fn tunnel_of(client: &Arc<ClientInfo>, id: u64) -> Arc<TunnelInfo> {
    Arc::new(TunnelInfo::new(
        TunnelId(id),
        client.clone(),
        TunnelKind::Reverse,
        addr(8080),
        "127.0.0.1:3000",
    ))
}

/// A tunnel of alice's (id 1) to `target`.
pub fn tunnel_to(target: &str) -> TunnelInfo {
    TunnelInfo::new(
        TunnelId(1),
        client(),
        TunnelKind::Reverse,
        addr(8080),
        target,
    )
}

pub fn tunnel() -> Arc<TunnelInfo> {
    tunnel_of(&client(), 1)
}

pub fn stream_of(tunnel: &Arc<TunnelInfo>, id: u64) -> Arc<StreamInfo> {
    Arc::new(StreamInfo::new(StreamId(id), tunnel.clone(), addr(40_000)))
}

pub fn stream() -> Arc<StreamInfo> {
    stream_of(&tunnel(), 1)
}

/// A nonce and the proof of `token` for `name`.
pub struct Creds {
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl Creds {
    pub fn new(token: &str, name: &str) -> Self {
        let nonce = reitunnel_proto::auth::new_nonce();
        let proof = reitunnel_proto::auth::proof(token.as_bytes(), &nonce, name);
        Creds { nonce, proof }
    }

    pub fn login(&self) -> Login<'_> {
        Login {
            nonce: &self.nonce,
            proof: &self.proof,
        }
    }
}

/// A `DataEvent` for `stream`.
pub fn data<'a>(stream: &'a StreamInfo, direction: Direction, bytes: &'a [u8]) -> DataEvent<'a> {
    DataEvent::new(stream, direction, bytes)
}

/// Opens `client` on `chain` with a login proving `token` for the client's name.
pub fn open_client_with_token(
    chain: &HookChain,
    client: Arc<ClientInfo>,
    token: &str,
) -> Result<Open<ClientInfo>, Refusal> {
    let creds = Creds::new(token, &client.name);
    chain.open_client(client, &creds.login())
}

/// Opens `client` on `chain` with a login for the token `"token"` (the
/// chains these tests build check no token).
pub fn open_client(
    chain: &HookChain,
    client: Arc<ClientInfo>,
) -> Result<Open<ClientInfo>, Refusal> {
    open_client_with_token(chain, client, "token")
}

// ---------------------------------------------------------------------------
// Chains

/// A fresh log and a chain (with `strategy`) of one [`Rec`] per `(name, act)`,
/// in order, each scripted with its act by `script` (e.g. `Rec::data`).
pub fn chain_of(
    strategy: ErrorStrategy,
    acts: &[(&'static str, Act)],
    script: fn(Rec, Act) -> Rec,
) -> (Log, HookChain) {
    let log = Log::new();
    let chain = acts
        .iter()
        .fold(HookChain::builder().strategy(strategy), |b, (name, act)| {
            b.hook(script(Rec::new(name, &log), act.clone()))
        })
        .build();
    (log, chain)
}

/// A chain of shared [`Counters`] followed by `hook`; returns the counters to read.
pub fn counters_then(hook: Arc<dyn Hook>) -> (Arc<Counters>, HookChain) {
    let counters = Arc::new(Counters::new());
    let chain = HookChain::builder()
        .shared(counters.clone())
        .shared(hook)
        .build();
    (counters, chain)
}

/// A chain of `hook` followed by shared [`Counters`] (which see only what
/// `hook` lets through); returns the counters to read.
pub fn counters_behind(hook: Arc<dyn Hook>) -> (Arc<Counters>, HookChain) {
    let counters = Arc::new(Counters::new());
    let chain = HookChain::builder()
        .shared(hook)
        .shared(counters.clone())
        .build();
    (counters, chain)
}

// ---------------------------------------------------------------------------
// Expected log entries

/// The entries [`Rec`] logs when every hook in `hooks` hears, through
/// `on_error` in `scope`, that `culprit` failed (`kind`: `"failed"` or `"panicked"`).
pub fn errors_heard(hooks: &[&str], scope: &str, culprit: &str, kind: &str) -> Vec<String> {
    hooks
        .iter()
        .map(|h| format!("{h}:error {scope} hook={culprit} {kind}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Silencing deliberate panics

type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Guards alive, and the panic hook that was installed before the first one.
static QUIET: Mutex<(usize, Option<Arc<PanicHook>>)> = Mutex::new((0, None));

fn is_deliberate(payload: &(dyn std::any::Any + Send)) -> bool {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .is_some_and(|m| m.starts_with(PANIC_MARK))
}

/// While alive, panics whose message starts with [`PANIC_MARK`] print
/// nothing; every other panic (a failing assertion) goes to the previous
/// panic hook. Reference counted, because tests run in parallel threads: the
/// last guard to drop restores the previous hook.
pub struct QuietPanics(());

impl QuietPanics {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let mut q = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        if q.0 == 0 {
            let prev: Arc<PanicHook> = Arc::new(panic::take_hook());
            let forward = prev.clone();
            panic::set_hook(Box::new(move |info| {
                if !is_deliberate(info.payload()) {
                    forward(info);
                }
            }));
            q.1 = Some(prev);
        }
        q.0 += 1;
        QuietPanics(())
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let mut q = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        q.0 -= 1;
        // `take_hook`/`set_hook` must not be called while panicking; the
        // filter forwards real panics anyway, so leaving it is harmless.
        if q.0 == 0 && !std::thread::panicking() {
            drop(panic::take_hook()); // our filter, holding one clone of `prev`
            if let Some(prev) = q.1.take() {
                match Arc::try_unwrap(prev) {
                    Ok(hook) => panic::set_hook(hook),
                    Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions, peers and events (for the built-in limit, quota and meter hooks)

/// A client session `id` named `name`, logged in from `peer`.
pub fn client_at(id: u64, name: &str, peer: SocketAddr) -> Arc<ClientInfo> {
    Arc::new(ClientInfo::new(ClientId(id), name, peer))
}

/// A stream `id` through `tunnel` from the visitor at `peer`.
pub fn stream_from(tunnel: &Arc<TunnelInfo>, id: u64, peer: SocketAddr) -> Arc<StreamInfo> {
    Arc::new(StreamInfo::new(StreamId(id), tunnel.clone(), peer))
}

/// A client and one of its tunnels, both opened through a chain's gates
/// (hooks that set up per-client or per-tunnel state see them). Dropping it
/// closes the tunnel, then the client.
pub struct Session {
    // Field order is drop order: the tunnel closes before its client.
    pub tunnel: Open<TunnelInfo>,
    pub client: Open<ClientInfo>,
}

impl Session {
    /// Opens `client` and its tunnel `tunnel_id` on `chain`; panics if a gate refuses.
    pub fn open(chain: &HookChain, client: Arc<ClientInfo>, tunnel_id: u64) -> Session {
        let client = open_client(chain, client).expect("client gate");
        let tunnel = chain
            .open_tunnel(tunnel_of(client.info(), tunnel_id))
            .expect("tunnel gate");
        Session { tunnel, client }
    }

    /// Opens stream `id` of this session's tunnel from the visitor at `peer`.
    pub fn try_stream_from(&self, id: u64, peer: SocketAddr) -> Result<Open<StreamInfo>, Refusal> {
        self.tunnel
            .chain()
            .open_stream(stream_from(self.tunnel.info(), id, peer))
    }

    /// Opens stream `id` of this session's tunnel; panics if a gate refuses.
    pub fn stream(&self, id: u64) -> Open<StreamInfo> {
        self.try_stream_from(id, addr(40_000)).expect("stream gate")
    }
}

/// An [`EventSink`] that keeps every event.
#[derive(Default)]
pub struct EventLog(Mutex<Vec<Event>>);

impl EventLog {
    /// A fresh log and a bus that emits into it.
    pub fn bus() -> (Arc<EventLog>, EventBus) {
        let log = Arc::new(EventLog::default());
        let bus = EventBus::new().with(log.clone());
        (log, bus)
    }

    /// All events so far.
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The events called `name`.
    pub fn named(&self, name: &str) -> Vec<Event> {
        self.all().into_iter().filter(|e| e.event == name).collect()
    }
}

impl EventSink for EventLog {
    fn emit(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}
