//! `kind = "command"`: the operator's program run for each event taken
//! (an event sink, like a webhook), or asked as a gate: whether a login,
//! tunnel or visitor may open, or which port a tunnel asking for port 0
//! gets (`gate`).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{
    CommandAsks, CommandConfig, CommandGate, CommandSink, EventHook, COMMAND_MAX_CONCURRENT,
};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::sinks::Sink;
use crate::hook_config::table::{BuildContext, HookKind, Invalid};

/// The `command` kind.
pub(crate) struct Command;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The program and its arguments: `["/path/prog", "arg"]`, no shell.
    pub(crate) command: Vec<String>,
    /// As a notifier: the events it runs for; empty = all (`stream.*`
    /// only when named).
    #[serde(default)]
    pub(crate) events: Vec<String>,
    /// As a gate: the question it answers.
    #[serde(default)]
    pub(crate) gate: Option<GateKey>,
    /// A gate's program that does not exit by itself (timeout, crash)
    /// refuses; `false`: admits.
    #[serde(default)]
    pub(crate) required: Option<bool>,
    /// The longest one run may take, seconds; then its process group is killed.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_secs: u64,
    /// Runs at once.
    #[serde(default = "default_max_concurrent")]
    pub(crate) max_concurrent: NonZeroUsize,
    /// A notifier's events that may wait before new ones are dropped.
    #[serde(default = "default_queue")]
    pub(crate) queue: usize,
    /// The server's variables passed on, besides `PATH`, `HOME`, `LANG`.
    #[serde(default)]
    pub(crate) env: Vec<String>,
}

/// `gate`: `"login"`, `"tunnel"`, `"visitor"` or `"port"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GateKey {
    Login,
    Tunnel,
    Visitor,
    Port,
}

fn default_timeout() -> u64 {
    10
}
fn default_max_concurrent() -> NonZeroUsize {
    COMMAND_MAX_CONCURRENT
}
fn default_queue() -> usize {
    1024
}

impl Config {
    /// The program's name in errors.
    fn shown(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }

    fn settings(&self) -> CommandConfig {
        CommandConfig {
            env: self.env.clone(),
            timeout: Duration::from_secs(self.timeout_secs),
            max_concurrent: self.max_concurrent,
            events: self.events.clone(),
            queue: self.queue,
            ..CommandConfig::new(self.command.clone())
        }
    }
}

impl HookKind for Command {
    const NAME: &'static str = "command";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        let shown = config.shown();
        if shown.is_empty() {
            return Err(Invalid::new(
                "command",
                "command: the program to run is missing (command = [\"/path/prog\", \"arg\"])",
            ));
        }
        if config.timeout_secs == 0 {
            return Err(Invalid::new(
                "timeout_secs",
                format!("command {shown}: timeout_secs must be at least 1"),
            ));
        }
        if config.queue < 2 {
            return Err(Invalid::new(
                "queue",
                format!("command {shown}: queue must be at least 2"),
            ));
        }
        if let Some(bad) = config
            .env
            .iter()
            .find(|v| v.is_empty() || v.contains(['=', '\0']))
        {
            return Err(Invalid::new(
                "env",
                format!("command {shown}: env names variables; {bad:?} is not a variable's name"),
            ));
        }
        match config.gate {
            Some(_) if !config.events.is_empty() => Err(Invalid::new(
                "events",
                format!(
                    "command {shown}: a gate answers questions, not events; drop events or gate"
                ),
            )),
            None | Some(GateKey::Port) if config.required.is_some() => Err(Invalid::new(
                "required",
                format!(
                    "command {shown}: required is for gate = \"login\", \"tunnel\" or \"visitor\""
                ),
            )),
            _ => Ok(()),
        }
    }

    fn open_sink(config: &Config) -> Option<Result<Sink, String>> {
        config.gate.is_none().then(|| start(config))
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let Some(gate) = config.gate else {
            // Stream events are many: only sent when one is named.
            let streams = config.events.iter().any(|e| e.starts_with("stream."));
            let bus = ctx.own_sink_bus();
            return Ok(Arc::new(EventHook::new("command", bus, streams)));
        };
        let asks = match gate {
            GateKey::Login => CommandAsks::Login,
            GateKey::Tunnel => CommandAsks::Tunnel,
            GateKey::Visitor => CommandAsks::Visitor,
            GateKey::Port => CommandAsks::Port,
        };
        let required = config.required.unwrap_or(true);
        let gate = CommandGate::new(config.settings(), asks, required)
            .map_err(|e| ctx.invalid(e.to_string()))?;
        let gate = Arc::new(gate);
        ctx.background.authorizers.push(gate.clone());
        Ok(gate)
    }
}

/// Starts the notifier's delivery.
fn start(config: &Config) -> Result<Sink, String> {
    notifier(config.settings())
        .map(Sink::Command)
        .map_err(|e| e.to_string())
}

/// A notifier running `settings`' program: inside a runtime its delivery
/// task joins it; otherwise (the server binary builds its chain first) it
/// gets a thread of its own. Alert targets of format "command" use it too.
pub(crate) fn notifier(settings: CommandConfig) -> std::io::Result<Arc<CommandSink>> {
    if tokio::runtime::Handle::try_current().is_ok() {
        CommandSink::new(settings)
    } else {
        CommandSink::new_on_thread(settings)
    }
}
