//! The `Hook` trait: one method per phase, each with a default that does
//! nothing, so a hook implements only what it cares about (the Go design's
//! `NoopHook` embedding, without the embedding).

use std::any::Any;
use std::time::Duration;

use crate::info::{
    AdminAction, ClientInfo, DataEvent, ErrorEvent, Login, Rejection, Scope, ServerInfo, StreamEnd,
    StreamInfo, Totals, TunnelInfo,
};
use crate::verdict::{CloseReason, Gate, Verdict};

/// An error a hook returns from an observer method. The chain attaches the
/// hook's name (see [`crate::HookError`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an observer method returns: `Ok(())`, or the error the chain
/// reports under the hook's name.
pub type HookResult = Result<(), BoxError>;

/// A hook's private state for one stream: made by [`Hook::stream_state`]
/// when the stream opens, handed back in every [`DataEvent`] and in
/// [`StreamEnd`], dropped right after the stream's close event. This is how
/// a hook keeps per-stream counters without a map lookup or lock per chunk.
pub type StreamState = Box<dyn Any + Send + Sync>;

/// A participant in the event pipeline.
///
/// Three kinds of methods:
/// - **Gates** (`on_client_connect`, `on_tunnel_open`, `on_stream_open`)
///   decide whether something opens: each answers a [`Gate`]. The first
///   `Refuse` wins and later hooks
///   are not asked; every hook then hears [`Hook::on_rejected`]. Nothing that a
///   gate refused ever gets a close event.
/// - **The data path** (`on_data`) runs per chunk, per direction, on both
///   sides, answering a [`Verdict`]. `Close` ends the stream, `Throttle` delays the chunk (the
///   longest throttle of all hooks wins, and hooks after a throttling hook
///   still see the chunk, so meters stay exact).
/// - **Observers** (the rest) always run on every hook, whatever others
///   returned; their errors are reported through `on_error`.
///
/// Every method runs synchronously on the task that moves the bytes: keep
/// them short, never block or sleep, and hand slow work (network, disk) to a
/// background task through a bounded channel. A panic is caught by the chain,
/// reported through `on_error` and counted as this hook's error.
pub trait Hook: Send + Sync + 'static {
    /// A short stable name, used in errors, rejections and logs.
    fn name(&self) -> &str;

    /// Whether `on_data` should be called. Defaults to `true` so an
    /// implemented `on_data` is never silently skipped; hooks without a data
    /// method return `false`, and a chain in which no hook wants data skips the
    /// per-chunk call entirely.
    fn wants_data(&self) -> bool {
        true
    }

    /// Before the server accepts anything. An error stops the server from
    /// starting (with either strategy, after all hooks ran under
    /// `CollectAndContinue`). Default: nothing.
    fn on_server_start(&self, _server: &ServerInfo) -> HookResult {
        Ok(())
    }

    /// After every client, tunnel and stream has closed; the last event. Default: nothing.
    fn on_server_stop(&self, _server: &ServerInfo) -> HookResult {
        Ok(())
    }

    /// Gate: a client proved something at login (see [`Login::proves`]). Authentication
    /// hooks check it here. Default: `Allow`.
    fn on_client_connect(&self, _client: &ClientInfo, _login: &Login<'_>) -> Gate {
        Gate::Allow
    }

    /// Observer: a client whose connect passed the gates is gone. Exactly once per accepted
    /// client, after all its tunnels closed. Default: nothing.
    fn on_client_disconnect(
        &self,
        _client: &ClientInfo,
        _reason: &CloseReason,
        _totals: &Totals,
    ) -> HookResult {
        Ok(())
    }

    /// Gate: a client asks for a tunnel; its listener is bound already, so
    /// `tunnel.bind` is the real address. Default: `Allow`.
    fn on_tunnel_open(&self, _tunnel: &TunnelInfo) -> Gate {
        Gate::Allow
    }

    /// Observer: an opened tunnel closed, after all its streams. `totals` is
    /// the exact sum of its streams. Default: nothing.
    fn on_tunnel_close(
        &self,
        _tunnel: &TunnelInfo,
        _reason: &CloseReason,
        _totals: &Totals,
    ) -> HookResult {
        Ok(())
    }

    /// Gate: a visitor connected to a tunnel. Default: `Allow`.
    fn on_stream_open(&self, _stream: &StreamInfo) -> Gate {
        Gate::Allow
    }

    /// Observer: every gate passed; the client, tunnel or stream is open and
    /// exactly one close event will follow. Notifiers and counters act here
    /// rather than in their own gate, which a later hook may still overrule.
    /// Default: nothing.
    fn on_open(&self, _scope: Scope<'_>) {}

    /// Called once when a stream opens (after `on_open`): the state this hook
    /// wants back with each of the stream's data events. Default: none.
    fn stream_state(&self, _stream: &StreamInfo) -> Option<StreamState> {
        None
    }

    /// Observer: an opened stream closed; `end.state` is this hook's state
    /// for it, to flush. Default: nothing.
    fn on_stream_close(&self, _end: &StreamEnd<'_>) -> HookResult {
        Ok(())
    }

    /// Hot path: a chunk is about to be forwarded. Must not allocate or lock
    /// to stay cheap. Default: `Continue`.
    fn on_data(&self, _event: &DataEvent<'_>) -> Verdict {
        Verdict::Continue
    }

    /// Observer: a gate refused a client, tunnel or stream (this hook's, an
    /// earlier one's, or the server's own policy). Default: nothing.
    fn on_rejected(&self, _rejection: &Rejection<'_>) {}

    /// Observer: an error happened (I/O, protocol, an unreachable target, another hook's
    /// failure). Default: nothing.
    fn on_error(&self, _event: &ErrorEvent<'_>) {}

    /// Observer: a heartbeat round trip to `client`'s peer was measured (on
    /// the server, to the client; on the client, to the server), once per
    /// heartbeat interval. Also readable at any time as [`ClientInfo::rtt`].
    /// Default: nothing.
    fn on_heartbeat(&self, _client: &ClientInfo, _rtt: Duration) {}

    /// Observer: an operator acted through the admin interface (a kick, a
    /// closed tunnel); the action has taken effect. Default: nothing.
    fn on_admin(&self, _action: &AdminAction<'_>) {}
}

/// A shared hook is a hook: lets wrappers such as
/// [`Sampler`](crate::builtin::Sampler) take an `Arc<dyn Hook>` built at run
/// time (from a config file), and keeps a handle for reading its state.
impl<H: Hook + ?Sized> Hook for std::sync::Arc<H> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn wants_data(&self) -> bool {
        (**self).wants_data()
    }
    fn on_server_start(&self, server: &ServerInfo) -> HookResult {
        (**self).on_server_start(server)
    }
    fn on_server_stop(&self, server: &ServerInfo) -> HookResult {
        (**self).on_server_stop(server)
    }
    fn on_client_connect(&self, client: &ClientInfo, login: &Login<'_>) -> Gate {
        (**self).on_client_connect(client, login)
    }
    fn on_client_disconnect(
        &self,
        client: &ClientInfo,
        reason: &CloseReason,
        totals: &Totals,
    ) -> HookResult {
        (**self).on_client_disconnect(client, reason, totals)
    }
    fn on_tunnel_open(&self, tunnel: &TunnelInfo) -> Gate {
        (**self).on_tunnel_open(tunnel)
    }
    fn on_tunnel_close(
        &self,
        tunnel: &TunnelInfo,
        reason: &CloseReason,
        totals: &Totals,
    ) -> HookResult {
        (**self).on_tunnel_close(tunnel, reason, totals)
    }
    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        (**self).on_stream_open(stream)
    }
    fn on_open(&self, scope: Scope<'_>) {
        (**self).on_open(scope)
    }
    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        (**self).stream_state(stream)
    }
    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        (**self).on_stream_close(end)
    }
    fn on_data(&self, event: &DataEvent<'_>) -> Verdict {
        (**self).on_data(event)
    }
    fn on_rejected(&self, rejection: &Rejection<'_>) {
        (**self).on_rejected(rejection)
    }
    fn on_error(&self, event: &ErrorEvent<'_>) {
        (**self).on_error(event)
    }
    fn on_heartbeat(&self, client: &ClientInfo, rtt: Duration) {
        (**self).on_heartbeat(client, rtt)
    }
    fn on_admin(&self, action: &AdminAction<'_>) {
        (**self).on_admin(action)
    }
}

