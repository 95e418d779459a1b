//! Shared by the tests that run the `reitunnel-server` binary: start it,
//! stop it, read its log as it is written, and read its memory and open
//! file descriptors from `/proc`.
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use reitunnel_testkit::{pseudo_random, same_echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_reitunnel-server");

/// Every line the server wrote to stderr, in order, as it arrives. Filled by
/// the thread that drains the pipe (so the server never blocks on it); tests
/// wait on it for the server's warnings with a deadline.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Log {
    fn push(&self, line: String) {
        let (lines, changed) = &*self.0;
        lines.lock().unwrap().push(line);
        changed.notify_all();
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    /// How many lines so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0 .0.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// Blocks until at least `n` lines satisfy `pred` and returns the first
    /// of them; panics with the log's tail after `patience`.
    pub fn wait_for_n(
        &self,
        what: &str,
        n: usize,
        patience: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + patience;
        let (lines, changed) = &*self.0;
        let mut guard = lines.lock().unwrap();
        loop {
            let matching: Vec<&String> = guard.iter().filter(|l| pred(l)).collect();
            if matching.len() >= n {
                return matching[0].clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = guard[guard.len().saturating_sub(40)..].join("\n");
                panic!(
                    "no {n} log lines for {what} within {patience:?} ({} seen); log tail:\n{tail}",
                    matching.len()
                );
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Blocks until a line satisfies `pred` and returns it; panics after `patience`.
    pub fn wait_for(&self, what: &str, patience: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_n(what, 1, patience, pred)
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far, KiB.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `pid`'s current and peak resident size.
    pub fn of(pid: u32) -> std::io::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {name}"))
                })
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            self.rss_mib(),
            self.hwm_mib()
        )
    }
}

/// A running server process; killed on drop, so a failing test leaves nothing behind.
pub struct Running {
    child: Child,
    log: Log,
}

impl Running {
    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate();
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited (a panic or abort would end it).
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The server's stderr so far and to come.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Its current and peak resident memory.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid()).expect("the server's /proc status")
    }

    /// How many of its threads are named `name` (as `/proc` shows them).
    pub fn threads_named(&self, name: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("the server's /proc task directory")
            .filter_map(Result::ok)
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
            .count()
    }

    /// How many file descriptors it holds (sockets, listeners, files).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the server's /proc fd directory")
            .count()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server binary with `args`, returning it, its control address
/// (from the "server started" log line) and the log lines up to that one.
pub fn start(args: &[&str]) -> (Running, SocketAddr, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Log::default();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before starting")
            .unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("server started listen=").nth(1) {
            break rest.trim().parse().unwrap();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let sink = log.clone();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.push(l)));
    (Running { child, log }, addr, seen)
}

/// Sends `len` pseudo-random bytes to `addr` while reading the echo, then
/// compares every byte.
pub async fn echo_through(addr: SocketAddr, len: usize, seed: u64) -> Result<(), String> {
    let payload = pseudo_random(seed, len);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("visiting {addr}: {e}"))?;
    let (mut r, mut w) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await?;
        w.shutdown().await
    });
    let mut back = Vec::with_capacity(len);
    r.read_to_end(&mut back)
        .await
        .map_err(|e| format!("reading the echo: {e}"))?;
    writer
        .await
        .unwrap()
        .map_err(|e| format!("writing to the tunnel: {e}"))?;
    same_echo(&payload, &back, addr)
}

/// Starts the server binary from a config file in `dir`: `settings` (its
/// keys and tables), then an audit log of every event, streams included.
/// Returns the server, its control address and the audit log's path.
pub fn start_audited(
    dir: &std::path::Path,
    settings: &str,
) -> (Running, SocketAddr, std::path::PathBuf) {
    let (config, audit) = (dir.join("server.toml"), dir.join("audit.jsonl"));
    let hook = format!(
        "[[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
        audit.display()
    );
    std::fs::write(&config, format!("{settings}{hook}")).expect("writing the config");
    let (server, addr, _) = start(&["--config", config.to_str().expect("a UTF-8 path")]);
    (server, addr, audit)
}

/// Checks that every open in an audit log (streams included) has exactly
/// one close: clients, tunnels and streams alike. Returns the streams opened.
pub fn assert_audit_balanced(audit: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(audit).expect("the audit log");
    let count = |event: &str| {
        text.lines()
            .filter(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                v["event"] == event
            })
            .count()
    };
    for (open, close) in [
        ("client.connected", "client.disconnected"),
        ("tunnel.opened", "tunnel.closed"),
        ("stream.opened", "stream.closed"),
    ] {
        assert_eq!(count(open), count(close), "{open} against {close}");
    }
    count("stream.opened")
}
