//! Processes under test: a child's stdout and stderr collected line by
//! line as they arrive (tests wait on those lines with a deadline, never on
//! a sleep), signals, and freezing a process so it looks hung.
//!
//! Blocking std only, so both sync and async tests use it (the latter from
//! `spawn_blocking` or `block_in_place`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

    /// Blocks until a line satisfies `pred` and returns it; panics after
    /// `patience` or when the process exits first.
    pub fn wait_for(&self, what: &str, patience: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for_nth(what, 1, patience, pred)
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
        self.try_wait_for_nth(n, patience, pred)
            .unwrap_or_else(|why| panic!("{what}: {why}"))
    }

    /// [`Lines::wait_for_nth`] for a program that reports rather than
    /// panics: the error says why (timed out or exited) with the tail.
    pub fn try_wait_for_nth(
        &self,
        n: usize,
        patience: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        assert!(n >= 1);
        let deadline = Instant::now() + patience;
        let (state, changed) = &*self.0;
        let mut guard = state.lock().unwrap();
        loop {
            let Collected { lines, closed } = &*guard;
            if let Some(line) = lines.iter().filter(|l| pred(l)).nth(n - 1) {
                return Ok(line.clone());
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
                return Err(format!(
                    "{why} ({seen} of {n} matching lines seen); tail:\n{tail}"
                ));
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
pub struct Process {
    what: &'static str,
    child: Child,
    /// What it printed on stdout.
    pub stdout: Lines,
    /// What it printed on stderr (its log).
    pub stderr: Lines,
}

impl Process {
    /// Starts `command` (with `RUST_LOG=info` unless it sets its own) and
    /// collects its output;
    /// `what` names it in failure messages.
    pub fn spawn(what: &'static str, command: Command) -> Process {
        Process::try_spawn(what, command).unwrap_or_else(|e| panic!("starting {what}: {e}"))
    }

    /// [`Process::spawn`] returning the error of a command that cannot start.
    pub fn try_spawn(what: &'static str, mut command: Command) -> std::io::Result<Process> {
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out: ChildStdout = child.stdout.take().unwrap();
        let err: ChildStderr = child.stderr.take().unwrap();
        Ok(Process {
            what,
            child,
            stdout: Lines::drain(out),
            stderr: Lines::drain(err),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has not exited (a panic or abort would end it).
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
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
    pub fn wait_exit(self, patience: Duration) -> ExitStatus {
        let what = self.what;
        self.try_wait_exit(patience).unwrap_or_else(|tail| {
            panic!("{what} did not exit within {patience:?}; stderr tail:\n{tail}")
        })
    }

    /// [`Process::wait_exit`] without the panic: the tail of its stderr if
    /// it is still running after `patience` (it is killed on drop).
    pub fn try_wait_exit(mut self, patience: Duration) -> Result<ExitStatus, String> {
        // Its pipes close when it exits; then `wait` returns at once.
        if !self.stderr.wait_closed(patience) {
            return Err(self.stderr.tail(40));
        }
        Ok(self.child.wait().unwrap())
    }
}

impl Drop for Process {
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

/// A process stopped by [`Process::freeze`]; continued on drop, so a failing
/// test never leaves it stopped. Declare it after its [`Process`] so it drops
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
