//! `kind = "audit"`: a JSON-lines audit log of every event, and an event
//! sink for the hooks that emit events.

use std::path::PathBuf;
use std::sync::Arc;

use reitunnel_hooks::builtin::{EventHook, JsonLinesFile};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::sinks::Sink;
use crate::hook_config::table::{BuildContext, HookKind};

/// Lines the audit writer may queue before it drops (and counts) new ones.
const AUDIT_QUEUE: usize = 65_536;

/// The `audit` kind.
pub(crate) struct Audit;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The file, appended to.
    pub(crate) path: PathBuf,
    /// Also log `stream.opened`/`stream.closed` (high volume).
    #[serde(default)]
    pub(crate) streams: bool,
}

impl HookKind for Audit {
    const NAME: &'static str = "audit";
    type Config = Config;

    fn open_sink(config: &Config) -> Option<Result<Sink, String>> {
        let file = JsonLinesFile::open(&config.path, AUDIT_QUEUE);
        Some(
            file.map(Sink::Audit)
                .map_err(|e| format!("cannot open audit log {}: {e}", config.path.display())),
        )
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let bus = ctx.own_sink_bus();
        Ok(Arc::new(EventHook::new("audit", bus, config.streams)))
    }
}
