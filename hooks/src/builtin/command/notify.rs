//! The notifier: a `command` hook with no gate runs its program once per
//! event it takes. `emit` only filters and enqueues (the outbox that the
//! webhook and the Redis bus use: the webhook's body and event id, a
//! bounded queue shared out by lane, drops counted); the delivery task
//! takes an event only when one of the program's `max_concurrent` slots is
//! free, so a slow program fills the queue and the overflow is dropped and
//! counted, never held in memory. Drops are logged at most once per
//! [`DROPS_LOGGED_EVERY`].

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::outcome::{Outcome, NOTIFY};
use super::program::{Input, Program};
use super::vars::event_vars;
use crate::builtin::outbox::{self, DropMetric, Ledger, Outbox, Queued, Task};
use crate::events::{Event, EventSink, Lane};

/// How often dropped events are logged (with how many since the last line).
pub const DROPS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// A notifier's record, for the admin status and at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandHealth {
    /// Runs that exited 0.
    pub succeeded: u64,
    /// Runs that exited otherwise, were killed at their timeout, or could
    /// not start.
    pub failed: u64,
    /// Events dropped because the queue (or their lane's share) was full.
    pub dropped: u64,
    /// Events queued and not yet run to their end.
    pub pending: u64,
    /// The most recent failure, in words (kept after a later success).
    pub last_error: Option<String>,
    /// Whether the most recent run exited 0 (true before any).
    pub healthy: bool,
}

#[derive(Debug)]
struct Stats {
    ledger: Arc<Ledger>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    healthy: AtomicBool,
}

/// An [`EventSink`] running a program for each event. Use it behind an
/// [`EventHook`](crate::builtin::EventHook), as the webhook is.
pub struct CommandSink {
    program: Arc<Program>,
    outbox: Outbox,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for CommandSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSink")
            .field("program", &self.program.name())
            .field("events", &self.outbox.events())
            .finish_non_exhaustive()
    }
}

impl CommandSink {
    /// Starts the delivery task on the current tokio runtime: **call it
    /// inside one** (it fails otherwise; see [`CommandSink::new_on_thread`]).
    pub fn new(config: super::CommandConfig) -> io::Result<Arc<Self>> {
        let what = format!("command {}", config.argv.first().map_or("", String::as_str));
        Self::start(config, |task| outbox::spawn_here(&what, task))
    }

    /// Like [`CommandSink::new`], but runs from a thread of its own with a
    /// single-threaded runtime, for callers outside any runtime.
    pub fn new_on_thread(config: super::CommandConfig) -> io::Result<Arc<Self>> {
        Self::start(config, |task| outbox::spawn_on_thread("command", task))
    }

    fn start<S>(config: super::CommandConfig, spawn: S) -> io::Result<Arc<Self>>
    where
        S: FnOnce(Task) -> io::Result<()>,
    {
        let program = Arc::new(config.program()?);
        let dropped = DropMetric {
            name: "reitunnel_command_dropped_total",
            label: "command",
            value: program.name().to_owned(),
        };
        let (outbox, rx) = Outbox::new(config.queue, config.events, dropped);
        let stats = Arc::new(Stats {
            ledger: outbox.ledger().clone(),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            healthy: AtomicBool::new(true),
        });
        let delivery = deliver(program.clone(), rx, stats.clone());
        let drops = log_drops(program.name().to_owned(), Arc::downgrade(&stats));
        spawn(Box::pin(async move {
            // The drop log ends with the delivery (the sink is gone).
            tokio::select! {
                () = delivery => {}
                () = drops => {}
            }
        }))?;
        Ok(Arc::new(CommandSink {
            program,
            outbox,
            stats,
        }))
    }

    /// The program, as logs name it.
    pub fn program(&self) -> &str {
        self.program.name()
    }

    /// Waits until every event queued so far ran to its end, or `limit`
    /// passed; returns whether all did. The server calls it at exit.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.stats.ledger.drain(limit).await
    }

    /// Runs, failures and drops so far.
    pub fn health(&self) -> CommandHealth {
        let s = &self.stats;
        CommandHealth {
            succeeded: s.succeeded.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.ledger.lanes.dropped_total(),
            pending: s.ledger.pending(),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            healthy: s.healthy.load(Ordering::Relaxed),
        }
    }
}

impl EventSink for CommandSink {
    fn emit(&self, event: &Event) {
        self.outbox.offer(event);
    }
}

/// Takes each queued event once a slot is free and runs the program for it
/// in a task of its own; ends when the sink is gone.
async fn deliver(program: Arc<Program>, mut rx: mpsc::Receiver<Queued>, stats: Arc<Stats>) {
    loop {
        let slot = program
            .slots()
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let Some(queued) = rx.recv().await else {
            return;
        };
        let (program, stats) = (program.clone(), stats.clone());
        tokio::spawn(async move {
            let input = event_input(&queued);
            let outcome = Outcome::of(program.run_in(&input).await);
            drop(slot);
            outcome.report(program.name(), NOTIFY, queued.event);
            let failure = outcome.failure();
            stats.healthy.store(failure.is_none(), Ordering::Relaxed);
            match failure {
                None => stats.succeeded.fetch_add(1, Ordering::Relaxed),
                Some(why) => {
                    *stats
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(why);
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            stats.ledger.settled_one();
        });
    }
}

/// The webhook's body with its event id (`"id"`) as stdin, and the
/// event's variables.
fn event_input(queued: &Queued) -> Input {
    let mut body: Map<String, Value> = serde_json::from_slice(&queued.body).unwrap_or_default();
    body.insert("id".to_owned(), Value::from(queued.id.clone()));
    Input {
        vars: event_vars(&body),
        stdin: Value::Object(body).to_string().into_bytes(),
    }
}

/// Every [`DROPS_LOGGED_EVERY`], one warning if events were dropped since
/// the last; ends when the sink is gone.
async fn log_drops(program: String, stats: std::sync::Weak<Stats>) {
    let mut every = tokio::time::interval(DROPS_LOGGED_EVERY);
    let mut logged = (0, 0);
    loop {
        every.tick().await;
        let Some(stats) = stats.upgrade() else {
            return;
        };
        let lanes = &stats.ledger.lanes;
        let now = (lanes.dropped(Lane::Main), lanes.dropped(Lane::Stream));
        if now != logged {
            tracing::warn!(
                command = %program,
                dropped = now.0 - logged.0,
                dropped_streams = now.1 - logged.1,
                "command events dropped (queue full: the program is slower than the events)"
            );
            logged = now;
        }
    }
}
