//! The ordered hook chain: dispatch, verdict combination, error strategies
//! and panic isolation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::authorize::{Ask, Authorize};
use crate::error::{HookError, MultiError};
use crate::hook::{Hook, HookResult};
use crate::info::{
    AdminAction, ClientInfo, ErrorEvent, Login, RefuseCode, Rejection, Scope, ServerInfo,
    StreamInfo, TunnelInfo,
};
use crate::verdict::{Gate, Reason};

mod compose;
mod data;

/// What the chain does when a hook fails (returns an error or panics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorStrategy {
    /// Later hooks are skipped for that event and the failure decides:
    /// a failing gate refuses (fails closed), a failing data hook closes the
    /// stream, a failing `on_server_start` stops the start. Observers of
    /// closes still reach every hook, so open/close stays balanced.
    #[default]
    StopOnError,
    /// Every hook runs; each failure is reported through `on_error` as it
    /// happens (and `server_start`/`server_stop` return them all in one
    /// [`MultiError`]). Verdicts come from the hooks that did not fail (the
    /// failing hook fails open).
    CollectAndContinue,
}

/// A gate's refusal: why, and who said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Sent to the peer.
    pub reason: Reason,
    /// The refusing hook's name, or `"server"`.
    pub by: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by {}: {}", self.by, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// The name used in [`Rejection::by`] for refusals by the server's own policy.
pub const SERVER: &str = "server";

struct Inner {
    hooks: Box<[Arc<dyn Hook>]>,
    /// The asynchronous gates, in order.
    authorizers: Box<[Arc<dyn Authorize>]>,
    /// The hooks that want data, with their position in `hooks` (which indexes stream states).
    data_hooks: Box<[(usize, Arc<dyn Hook>)]>,
    strategy: ErrorStrategy,
}

/// An ordered, immutable list of hooks. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct HookChain {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookChain")
            .field("hooks", &self.names())
            .field("strategy", &self.inner.strategy)
            .finish()
    }
}

impl Default for HookChain {
    fn default() -> Self {
        HookChain::builder().build()
    }
}

/// Builds a [`HookChain`]; the order of [`HookChainBuilder::hook`] calls is the order of dispatch.
#[derive(Default)]
pub struct HookChainBuilder {
    hooks: Vec<Arc<dyn Hook>>,
    authorizers: Vec<Arc<dyn Authorize>>,
    strategy: ErrorStrategy,
}

impl HookChainBuilder {
    /// Appends a hook.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Appends a shared hook (to keep a handle for reading its state, e.g. counters).
    pub fn shared(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Appends an asynchronous gate (see [`crate::authorize`]); they are
    /// asked in the order added, after the server's own checks and before
    /// the synchronous gates (which run as the open event is decided).
    pub fn authorizer(mut self, gate: Arc<dyn Authorize>) -> Self {
        self.authorizers.push(gate);
        self
    }

    /// Sets the error strategy (default [`ErrorStrategy::StopOnError`]).
    pub fn strategy(mut self, strategy: ErrorStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Freezes the chain.
    pub fn build(self) -> HookChain {
        let data_hooks = self
            .hooks
            .iter()
            .enumerate()
            .filter(|(_, h)| h.wants_data())
            .map(|(i, h)| (i, h.clone()))
            .collect();
        HookChain {
            inner: Arc::new(Inner {
                hooks: self.hooks.into(),
                authorizers: self.authorizers.into(),
                data_hooks,
                strategy: self.strategy,
            }),
        }
    }
}

/// Runs `f`, turning a panic into a [`HookError`]. Inlined so the per-chunk
/// dispatch is one loop with direct calls (the unwind guard itself costs
/// nothing until a hook panics).
#[inline(always)]
fn isolated<R>(hook: &dyn Hook, f: impl FnOnce() -> R) -> Result<R, HookError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| HookError::panicked(hook.name(), p))
}

impl HookChain {
    /// A new builder.
    pub fn builder() -> HookChainBuilder {
        HookChainBuilder::default()
    }

    /// The configured strategy.
    pub fn strategy(&self) -> ErrorStrategy {
        self.inner.strategy
    }

    /// The hooks, in order (to tell instances apart by pointer).
    pub fn hooks(&self) -> &[Arc<dyn Hook>] {
        &self.inner.hooks
    }

