//! Lifecycle events as operator events (names and fields in docs/EVENTS.md),
//! sent to an [`EventBus`]: the audit log and webhooks are its sinks.
//! Opens are reported from `on_open`, after every gate, so a line saying
//! `client.connected` is never followed by that client's rejection.

use crate::events::{Event, EventBus};
use crate::hook::{Hook, HookResult};
use crate::info::{
    AdminAction, ClientInfo, ErrorEvent, Rejection, Scope, ServerInfo, StreamEnd, Totals,
    TunnelInfo,
};
use crate::verdict::CloseReason;

/// Emits an [`Event`] for every lifecycle event (streams only if asked:
/// they are high volume). Give the bus the server's name
/// ([`EventBus::for_server`]) to have it on every event.
///
/// # Example
///
/// Any [`EventSink`](crate::events::EventSink) can listen; here one that
/// keeps the event names. For an audit file see [`JsonLinesFile`](super::JsonLinesFile).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use reitunnel_hooks::builtin::{EventHook, Secret, TokenAuth};
/// use reitunnel_hooks::events::{Event, EventBus, EventSink};
/// use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login};
///
/// #[derive(Default)]
/// struct Names(Mutex<Vec<&'static str>>);
/// impl EventSink for Names {
///     fn emit(&self, event: &Event) {
///         self.0.lock().unwrap().push(event.event);
///     }
/// }
///
/// let names = Arc::new(Names::default());
/// let bus = EventBus::new().for_server("edge-1").with(names.clone());
/// let chain = HookChain::builder()
///     .hook(EventHook::new("events", bus, false))
///     .hook(TokenAuth::new(Secret::new("s3cret")))
///     .build();
///
/// let nonce = [0u8; 32];
/// for (id, token) in [(1, &b"s3cret"[..]), (2, &b"wrong"[..])] {
///     let client = Arc::new(ClientInfo::new(ClientId(id), "alice", "127.0.0.1:50000".parse()?));
///     let proof = reitunnel_proto::auth::proof(token, &nonce, "alice");
///     let _ = chain.open_client(client, &Login { nonce: &nonce, proof: &proof });
/// }
/// assert_eq!(
///     *names.0.lock().unwrap(),
///     ["client.connected", "client.disconnected", "client.rejected"]
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EventHook {
    name: String,
    bus: EventBus,
    streams: bool,
}

impl EventHook {
    /// Reports to `bus`; `streams` adds `stream.opened`/`stream.closed`.
    pub fn new(name: impl Into<String>, bus: EventBus, streams: bool) -> Self {
        EventHook {
            name: name.into(),
            bus,
            streams,
        }
    }

    fn event(&self, name: &'static str) -> Event {
        Event::now(name)
    }
}

fn client(ev: Event, c: &ClientInfo) -> Event {
    ev.with("client", &*c.name).with("client_id", c.id.0)
}

fn tunnel(ev: Event, t: &TunnelInfo) -> Event {
    client(ev, &t.client)
        .with("tunnel_id", t.id.0)
        .with("bind", t.bind.to_string())
        .with("target", &*t.target)
        .with("transport", t.transport.as_str())
}

fn closed(ev: Event, reason: &CloseReason, t: &Totals) -> Event {
    ev.with("bytes_in", t.bytes_in)
        .with("bytes_out", t.bytes_out)
        .with("duration_ms", t.duration.as_millis() as u64)
        .with("reason", reason.label())
        .with("detail", reason.to_string())
}

/// The scope's ids; a stream's events go in [`Lane::Stream`](crate::events::Lane),
/// so a flood of them cannot crowd client and tunnel events out of a queue.
fn scoped(ev: Event, scope: Scope<'_>) -> Event {
    match scope {
        Scope::Server => ev,
        Scope::Client(c) => client(ev, c).with("peer", c.peer.to_string()),
        Scope::Tunnel(t) => tunnel(ev, t),
        Scope::Stream(s) => tunnel(ev.about_a_stream(), &s.tunnel)
            .with("stream_id", s.id.0)
            .with("peer", s.peer.to_string()),
    }
}

impl Hook for EventHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants_data(&self) -> bool {
        false
    }

    fn on_server_start(&self, s: &ServerInfo) -> HookResult {
        let ev = self
            .event("server.started")
            .with("listen", s.listen.to_string());
        self.bus.emit(&ev);
        Ok(())
    }

    fn on_server_stop(&self, _: &ServerInfo) -> HookResult {
        self.bus.emit(&self.event("server.stopped"));
        Ok(())
    }

    fn on_open(&self, scope: Scope<'_>) {
        let name = match scope {
            Scope::Client(_) => "client.connected",
            Scope::Tunnel(_) => "tunnel.opened",
            Scope::Stream(_) if self.streams => "stream.opened",
            Scope::Stream(_) | Scope::Server => return,
        };
        self.bus.emit(&scoped(self.event(name), scope));
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        let name = match r.scope {
            Scope::Client(_) => "client.rejected",
            Scope::Tunnel(_) => "tunnel.rejected",
            Scope::Stream(_) if self.streams => "stream.rejected",
            Scope::Stream(_) | Scope::Server => return,
        };
        let ev = scoped(self.event(name), r.scope)
            .with("by", r.by)
            .with("reason", r.reason.to_string());
        self.bus.emit(&ev);
    }

    fn on_client_disconnect(&self, c: &ClientInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        let ev = closed(client(self.event("client.disconnected"), c), reason, t)
            .with("streams", t.streams);
        self.bus.emit(&ev);
        Ok(())
    }

    fn on_tunnel_close(&self, tun: &TunnelInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        let ev =
            closed(tunnel(self.event("tunnel.closed"), tun), reason, t).with("streams", t.streams);
        self.bus.emit(&ev);
        Ok(())
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        if self.streams {
            let ev = scoped(self.event("stream.closed"), Scope::Stream(end.stream));
            self.bus.emit(&closed(ev, end.reason, end.totals));
        }
        Ok(())
    }

    fn on_error(&self, e: &ErrorEvent<'_>) {
        let ev = scoped(self.event("error"), e.scope).with("error", e.error.to_string());
        self.bus.emit(&ev);
    }

    fn on_admin(&self, a: &AdminAction<'_>) {
        let ev = self
            .event("admin")
            .with("action", a.action)
            .with("target", a.target)
            .with("by", a.by)
            .with("outcome", a.outcome);
        self.bus.emit(&ev);
    }
}
