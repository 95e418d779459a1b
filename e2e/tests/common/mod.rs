//! Shared by the process tests: start the real server and client binaries
//! on 127.0.0.1, collect what they print line by line as it arrives (tests
//! wait on those lines with a deadline, never on a sleep), freeze and thaw
//! them, and push checked bytes through a tunnel to an echo service.
//!
//! Blocking std only: every child is read by its own threads, every socket
//! operation has a timeout, every wait a deadline.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reitunnel_testkit::{client_program, server_program, Process};
use reitunnel_testkit::{pseudo_random, same_echo};

pub const TOKEN: &str = "e2e-process-secret";
/// Upper bound for any wait: a failure guard, never a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(30);

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
    pub proc: Process,
    pub addr: SocketAddr,
}

/// Starts the server binary on `listen` (use `127.0.0.1:0` for a free port)
/// with the test token, tunnels on 127.0.0.1, and `extra` arguments; waits
/// for its `server started` line.
pub fn start_server(listen: &str, extra: &[&str]) -> Server {
    let mut command = Command::new(server_program());
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
    started(Process::spawn("the server", command))
}

/// Starts the server binary with `--config FILE` alone; waits for its
/// `server started` line.
pub fn start_configured(config: &str) -> Server {
    let mut command = Command::new(server_program());
    command.args(["--config", config]);
    started(Process::spawn("the server", command))
}

/// The server `proc` once it printed its `server started` line.
fn started(proc: Process) -> Server {
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
    pub proc: Process,
}

/// Starts the client binary logging in to `server` with the test token and
/// `extra` arguments (`-R`, `--reconnect-max`, `--config`).
pub fn start_client(server: SocketAddr, extra: &[&str]) -> Client {
    start_client_with_token(server, TOKEN, extra)
}

/// [`start_client`] with another token.
pub fn start_client_with_token(server: SocketAddr, token: &str, extra: &[&str]) -> Client {
    let mut command = Command::new(client_program());
    command
        .args(["--server", &server.to_string(), "--token", token])
        .args(extra);
    Client {
        proc: Process::spawn("the client", command),
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
    reitunnel_testkit::echo_service_on_threads(PATIENCE).expect("an echo service on 127.0.0.1")
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
