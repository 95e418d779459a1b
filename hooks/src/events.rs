//! Events as operators consume them (docs/EVENTS.md): dotted past-tense
//! names, one JSON object each, with an RFC 3339 UTC timestamp and ids.
//! Hooks that notice something worth telling (`quota.exceeded`, …) emit
//! them to [`EventSink`]s; the audit log and webhooks are sinks.
//!
//! Each event travels in a [`Lane`]: events about single visitor streams
//! come in floods (a scan of a public port is thousands of refused visitors
//! a second), so a sink's bounded queue gives them only part of its room
//! and keeps the rest for the rare events that each matter (a client
//! connecting, a tunnel opening).

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// One event, e.g. `{"event":"quota.exceeded","timestamp":"…","client":"alice",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Dotted, past tense: `tunnel.opened`, `quota.exceeded`.
    pub event: &'static str,
    /// RFC 3339, UTC, seconds precision.
    pub timestamp: String,
    /// The event's ids and figures.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
    /// Which share of a sink's queue it may use; not part of the JSON.
    #[serde(skip)]
    pub lane: Lane,
}

/// Which share of a queued sink's room an event may take
/// ([`JsonLinesFile`](crate::builtin::JsonLinesFile), `Webhook`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Server, client, tunnel, admin and health events, and any other not
    /// about one visitor stream: rare, and each one matters. They may use
    /// the whole queue, and half of it is theirs alone.
    #[default]
    Main,
    /// Events about one visitor stream (`stream.*`, a stream's `error`):
    /// they come in floods, so they may fill at most half of the queue;
    /// past that they are dropped (and counted) while [`Lane::Main`]
    /// events still find room.
    Stream,
}

impl Lane {
    /// `"main"` or `"stream"`: the label of drop counts.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Main => "main",
            Lane::Stream => "stream",
        }
    }
}

impl Event {
    /// An event stamped now, with no fields yet.
    pub fn now(event: &'static str) -> Self {
        Event {
            event,
            timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            fields: Map::new(),
            lane: Lane::Main,
        }
    }

    /// Puts the event in [`Lane::Stream`]: it is about one visitor stream.
    pub fn about_a_stream(mut self) -> Self {
        self.lane = Lane::Stream;
        self
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

/// Where events go. `emit` is called on the data path's task: it must
/// return at once (queue, never block on I/O).
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn emit(&self, event: &Event);
}

/// Several sinks as one, stamping every event with the server's name.
#[derive(Clone, Default)]
pub struct EventBus {
    sinks: Vec<Arc<dyn EventSink>>,
    server: Option<Arc<str>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl EventBus {
    /// A bus with no sinks (emitting is a no-op).
    pub fn new() -> Self {
        EventBus::default()
    }

    /// Adds `"server": name` to every event that has no `server` field.
    pub fn for_server(mut self, name: &str) -> Self {
        self.server = Some(name.into());
        self
    }

    /// Adds a sink.
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Whether any sink listens (lets callers skip building events).
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Sends `event` to every sink.
    pub fn emit(&self, event: &Event) {
        if self.sinks.is_empty() {
            return;
        }
        let stamped;
        let event = match &self.server {
            Some(server) if !event.fields.contains_key("server") => {
                stamped = event.clone().with("server", &**server);
                &stamped
            }
            _ => event,
        };
        for sink in &self.sinks {
            sink.emit(event);
        }
    }
}
