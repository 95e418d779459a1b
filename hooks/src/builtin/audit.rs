//! The audit log: one JSON object per line, appended to a file by a
//! background thread, so hooks only format and enqueue. A full queue drops
//! the line and counts it rather than block the tunnel; stream events may
//! fill only half of the queue (`lanes.rs`), so a flood of refused visitors
//! cannot crowd out client and tunnel events; `flush` (called on
//! server stop) waits until everything queued is on disk; `reopen` (called
//! on SIGHUP) starts a new file at the same path after a log rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::lanes::{Lanes, Ticket};
use crate::events::{Event, EventSink, Lane};

enum Command {
    /// A line, and its place in the queue (given back once written).
    Line(String, Ticket),
    Flush(mpsc::Sender<io::Result<()>>),
    Reopen(mpsc::Sender<io::Result<()>>),
}

/// A JSON-lines file sink. Use it behind an [`EventHook`](super::EventHook):
/// `EventHook::new("audit", EventBus::new().with(sink), false)`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{EventHook, JsonLinesFile};
/// use reitunnel_hooks::events::EventBus;
/// use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login};
///
/// let path = std::env::temp_dir().join(format!("reitunnel-audit-doc-{}.jsonl", std::process::id()));
/// let audit = JsonLinesFile::open(&path, 1024)?;
/// let bus = EventBus::new().for_server("edge-1").with(audit.clone());
/// let chain = HookChain::builder().hook(EventHook::new("audit", bus, false)).build();
///
/// # let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// # let nonce = [0u8; 32];
/// # let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap();
/// drop(client);
///
/// audit.flush()?; // the server flushes on stop
/// let log = std::fs::read_to_string(&path)?;
/// std::fs::remove_file(&path)?;
/// let lines: Vec<serde_json::Value> =
///     log.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
/// assert_eq!(lines.len(), 2);
/// assert_eq!(lines[0]["event"], "client.connected");
/// assert_eq!(lines[1]["event"], "client.disconnected");
/// assert_eq!(lines[1]["client"], "alice");
/// assert_eq!(audit.dropped(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonLinesFile {
    path: PathBuf,
    tx: SyncSender<Command>,
    lanes: Lanes,
}

/// How long the writer waits for more lines before flushing what it has.
const IDLE_FLUSH: Duration = Duration::from_millis(200);

impl JsonLinesFile {
    /// Opens (creating, appending) `path` and starts the writer thread.
    /// `queue` lines (at least 2) may wait before new ones are dropped;
    /// lines about visitor streams may fill half of it.
    pub fn open(path: impl AsRef<Path>, queue: usize) -> io::Result<Arc<Self>> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let lanes = Lanes::new(queue);
        let (tx, rx) = mpsc::sync_channel(lanes.capacity());
        let reopen_at = path.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(BufWriter::new(file), &reopen_at, rx))?;
        Ok(Arc::new(JsonLinesFile { path, tx, lanes }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dropped because the queue (or their lane's share of it) was full.
    pub fn dropped(&self) -> u64 {
        self.lanes.dropped_total()
    }

    /// Of [`dropped`](Self::dropped), the lines about visitor streams
    /// ([`Lane::Stream`]).
    pub fn dropped_streams(&self) -> u64 {
        self.lanes.dropped(Lane::Stream)
    }

    /// Waits until every line queued so far is written and flushed.
    pub fn flush(&self) -> io::Result<()> {
        self.ask(Command::Flush)
    }

    /// Flushes, closes the file and opens the path again (creating it), so
    /// a log rotated away by logrotate is followed by a new file. Lines
    /// queued before the call go to the old file. On an error the writer
    /// keeps the old file.
    pub fn reopen(&self) -> io::Result<()> {
        self.ask(Command::Reopen)
    }

    /// Sends a command to the writer and waits for its answer.
    fn ask(&self, command: fn(mpsc::Sender<io::Result<()>>) -> Command) -> io::Result<()> {
        let (ack, done) = mpsc::channel();
        self.tx
            .send(command(ack))
            .map_err(|_| io::Error::other("audit writer stopped"))?;
        done.recv()
            .map_err(|_| io::Error::other("audit writer stopped"))?
    }
}

fn write_lines(mut out: BufWriter<File>, path: &Path, rx: Receiver<Command>) {
    loop {
        let command = match rx.recv_timeout(IDLE_FLUSH) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        match command {
            Command::Line(line, _place) => {
                if let Err(e) = writeln!(out, "{line}") {
                    tracing::error!(error = %e, "audit log write failed");
                }
            }
            Command::Flush(ack) => {
                let _ = ack.send(out.flush());
            }
            Command::Reopen(ack) => {
                let reopened = out.flush().and_then(|()| {
                    let file = OpenOptions::new().create(true).append(true).open(path)?;
                    out = BufWriter::new(file);
                    Ok(())
                });
                let _ = ack.send(reopened);
            }
        }
    }
}

impl EventSink for JsonLinesFile {
    fn emit(&self, event: &Event) {
        let flush = event.event == "server.stopped";
        if let Some(place) = self.lanes.admit(event.lane) {
            match self.tx.try_send(Command::Line(event.to_json(), place)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.lanes.dropped_one(event.lane),
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        if flush {
            // The last event: make sure the whole log is on disk before the process exits.
            if let Err(e) = self.flush() {
                tracing::error!(error = %e, "audit log flush failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sink with no writer behind it: its queue only fills.
    fn stalled(queue: usize) -> (JsonLinesFile, Receiver<Command>) {
        let lanes = Lanes::new(queue);
        let (tx, rx) = mpsc::sync_channel(lanes.capacity());
        let path = PathBuf::from("stalled.jsonl");
        (JsonLinesFile { path, tx, lanes }, rx)
    }

    #[test]
    fn a_flood_of_stream_lines_leaves_room_for_a_client_connecting() {
        let (sink, queued) = stalled(8);
        for n in 0..100 {
            sink.emit(&Event::now("error").with("n", n).about_a_stream());
        }
        sink.emit(&Event::now("client.connected").with("client", "bob"));
        assert_eq!((sink.dropped(), sink.dropped_streams()), (96, 96));
        let lines: Vec<String> = queued
            .try_iter()
            .filter_map(|c| match c {
                Command::Line(line, _) => Some(line),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines.len(),
            5,
            "4 stream lines (half of 8), then the client"
        );
        assert!(lines[4].contains("client.connected"), "{lines:?}");
    }
}
