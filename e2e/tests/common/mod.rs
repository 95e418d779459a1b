//! Shared by the process tests: start the real server and client binaries
//! on 127.0.0.1, collect what they print line by line as it arrives (tests
//! wait on those lines with a deadline, never on a sleep), freeze and thaw
//! them, and push checked bytes through a tunnel to an echo service.
//!
//! Blocking std only: every child is read by its own threads, every socket
//! operation has a timeout, every wait a deadline.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use reitunnel_testkit::{pseudo_random, same_echo};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_e2e-server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_e2e-client");
pub const TOKEN: &str = "e2e-process-secret";
/// Upper bound for any wait: a failure guard, never a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Every line one pipe of a child carried, in order, as it arrives, and
/// whether the pipe has closed (the process exited). Filled by a thread that
/// drains the pipe, so the child never blocks writing to it.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Collected>, Condvar)>);

/// What a [`Lines`] holds.
#[derive(Default)]
struct Collected {
    lines: Vec<String>,
    closed: bool,
}

impl Lines {
    fn drain(pipe: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let (state, changed) = &*sink.0;
                state.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            let (state, changed) = &*sink.0;
            state.lock().unwrap().closed = true;
            changed.notify_all();
        });
        lines
    }

    /// A copy of every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    /// How many lines so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0
             .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Blocks until `n` lines satisfy `pred` and returns the `n`th of them;
    /// panics with the tail after `patience`, or at once if the pipe closed
    /// first (the process exited).
    pub fn wait_for_nth(
        &self,
        what: &str,
        n: usize,
        patience: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        assert!(n >= 1);
        let deadline = Instant::now() + patience;
        let (state, changed) = &*self.0;
        let mut guard = state.lock().unwrap();
        loop {
            let Collected { lines, closed } = &*guard;
            if let Some(line) = lines.iter().filter(|l| pred(l)).nth(n - 1) {
                return line.clone();
            }
            let now = Instant::now();
            if *closed || now >= deadline {
                let seen = lines.iter().filter(|l| pred(l)).count();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                let why = if *closed {
                    "the process closed its output".to_owned()
                } else {
                    format!("not within {patience:?}")
                };
                drop(guard); // do not poison the lock the draining thread needs
                panic!("{what}: {why} ({seen} of {n} matching lines seen); tail:\n{tail}");
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Blocks until the pipe closes; false if it is still open after `patience`.
    pub fn wait_closed(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let (state, changed) = &*self.0;
        let mut guard = state.lock().unwrap();
        loop {
            if guard.closed {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// The last lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.all();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A child process with its stdout and stderr collected; continued and
/// killed on drop, so a failing test leaves nothing behind (not even a
/// stopped process).
pub struct Proc {
    what: &'static str,
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    fn spawn(what: &'static str, mut command: Command) -> Proc {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let out: ChildStdout = child.stdout.take().unwrap();
        let err: ChildStderr = child.stderr.take().unwrap();
        Proc {
            what,
            child,
            stdout: Lines::drain(out),
            stderr: Lines::drain(err),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// SIGSTOP; the guard sends SIGCONT when dropped (or by [`Frozen::thaw`]).
    pub fn freeze(&self) -> Frozen {
        self.signal("STOP");
        Frozen(Some(self.pid()))
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(mut self, patience: Duration) -> ExitStatus {
        // Its pipes close when it exits; then `wait` returns at once.
        if !self.stderr.wait_closed(patience) {
            panic!(
                "{} did not exit within {patience:?}; stderr tail:\n{}",
                self.what,
                self.stderr.tail(40)
            );
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGKILL ends a stopped process too; CONT first all the same.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A process stopped by [`Proc::freeze`]; continued on drop, so a failing
/// test never leaves it stopped. Declare it after its [`Proc`] so it drops
/// first, while the pid is still that process's.
pub struct Frozen(Option<u32>);

impl Frozen {
    /// SIGCONT now.
    pub fn thaw(mut self) {
        if let Some(pid) = self.0.take() {
            send_signal(pid, "CONT");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A config file unique to one test run, removed on drop.
pub struct ConfigFile(PathBuf);

impl ConfigFile {
    /// Writes `text` to a file named after `name` and this test process.
    pub fn new(name: &str, text: &str) -> ConfigFile {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    /// The path, as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running server process and its control address (from its
/// `server started listen=ADDR` line).
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Starts the server binary on `listen` (use `127.0.0.1:0` for a free port)
/// with the test token, tunnels on 127.0.0.1, and `extra` arguments; waits
/// for its `server started` line.
pub fn start_server(listen: &str, extra: &[&str]) -> Server {
    let mut command = Command::new(SERVER_BIN);
    command
        .args([
            "--listen",
            listen,
            "--token",
            TOKEN,
            "--bind-ip",
            "127.0.0.1",
        ])
        .args(["--stats-interval", "0"])
        .args(extra);
    let proc = Proc::spawn("the server", command);
    let line = proc
        .stderr
        .wait_for_nth("server started", 1, PATIENCE, |l| {
            l.contains("server started listen=")
        });
    let addr = line
        .split("server started listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected start line {line:?}"));
    Server { proc, addr }
}

/// A running client process with one reverse tunnel.
pub struct Client {
    pub proc: Proc,
}

/// Starts the client binary logging in to `server` with the test token and
/// `extra` arguments (`-R`, `--reconnect-max`, `--config`).
pub fn start_client(server: SocketAddr, extra: &[&str]) -> Client {
    let mut command = Command::new(CLIENT_BIN);
    command
        .args(["--server", &server.to_string(), "--token", TOKEN])
        .args(extra);
    Client {
        proc: Proc::spawn("the client", command),
    }
}

impl Client {
    /// Waits for its `n`th `tunnel N ready: PUBLIC -> TARGET` line (counting
    /// from 1 over the process's life) and returns the public address.
    pub fn ready(&self, n: usize, patience: Duration) -> SocketAddr {
        let line = self
            .proc
            .stdout
            .wait_for_nth("the client's ready line", n, patience, is_ready);
        line.split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
    }

    /// How many ready lines it printed so far.
    pub fn ready_lines(&self) -> usize {
        self.proc.stdout.count(is_ready)
    }
}

fn is_ready(line: &str) -> bool {
    line.starts_with("tunnel ") && line.contains(" ready: ")
}

/// An echo service on 127.0.0.1:0, a thread per connection; half-closes
/// after its peer does.
pub fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(PATIENCE));
                let _ = conn.set_write_timeout(Some(PATIENCE));
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Sends `len` pseudo-random bytes through `addr` while reading the echo
/// (so neither side's buffers fill), then compares every byte and the
/// length. Every socket operation is bounded by [`PATIENCE`].
pub fn echo_check(addr: SocketAddr, len: usize, seed: u64) -> Result<(), String> {
    let payload = pseudo_random(seed, len);
    let stream =
        TcpStream::connect_timeout(&addr, PATIENCE).map_err(|e| format!("visiting {addr}: {e}"))?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let writing = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::with_capacity(len);
    let read = (&stream).read_to_end(&mut back);
    let written = writing.join().unwrap();
    written.map_err(|e| format!("writing to {addr}: {e}"))?;
    read.map_err(|e| {
        format!(
            "reading the echo from {addr} ({} bytes so far): {e}",
            back.len()
        )
    })?;
    same_echo(&payload, &back, addr)
}

/// Milliseconds, for the measured-time lines.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
