//! A real `redis-server` (Debian's redis-server package) for the tests of
//! the Redis event bus: on a free loopback port, nothing persisted
//! (`--save '' --appendonly no`), its files in the test's directory, killed
//! when dropped. It can be stopped and started again on the same port, so a
//! test can take Redis away in the middle of a session and bring it back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools::free_port;
use crate::Process;

/// redis-server, as Debian's redis-server installs it.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long redis-server may take to answer PING: a failure guard.
const STARTUP: Duration = Duration::from_secs(60);

/// A running (or stopped, see [`RedisServer::stop`]) redis-server.
pub struct RedisServer {
    addr: SocketAddr,
    dir: PathBuf,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port with its working files
    /// in `dir`; returns once it answers PING. Check
    /// [`installed`](crate::installed)`(REDIS_SERVER, "redis-server")` first.
    pub fn start(dir: &Path) -> RedisServer {
        let mut redis = RedisServer {
            addr: free_port(),
            dir: dir.to_owned(),
            process: None,
        };
        redis.restart();
        redis
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits until it is
    /// gone; the port stays this server's, for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal("KILL");
            process.wait_exit(STARTUP);
        }
    }

    /// Starts it (again) on the same port, empty; returns once it answers
    /// PING. A running one is stopped first.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(REDIS_SERVER);
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir);
        self.process = Some(Process::spawn("redis-server", command));
        let deadline = Instant::now() + STARTUP;
        while !answers_ping(self.addr) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {} within {STARTUP:?}",
                self.addr
            );
            let exited = self.process.as_mut().is_some_and(|p| !p.is_alive());
            assert!(!exited, "redis-server exited at start; see its output");
            std::thread::yield_now();
        }
    }
}

/// Whether a Redis server at `addr` answers `PING` with `+PONG`.
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(STARTUP));
    if conn.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
