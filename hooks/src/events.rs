//! Events as operators consume them (docs/EVENTS.md): dotted past-tense
//! names, one JSON object each, with an RFC 3339 UTC timestamp and ids.
//! Hooks that notice something worth telling (`quota.exceeded`, …) emit
//! them to [`EventSink`]s; the audit log and webhooks are sinks.

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
}

impl Event {
    /// An event stamped now, with no fields yet.
    pub fn now(event: &'static str) -> Self {
        Event {
            event,
            timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            fields: Map::new(),
        }
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