    /// The hooks' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.inner.hooks.iter().map(|h| h.name()).collect()
    }

    /// Whether the chain has asynchronous gates (if not, [`HookChain::authorize`]
    /// answers at once: no need to ask it off a caller's loop).
    pub fn has_authorizers(&self) -> bool {
        !self.inner.authorizers.is_empty()
    }

    /// Whether an asynchronous gate asks about visitors (if not, skip
    /// [`HookChain::authorize`] for them).
    pub fn authorizes_streams(&self) -> bool {
        self.inner.authorizers.iter().any(|a| a.asks_streams())
    }

    /// Asks the asynchronous gates in order, each bounding its own wait.
    /// The first refusal decides: every hook hears `on_rejected` (`by` the
    /// gate's name) and it is returned.
    pub async fn authorize(&self, ask: &Ask<'_>) -> Result<(), Refusal> {
        let streams = matches!(ask, Ask::Stream(_));
        for gate in self.inner.authorizers.iter() {
            if streams && !gate.asks_streams() {
                continue;
            }
            if let Gate::Refuse(reason) = gate.authorize(ask).await {
                let refusal = Refusal {
                    reason,
                    by: gate.name().to_owned(),
                };
                self.rejected_after(ask.scope(), &refusal, 0, &[]);
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Whether an asynchronous gate picks the ports of tunnels that ask
    /// for port 0 (if not, skip [`HookChain::choose_port`]).
    pub fn chooses_ports(&self) -> bool {
        self.inner.authorizers.iter().any(|a| a.chooses_ports())
    }

    /// The port the first port chooser with an answer gives `tunnel`
    /// (which asked for port 0), and the chooser's name; `None` when none
    /// answers, and the server picks as usual.
    pub async fn choose_port(&self, tunnel: &TunnelInfo) -> Option<(u16, String)> {
        for chooser in self.inner.authorizers.iter().filter(|a| a.chooses_ports()) {
            if let Some(port) = chooser.choose_port(tunnel).await {
                return Some((port, chooser.name().to_owned()));
            }
        }
        None
    }

    /// Whether any hook wants `on_data`; when not, relays skip the per-chunk call.
    #[inline]
    pub fn wants_data(&self) -> bool {
        !self.inner.data_hooks.is_empty()
    }

    /// Tells every hook about an error (the server's own, or a hook's).
    /// A panic inside `on_error` is logged and not reported again.
    pub fn error(&self, scope: Scope<'_>, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        let event = ErrorEvent { scope, error };
        for hook in self.inner.hooks.iter() {
            if let Err(e) = isolated(&**hook, || hook.on_error(&event)) {
                tracing::error!(error = %e, "hook failed while handling an error");
            }
        }
    }

    /// Stores a measured heartbeat round trip on `client` (read back with
    /// [`ClientInfo::rtt`]) and hands it to every hook's `on_heartbeat`.
    pub fn heartbeat(&self, client: &ClientInfo, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        client.rtt_micros.store(micros, Ordering::Relaxed);
        let _ = self.observe(Scope::Client(client), |h| {
            h.on_heartbeat(client, rtt);
            Ok(())
        });
    }

    /// Hands an operator's action to every hook's `on_admin`.
    pub fn admin(&self, action: &AdminAction<'_>) {
        let _ = self.observe(Scope::Server, |h| {
            h.on_admin(action);
            Ok(())
        });
    }

    fn hook_failed(&self, scope: Scope<'_>, err: &HookError) {
        tracing::warn!(error = %err, "hook failure");
        self.error(scope, err);
    }

    /// `on_server_start` on every hook. Under `StopOnError` the first failure
    /// stops the loop; either way any failure means the server must not start.
    pub fn server_start(&self, server: &ServerInfo) -> Result<(), MultiError> {
        self.start_each(server).map_err(|(e, _)| e)
    }

    /// Like [`HookChain::server_start`], but all or nothing: if a hook
    /// fails, those that had started get `on_server_stop` at once, so no
    /// hook is left started by a start that did not happen (a server adding
    /// hooks on reload uses this).
    pub fn server_start_or_undo(&self, server: &ServerInfo) -> Result<(), MultiError> {
        self.start_each(server).map_err(|(e, started)| {
            for hook in started.iter().rev() {
                if let Some(stop) =
                    self.observer_call(Scope::Server, &**hook, || hook.on_server_stop(server))
                {
                    tracing::warn!(error = %stop, "undoing a failed start");
                }
            }
            e
        })
    }

    /// Starts the hooks in order; on failure, the error and the hooks that started.
    fn start_each(&self, server: &ServerInfo) -> Result<(), (MultiError, Vec<Arc<dyn Hook>>)> {
        let mut errors = Vec::new();
        let mut started = Vec::new();
        for hook in self.inner.hooks.iter() {
            match self.observer_call(Scope::Server, &**hook, || hook.on_server_start(server)) {
                None => started.push(hook.clone()),
                Some(e) => {
                    errors.push(e);
                    if self.inner.strategy == ErrorStrategy::StopOnError {
                        break;
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err((MultiError { errors }, started))
        }
    }

    /// `on_server_stop` on every hook; failures are reported and returned.
    pub fn server_stop(&self, server: &ServerInfo) -> Result<(), MultiError> {
        self.observe(Scope::Server, |h| h.on_server_stop(server))
    }

    /// Runs an observer method on every hook, whatever the strategy.
    pub(crate) fn observe(
        &self,
        scope: Scope<'_>,
        call: impl Fn(&dyn Hook) -> HookResult,
    ) -> Result<(), MultiError> {
        let errors: Vec<HookError> = self
            .inner
            .hooks
            .iter()
            .filter_map(|h| self.observer_call(scope, &**h, || call(&**h)))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MultiError { errors })
        }
    }

    fn observer_call(
        &self,
        scope: Scope<'_>,
        hook: &dyn Hook,
        call: impl FnOnce() -> HookResult,
    ) -> Option<HookError> {
        let err = match isolated(hook, call) {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => HookError::failed(hook.name(), e),
            Err(panic) => panic,
        };
        self.hook_failed(scope, &err);
        Some(err)
    }

    /// Asks every gate in order; see [`crate::Hook`] for the rules. On
    /// refusal every hook hears `on_rejected`.
    fn gate(&self, scope: Scope<'_>, call: impl Fn(&dyn Hook) -> Gate) -> Result<(), Refusal> {
        let mut failed: Vec<usize> = Vec::new(); // allocates only if a hook fails
        for (i, hook) in self.inner.hooks.iter().enumerate() {
            let reason = match isolated(&**hook, || call(&**hook)) {
                Ok(Gate::Allow) => continue,
                Ok(Gate::Refuse(r)) => r,
                Err(err) => {
                    self.hook_failed(scope, &err);
                    if self.inner.strategy == ErrorStrategy::CollectAndContinue {
                        failed.push(i);
                        continue;
                    }
                    Reason::new(RefuseCode::Other, format!("{err}"))
                }
            };
            let refusal = Refusal {
                reason,
                by: hook.name().to_owned(),
            };
            self.rejected_after(scope, &refusal, i, &failed);
            return Err(refusal);
        }
        Ok(())
    }

    fn rejected_after(&self, scope: Scope<'_>, refusal: &Refusal, passed: usize, failed: &[usize]) {
        for (j, hook) in self.inner.hooks.iter().enumerate() {
            let rejection = Rejection {
                scope,
                reason: &refusal.reason,
                by: &refusal.by,
                passed_gate: j < passed && !failed.contains(&j),
            };
            if let Err(e) = isolated(&**hook, || hook.on_rejected(&rejection)) {
                self.hook_failed(scope, &e);
            }
        }
    }

    /// Refusal by the server itself after every gate passed: every hook
    /// hears `on_rejected` with `by = "server"` and `passed_gate` set.
    pub(crate) fn refuse_after_gates(&self, scope: Scope<'_>, reason: Reason) -> Refusal {
        let refusal = Refusal {
            reason,
            by: SERVER.to_owned(),
        };
        self.rejected_after(scope, &refusal, self.inner.hooks.len(), &[]);
        refusal
    }

    /// Refusal by the server itself before any gate ran (policy, limits,
    /// malformed requests): every hook hears `on_rejected` with `by = "server"`.
    pub fn refuse(&self, scope: Scope<'_>, reason: Reason) -> Refusal {
        let refusal = Refusal {
            reason,
            by: SERVER.to_owned(),
        };
        self.rejected_after(scope, &refusal, 0, &[]);
        refusal
    }

    pub(crate) fn client_gate(
        &self,
        client: &ClientInfo,
        login: &Login<'_>,
    ) -> Result<(), Refusal> {
        self.gate(Scope::Client(client), |h| {
            h.on_client_connect(client, login)
        })
    }

    pub(crate) fn tunnel_gate(&self, tunnel: &TunnelInfo) -> Result<(), Refusal> {
        self.gate(Scope::Tunnel(tunnel), |h| h.on_tunnel_open(tunnel))
    }

    pub(crate) fn stream_gate(&self, stream: &StreamInfo) -> Result<(), Refusal> {
        self.gate(Scope::Stream(stream), |h| h.on_stream_open(stream))
    }

    /// Tells every hook that `scope` passed all gates (`on_open`).
    pub(crate) fn opened(&self, scope: Scope<'_>) {
        for hook in self.inner.hooks.iter() {
            if let Err(e) = isolated(&**hook, || hook.on_open(scope)) {
                self.hook_failed(scope, &e);
            }
        }
    }

    /// Runs an observer once per hook with that hook's position (to pick its stream state).
    pub(crate) fn observe_each(
        &self,
        scope: Scope<'_>,
        call: impl Fn(usize, &dyn Hook) -> HookResult,
    ) {
        for (i, h) in self.inner.hooks.iter().enumerate() {
            self.observer_call(scope, &**h, || call(i, &**h));
        }
    }
}
