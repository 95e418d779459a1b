//! A `command` hook as an asynchronous gate ([`crate::authorize`]): the
//! program is asked whether a login, a tunnel or a visitor may open, or
//! which port a tunnel that asked for port 0 gets. It runs off the
//! control loop, like `http_auth`, and the server caps the wait at its
//! handshake timeout (a wait given up kills the program's group).
//!
//! - Exit 0 admits; any other exit refuses, the first line of stdout
//!   being the reason the client sees.
//! - A program that does not exit by itself (killed at `timeout`, by a
//!   signal, or not started) refuses, unless it is not `required`.
//! - A port chooser prints the port (a line) and exits 0; anything else
//!   leaves the pick to the server.

use std::io;

use serde_json::Value;

use super::outcome::Outcome;
use super::program::{Input, Program};
use super::vars::event_vars;
use super::CommandConfig;
use crate::authorize::{Ask, AuthFuture, Authorize, PortFuture};
use crate::builtin::question::{question, tunnel_fields};
use crate::hook::Hook;
use crate::info::{RefuseCode, TunnelInfo};
use crate::verdict::{Gate, Reason};

/// Which question a command gate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAsks {
    /// Whether a client may log in.
    Login,
    /// Whether a tunnel (`-R` or `-L`) may open.
    Tunnel,
    /// Whether a visitor may reach a tunnel (adds the program's run to every visitor).
    Visitor,
    /// Which port an `-R` tunnel that asked for port 0 gets.
    Port,
}

impl CommandAsks {
    /// `"login"`, `"tunnel"`, `"visitor"` or `"port"`: its `gate` key and the
    /// program's `REITUNNEL_GATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAsks::Login => "login",
            CommandAsks::Tunnel => "tunnel",
            CommandAsks::Visitor => "visitor",
            CommandAsks::Port => "port",
        }
    }

    /// Whether it answers `ask`.
    fn answers(self, ask: &Ask<'_>) -> bool {
        matches!(
            (self, ask),
            (CommandAsks::Login, Ask::Login { .. })
                | (CommandAsks::Tunnel, Ask::Tunnel(_))
                | (CommandAsks::Visitor, Ask::Stream(_))
        )
    }
}

/// The gate; see the module docs.
#[derive(Debug)]
pub struct CommandGate {
    program: Program,
    asks: CommandAsks,
    required: bool,
}

impl CommandGate {
    /// A gate answering `asks` by running `config`'s program (its `events`
    /// and `queue` are the notifier's, unused here). `required`: a program
    /// that does not exit by itself refuses (else it admits).
    pub fn new(config: CommandConfig, asks: CommandAsks, required: bool) -> io::Result<Self> {
        Ok(CommandGate {
            program: config.program()?,
            asks,
            required,
        })
    }

    /// Runs the program on `body` (the question, to which its gate is added).
    async fn run(&self, mut body: Value, what: &str) -> Outcome {
        body["gate"] = Value::from(self.asks.as_str());
        let vars = body.as_object().map(event_vars).unwrap_or_default();
        let input = Input {
            vars,
            stdin: body.to_string().into_bytes(),
        };
        let outcome = Outcome::of(self.program.run(&input).await);
        outcome.report(self.program.name(), self.asks.as_str(), what);
        outcome
    }

    async fn decide(&self, ask: &Ask<'_>) -> Gate {
        let mut body = question(ask);
        if let Some(tunnel) = tunnel_of(ask) {
            body["tunnel_id"] = Value::from(tunnel.id.0);
        }
        match self.run(body, ask.kind()).await {
            Outcome::Ok(_) => Gate::Allow,
            Outcome::Nonzero(done) => {
                let mut why = done.stdout.first_line();
                if why.is_empty() {
                    why = format!(
                        "refused by the {} gate ({})",
                        self.asks.as_str(),
                        done.status
                    );
                }
                Gate::Refuse(ask.refusal(why))
            }
            Outcome::Failed(_) if !self.required => Gate::Allow,
            Outcome::Failed(_) => Gate::Refuse(Reason::new(
                RefuseCode::Unavailable,
                format!(
                    "the {} gate's program failed, so the {} is refused (required = true)",
                    self.asks.as_str(),
                    ask.kind()
                ),
            )),
        }
    }

    async fn pick(&self, tunnel: &TunnelInfo) -> Option<u16> {
        let mut body = tunnel_fields(serde_json::json!({ "ask": "port" }), tunnel);
        body["tunnel_id"] = Value::from(tunnel.id.0);
        let Outcome::Ok(done) = self.run(body, "port").await else {
            return None;
        };
        let line = done.stdout.first_line();
        match line.parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => {
                tracing::warn!(command = self.program.name(), printed = %line,
                    "the port chooser printed no port (1-65535); the server picks one");
                None
            }
        }
    }
}

/// The tunnel a question is about, if any.
fn tunnel_of<'a>(ask: &'a Ask<'a>) -> Option<&'a TunnelInfo> {
    match ask {
        Ask::Login { .. } => None,
        Ask::Tunnel(tunnel) => Some(tunnel),
        Ask::Stream(stream) => Some(&stream.tunnel),
    }
}

impl Authorize for CommandGate {
    fn name(&self) -> &str {
        "command"
    }

    fn asks_streams(&self) -> bool {
        self.asks == CommandAsks::Visitor
    }

    fn authorize<'a>(&'a self, ask: &'a Ask<'a>) -> AuthFuture<'a> {
        if !self.asks.answers(ask) {
            return Box::pin(std::future::ready(Gate::Allow));
        }
        Box::pin(self.decide(ask))
    }

    fn chooses_ports(&self) -> bool {
        self.asks == CommandAsks::Port
    }

    fn choose_port<'a>(&'a self, tunnel: &'a TunnelInfo) -> PortFuture<'a> {
        Box::pin(self.pick(tunnel))
    }
}

/// As a hook it only stands in the chain's list (so a reload keeps or
/// replaces it like any other); its work is the [`Authorize`] gate's.
impl Hook for CommandGate {
    fn name(&self) -> &str {
        "command"
    }

    fn wants_data(&self) -> bool {
        false
    }
}
