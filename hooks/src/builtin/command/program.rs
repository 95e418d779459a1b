//! Running the operator's program once: argv as given (no shell), a
//! cleared environment, the question or event on stdin, its output read
//! (the first [`MAX_OUTPUT`] bytes of each stream kept, the rest read and
//! thrown away, so a flood neither fills memory nor blocks the program),
//! and a deadline.
//!
//! The program runs in a process group of its own. At the deadline, or
//! when the wait is given up (the server's handshake timeout dropped it),
//! the whole group is killed, so a child it forked dies with it; when the
//! program exits, what is left of its group is killed too, so nothing it
//! started outlives it (nor holds its output open). The program itself is
//! always reaped: by the wait here, or by tokio's reaper of dropped
//! children (`kill_on_drop`).

use std::ffi::OsString;
use std::io;
use std::num::NonZeroUsize;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

/// The most of each of stdout and stderr kept (and logged).
pub(crate) const MAX_OUTPUT: usize = 4 << 10;

/// The server's own variables a program gets, besides those the operator names.
const PASSED: [&str; 3] = ["PATH", "HOME", "LANG"];

/// A program and how it is run.
#[derive(Debug)]
pub(crate) struct Program {
    /// The program and its arguments.
    argv: Vec<String>,
    /// The variables taken from the server's environment, read once.
    passed: Vec<(String, OsString)>,
    timeout: Duration,
    /// One per run that may go at once.
    slots: Arc<Semaphore>,
}

/// What a run is given: its variables and its stdin.
pub(crate) struct Input {
    pub(crate) vars: Vec<(&'static str, String)>,
    pub(crate) stdin: Vec<u8>,
}

/// A run that ended by itself.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
}

/// The start of one output stream and how long it was.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// Its first [`MAX_OUTPUT`] bytes.
    pub(crate) kept: Vec<u8>,
    /// Every byte it wrote.
    pub(crate) total: u64,
}

impl Captured {
    /// Its first line, trimmed (`""` when it wrote none).
    pub(crate) fn first_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept);
        text.lines().next().unwrap_or("").trim().to_owned()
    }

    /// What was kept, as text, saying when more was thrown away.
    pub(crate) fn shown(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept).into_owned();
        match self.total > self.kept.len() as u64 {
            true => format!("{text}… ({} bytes in all)", self.total),
            false => text,
        }
    }
}

/// Why a run did not end by itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The program could not be started (not found, not executable).
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// It was still running at the deadline; its group was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    TimedOut { program: String, timeout: Duration },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

impl Program {
    /// `argv` (not empty), run with `PATH`, `HOME`, `LANG` and the
    /// variables named in `env` as the server has them, at most
    /// `max_concurrent` at once, each for at most `timeout`.
    pub(crate) fn new(
        argv: Vec<String>,
        env: &[String],
        timeout: Duration,
        max_concurrent: NonZeroUsize,
    ) -> Program {
        let names = PASSED.iter().copied().chain(env.iter().map(String::as_str));
        let passed = names
            .filter_map(|name| std::env::var_os(name).map(|value| (name.to_owned(), value)))
            .collect();
        Program {
            argv,
            passed,
            timeout,
            slots: Arc::new(Semaphore::new(max_concurrent.get())),
        }
    }

    /// The program as logs and metrics name it (`argv[0]`).
    pub(crate) fn name(&self) -> &str {
        &self.argv[0]
    }

    /// The slots runs take; a caller that must not take work it cannot
    /// start yet (the notifier's queue) takes one before [`Program::run_in`].
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Runs once, waiting for a slot first.
    pub(crate) async fn run(&self, input: &Input) -> Result<Finished, RunError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        self.run_in(input).await
    }

    /// Runs once in a slot the caller holds.
    pub(crate) async fn run_in(&self, input: &Input) -> Result<Finished, RunError> {
        let program = || self.name().to_owned();
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.passed.iter().map(|(k, v)| (k, v)))
            .envs(input.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunError::Spawn {
                program: program(),
                source,
            })?;
        // Declared after `child`, so dropped first: the group is killed
        // before tokio's `kill_on_drop` takes the (then dead) program to reap.
        let group = Group(child.id());
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let ran = async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    // A program that does not read its input may close it: no matter.
                    let _ = stdin.write_all(&input.stdin).await;
                }
            };
            let exited = async {
                let status = child.wait().await;
                // What it left running dies with it, and lets go of the
                // output pipes it may hold, so reading them ends now.
                group.kill();
                status
            };
            let ((), stdout, stderr, status) =
                tokio::join!(feed, capture(stdout), capture(stderr), exited);
            (status, stdout, stderr)
        };
        match tokio::time::timeout(self.timeout, ran).await {
            Ok((status, stdout, stderr)) => {
                let status = status.map_err(|source| RunError::Wait {
                    program: program(),
                    source,
                })?;
                Ok(Finished {
                    status,
                    stdout,
                    stderr,
                })
            }
            Err(_) => {
                drop(group);
                // Killed with its group (and once more alone, should the
                // group be out of reach): this wait is short, and reaps it.
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(RunError::TimedOut {
                    program: program(),
                    timeout: self.timeout,
                })
            }
        }
    }
}

/// A program's process group (its id is the program's pid), killed when dropped.
struct Group(Option<u32>);

impl Group {
    /// Kills every process left in the group.
    fn kill(&self) {
        let Some(pgid) = self.0.and_then(|id| i32::try_from(id).ok()) else {
            return;
        };
        // ESRCH: the group is empty already.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `pipe` to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn capture(pipe: Option<impl AsyncRead + Unpin>) -> Captured {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let mut chunk = [0u8; 8 << 10];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        let room = MAX_OUTPUT - captured.kept.len();
        captured.kept.extend_from_slice(&chunk[..n.min(room)]);
        captured.total += n as u64;
    }
    captured
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Program {
        let argv = ["sh", "-c", script].map(String::from).to_vec();
        Program::new(argv, &[], timeout, NonZeroUsize::MIN)
    }

    fn input(stdin: &str) -> Input {
        Input {
            vars: vec![("REITUNNEL_EVENT", "client.connected".into())],
            stdin: stdin.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn the_program_reads_stdin_and_its_variables_and_its_exit_code_comes_back() {
        let run = sh(
            r#"read line; echo "$REITUNNEL_EVENT $line"; exit 3"#,
            Duration::from_secs(60),
        );
        let done = run.run(&input("hello\n")).await.unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout.first_line(), "client.connected hello");
    }

    #[tokio::test]
    async fn a_flood_of_output_is_read_to_its_end_and_only_its_start_kept() {
        let run = sh(
            "head -c 1000000 /dev/zero | tr '\\0' x",
            Duration::from_secs(60),
        );
        let done = run.run(&input("")).await.unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout.kept.len(), MAX_OUTPUT);
        assert_eq!(done.stdout.total, 1_000_000);
        assert!(done.stdout.shown().ends_with("(1000000 bytes in all)"));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_that_names_it() {
        let run = Program::new(
            vec!["/nonexistent/prog".into()],
            &[],
            Duration::from_secs(5),
            NonZeroUsize::MIN,
        );
        let e = run.run(&input("")).await.unwrap_err();
        assert!(
            e.to_string().starts_with("cannot start /nonexistent/prog"),
            "{e}"
        );
    }
}
