//! Shared by the tests that run the `reitunnel-server` binary: start it,
//! stop it, read its log as it is written (a testkit `Process`), and read
//! its memory and open file descriptors from `/proc`.
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use clap::Parser;
use reitunnel_program::{SignalSender, Signals};
use reitunnel_server::app::{App, Args};
use reitunnel_testkit::{pseudo_random, same_echo, within, Lines, Process, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_reitunnel-server");

/// Longest wait for the server to start or exit: a failure guard.
const PATIENCE: Duration = Duration::from_secs(60);

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
    process: Process,
}

impl Running {
    /// SIGTERM, then the exit status.
    pub fn stop(self) -> ExitStatus {
        self.terminate();
        self.wait()
    }

    /// SIGKILL, as a crash or the OOM killer would, then waits for the exit.
    pub fn kill(self) {
        self.process.signal("KILL");
        self.wait();
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        self.process.signal("TERM");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(self) -> ExitStatus {
        self.process.wait_exit(PATIENCE)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process has not exited (a panic or abort would end it).
    pub fn is_alive(&mut self) -> bool {
        self.process.is_alive()
    }

    /// The server's stderr so far and to come.
    pub fn log(&self) -> &Lines {
        &self.process.stderr
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

/// Starts the server binary with `args`, returning it, its control address
/// (from the "server started" log line) and the log lines up to that one.
pub fn start(args: &[&str]) -> (Running, SocketAddr, Vec<String>) {
    start_with_env(args, &[])
}

/// [`start`] with the variables `env` added to the server's environment.
pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> (Running, SocketAddr, Vec<String>) {
    let mut command = Command::new(BIN);
    command.args(args).envs(env.iter().copied());
    let process = Process::spawn("the server", command);
    let started = |l: &str| l.contains("server started listen=");
    let line = process
        .stderr
        .wait_for("the server's start", PATIENCE, started);
    let addr = line
        .split("server started listen=")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected start line {line:?}"));
    let seen = process
        .stderr
        .all()
        .into_iter()
        .take_while(|l| !started(l))
        .collect();
    (Running { process }, addr, seen)
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

/// The server app run in this process from `flags` (its admin endpoint
/// on) until [`RunningApp::stop`], and its addresses.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub send: SignalSender,
    pub run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    pub async fn start(flags: &[&str]) -> RunningApp {
        let args =
            Args::parse_from(std::iter::once("reitunnel-server").chain(flags.iter().copied()));
        let app = App::bind(args).await.unwrap();
        let (addr, admin) = (
            app.local_addr(),
            app.admin_addr().expect("the admin endpoint"),
        );
        let (signals, send) = Signals::by_hand();
        let run = tokio::spawn(app.run(signals));
        RunningApp {
            addr,
            admin,
            send,
            run,
        }
    }

    /// Stops it as SIGTERM would and waits for its run to end cleanly.
    pub async fn stop(self) {
        self.send.stop();
        within(PATIENCE, "run after the stop", self.run)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A connection to `redis`, as a consumer of the fleet's or a hook's keys.
pub async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
