//! `command` hooks: the operator's own program run on events, the way CI
//! systems run hooks before and after a build, or asked as a gate.
//!
//! - As a notifier ([`CommandSink`]): once per event taken (`events`, all
//!   if empty), queued and run in the background, at most
//!   `max_concurrent` at once; a full queue drops events and counts them.
//! - As a gate ([`CommandGate`]): whether a login, a tunnel or a visitor
//!   may open (exit 0 admits, another exit refuses with the first line of
//!   stdout as the reason), or which port a tunnel asking for port 0 gets.
//!
//! The program is an argv, run without a shell. It gets the event (the
//! webhook's body, with the event id as `"id"`) or the question (the one
//! `http_auth` POSTs, with `"gate"` and, for a tunnel, `"tunnel_id"`) as
//! JSON on stdin, and the `REITUNNEL_*` variables of `vars.rs`. Its
//! environment is cleared first, so the server's secrets stay out of it:
//! it gets `PATH`, `HOME`, `LANG` and the variables [`CommandConfig::env`]
//! names, no more. At its timeout its whole process group is killed; its
//! output is read to the end and the first 4 KiB of each stream logged;
//! it is always reaped (`program.rs`).
//!
//! Nothing runs per chunk: a notifier costs an event's enqueueing, a gate
//! one run per question it answers.

mod gate;
mod notify;
mod outcome;
mod program;
mod vars;

use std::io;
use std::num::NonZeroUsize;
use std::time::Duration;

pub use gate::{CommandAsks, CommandGate};
pub use notify::{CommandHealth, CommandSink, DROPS_LOGGED_EVERY};
use program::Program;

/// Runs of one program at once, unless [`CommandConfig::max_concurrent`] says otherwise.
pub const COMMAND_MAX_CONCURRENT: NonZeroUsize = NonZeroUsize::new(4).unwrap();

/// Which program and how it is run.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// The program and its arguments (not empty; no shell unless it is one).
    pub argv: Vec<String>,
    /// Variables of the server's environment passed on, besides `PATH`,
    /// `HOME` and `LANG`.
    pub env: Vec<String>,
    /// The longest one run may take; then its process group is killed.
    pub timeout: Duration,
    /// Runs at once; more wait (a gate's within the server's handshake
    /// timeout, a notifier's events in its queue).
    pub max_concurrent: NonZeroUsize,
    /// A notifier's events (`"client.connected"`, …); empty = all.
    pub events: Vec<String>,
    /// Events a notifier may queue before new ones are dropped (at least
    /// 2); events about visitor streams may fill half of it.
    pub queue: usize,
}

impl CommandConfig {
    /// Runs `argv` for at most 10 s, 4 at once; a notifier takes every
    /// event and queues up to 1024.
    pub fn new(argv: Vec<String>) -> Self {
        CommandConfig {
            argv,
            env: Vec::new(),
            timeout: Duration::from_secs(10),
            max_concurrent: COMMAND_MAX_CONCURRENT,
            events: Vec::new(),
            queue: 1024,
        }
    }

    /// The program to run; an empty argv is an error.
    fn program(&self) -> io::Result<Program> {
        if self.argv.first().is_none_or(String::is_empty) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "command: the program to run is missing (argv is empty)",
            ));
        }
        Ok(Program::new(
            self.argv.clone(),
            &self.env,
            self.timeout,
            self.max_concurrent,
        ))
    }
}