/// A wrapper that forgets to forward a method does not fail to compile: the
/// trait's default runs instead and the wrapped hook silently misses those
/// events. This reads the sources and names any method a wrapper lacks.
#[cfg(test)]
mod forwarding {
    /// The names of the `fn`s in the block of `source` that starts with `header`.
    fn methods(source: &str, header: &str) -> Vec<String> {
        let start = source
            .find(header)
            .unwrap_or_else(|| panic!("no `{header}`"));
        let end = start + source[start..].find("\n}\n").expect("the block's end");
        source[start..end]
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("fn "))
            .map(|rest| rest.split(['(', '<']).next().unwrap_or(rest).to_owned())
            .collect()
    }

    #[test]
    fn every_wrapper_forwards_every_method_of_the_trait() {
        let hook = include_str!("hook.rs");
        let wanted = methods(hook, "pub trait Hook");
        assert!(wanted.len() >= 16, "read too few methods: {wanted:?}");
        let wrappers = [
            (hook, "impl<H: Hook + ?Sized> Hook for std::sync::Arc<H>"),
            (
                include_str!("builtin/sampler.rs"),
                "impl<H: Hook> Hook for Sampler<H>",
            ),
        ];
        for (source, header) in wrappers {
            let forwarded = methods(source, header);
            let missing: Vec<&String> = wanted.iter().filter(|m| !forwarded.contains(m)).collect();
            assert!(
                missing.is_empty(),
                "`{header}` does not forward {missing:?}"
            );
        }
    }
}
