//! The soak: release builds of `reitunnel-server` and `reitunnel-client`
//! under a bounded mix of everything the fault tests do one at a time.
//!
//! One client logs in through the fault proxy with a tunnel to an echo
//! service; visitor threads push checked bytes through it without pause;
//! another thread logs short-lived clients in and out; and every few seconds
//! the proxy does something to the link (a reset, a half-open spell, added
//! latency, a throttle, a stalled direction). At the end it prints a summary
//! (visitors by outcome, bytes, reconnects, logins, faults, server warnings
//! by kind, memory and descriptors) and fails if a byte came back wrong, a
//! process exited badly, or the server's audit log does not balance.
//!
//! `soak [--minutes N] [--bin-dir DIR]`; `testkit/soak.sh` builds and runs it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reitunnel_testkit::{echo_service_on_threads, FaultProxy, Lines, Process, Toward};

const TOKEN: &str = "soak-token";
/// Bound on every socket wait: a failure guard.
const PATIENCE: Duration = Duration::from_secs(30);
const VISITOR_THREADS: usize = 4;
/// Visitor sizes, in turn.
const SIZES: [usize; 4] = [1 << 10, 16 << 10, 256 << 10, 4 << 20];
/// Time between two faults.
const FAULT_EVERY: Duration = Duration::from_secs(8);

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}\nusage: soak [--minutes N] [--bin-dir DIR]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    duration: Duration,
    bin_dir: PathBuf,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut duration = Duration::from_secs(600);
        let mut bin_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--minutes" => {
                    let minutes: f64 = value()?
                        .parse()
                        .map_err(|_| "--minutes takes a number, like 10 or 1.5")?;
                    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                        return Err("--minutes must be above 0 and at most a day".into());
                    }
                    duration = Duration::from_secs_f64(minutes * 60.0);
                }
                "--bin-dir" => bin_dir = PathBuf::from(value()?),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(Args { duration, bin_dir })
    }
}

/// SIGTERM, then a bounded wait for the exit; whether it was a success.
fn terminate(process: Process) -> bool {
    process.signal("TERM");
    process
        .try_wait_exit(PATIENCE)
        .is_ok_and(|status| status.success())
}

/// Waits for the first line of `lines` containing `text`.
fn line_with(lines: &Lines, text: &str) -> Result<String, String> {
    lines.try_wait_for_nth(1, PATIENCE, |l| l.contains(text))
}

/// Peak resident memory (MiB) and open descriptors of `pid`.
fn usage(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (hwm_kib / 1024.0, fds)
}

/// How one visitor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Every byte came back, in order.
    Whole,
    /// The connection was refused or reset before anything came back.
    Refused,
    /// Cut short by a fault; what did come back was right.
    Cut,
    /// A byte came back different: the one outcome a fault can't excuse.
    Corrupt,
}

/// Sends `len` bytes through `addr` and checks the echo.
fn visit(addr: SocketAddr, len: usize, seed: u64) -> Outcome {
    let Ok(stream) = TcpStream::connect_timeout(&addr, PATIENCE) else {
        return Outcome::Refused;
    };
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let _ = stream.set_write_timeout(Some(PATIENCE));
    let payload = reitunnel_testkit::pseudo_random(seed, len);
    let Ok(mut writer) = stream.try_clone() else {
        return Outcome::Refused;
    };
    let sent = payload.clone();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&sent);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut back = Vec::with_capacity(len);
    let _ = (&stream).take(len as u64 + 1).read_to_end(&mut back);
    let _ = writing.join();
    if back.len() > len || back[..] != payload[..back.len()] {
        Outcome::Corrupt
    } else if back.len() == len {
        Outcome::Whole
    } else if back.is_empty() {
        Outcome::Refused
    } else {
        Outcome::Cut
    }
}

#[derive(Default)]
struct Tally {
    outcomes: Mutex<BTreeMap<Outcome, u64>>,
    bytes: AtomicU64,
    logins: AtomicU64,
    login_failures: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn add<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
        *map.lock().unwrap().entry(key).or_default() += 1;
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let bin = |name: &str| {
        let path = args.bin_dir.join(name);
        path.exists().then_some(path.clone()).ok_or(format!(
            "{} not found: build it with testkit/soak.sh",
            path.display()
        ))
    };
    let (server_bin, client_bin) = (bin("reitunnel-server")?, bin("reitunnel-client")?);
    let dir = std::env::temp_dir().join(format!("reitunnel-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let audit = dir.join("audit.jsonl");
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nbind_ip = \"127.0.0.1\"\n\
             port_lease_secs = 120\nstats_interval = 0\n\
             [limits]\nheartbeat_interval_ms = 500\nheartbeat_timeout_ms = 3000\n\
             [[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
            audit.display()
        ),
    )
    .map_err(|e| e.to_string())?;

    let mut command = Command::new(&server_bin);
    command.args(["--config", &config.to_string_lossy()]);
    let server = Process::try_spawn("the server", command).map_err(|e| e.to_string())?;
    let started = line_with(&server.stderr, "server started listen=")?;
    let server_addr: SocketAddr = started
        .split("server started listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or(format!("unexpected start line {started:?}"))?;
    let echo = echo_service_on_threads(PATIENCE).map_err(|e| e.to_string())?;
    let proxy = FaultProxy::start(server_addr).map_err(|e| e.to_string())?;
    let client = |to: SocketAddr, name: &str| {
        let mut command = Command::new(&client_bin);
        command.args([
            "--server",
            &to.to_string(),
            "--token",
            TOKEN,
            "--name",
            name,
            "--reconnect-max",
            "1",
            "-R",
            &format!("0:{echo}"),
        ]);
        Process::try_spawn("a client", command).map_err(|e| e.to_string())
    };
    let steady = client(proxy.addr(), "steady")?;
    let ready = line_with(&steady.stdout, " ready: ")?;
    let public: SocketAddr = ready
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or(format!("unexpected ready line {ready:?}"))?;
    let (_, server_fds_at_start) = usage(server.pid());

    let start = Instant::now();
    let deadline = start + args.duration;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for thread in 0..VISITOR_THREADS {
        let (tally, stop) = (tally.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = thread as u64;
            while !stop.load(Ordering::Relaxed) {
                let len = SIZES[n as usize % SIZES.len()];
                let outcome = visit(public, len, n);
                if outcome == Outcome::Whole {
                    tally.bytes.fetch_add(2 * len as u64, Ordering::Relaxed);
                }
                Tally::add(&tally.outcomes, outcome);
                n += VISITOR_THREADS as u64;
            }
        }));
    }
    {
        // Login churn: short-lived clients straight to the server.
        let (tally, stop) = (tally.clone(), stop.clone());
        let client = client_bin.clone();
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let outcome = churn_once(&client, server_addr, echo, n);
                match outcome {
                    Ok(()) => {
                        tally.logins.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => Tally::add(&tally.login_failures, e),
                }
            }
        }));
    }

    // Faults, in turn, until the deadline.
    let faults: [(&str, &dyn Fn()); 6] = [
        ("reset", &|| proxy.cut()),
        ("half-open 4 s", &|| {
            spell(&proxy, Duration::from_secs(4), |p, on| p.black_hole(on))
        }),
        ("latency 25 ms each way, 6 s", &|| {
            proxy.set_latency(Duration::from_millis(25));
            std::thread::sleep(Duration::from_secs(6));
            proxy.set_latency(Duration::ZERO);
        }),
        ("throttle 2 MB/s, 5 s", &|| {
            proxy.throttle(Some(2_000_000));
            std::thread::sleep(Duration::from_secs(5));
            proxy.throttle(None);
        }),
        ("client side stops reading, 3 s", &|| {
            spell(&proxy, Duration::from_secs(3), |p, on| {
                p.stall(Toward::Connector, on)
            })
        }),
        ("server side stops reading, 3 s", &|| {
            spell(&proxy, Duration::from_secs(3), |p, on| {
                p.stall(Toward::Target, on)
            })
        }),
    ];
    let mut next = 0;
    while Instant::now() + FAULT_EVERY < deadline {
        std::thread::sleep(FAULT_EVERY);
        let (name, fault) = faults[next % faults.len()];
        fault();
        Tally::add(&tally.faults, name);
        next += 1;
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }

    let (server_peak, server_fds) = usage(server.pid());
    let (client_peak, _) = usage(steady.pid());
    let reconnects = steady
        .stderr
        .count(|l| l.contains("disconnected; reconnecting"));
    let warnings = warnings_by_kind(&server.stderr.all());
    let client_ok = terminate(steady);
    let server_ok = terminate(server);
    let balance = audit_balance(&audit)?;
    let _ = std::fs::remove_dir_all(&dir);

    let outcomes = tally.outcomes.lock().unwrap().clone();
    let corrupt = outcomes.get(&Outcome::Corrupt).copied().unwrap_or(0);
    let whole = outcomes.get(&Outcome::Whole).copied().unwrap_or(0);
    let balanced = balance.iter().all(|(_, open, close)| open == close);
    println!(
        "soak: {:.1} minutes against {}",
        start.elapsed().as_secs_f64() / 60.0,
        args.bin_dir.display()
    );
    println!("  visitors by outcome: {outcomes:?}");
    println!(
        "  bytes echoed whole: {:.1} MiB",
        tally.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    );
    println!("  faults injected: {:?}", tally.faults.lock().unwrap());
    println!("  steady client reconnects: {reconnects}");
    println!(
        "  short-lived logins: {} whole, failures {:?}",
        tally.logins.load(Ordering::Relaxed),
        tally.login_failures.lock().unwrap()
    );
    println!("  server warnings by kind:");
    for (kind, n) in &warnings {
        println!("    {n} x {kind}");
    }
    println!(
        "  server: peak RSS {server_peak:.1} MiB, descriptors {server_fds_at_start} at start, {server_fds} at the end; steady client peak RSS {client_peak:.1} MiB"
    );
    for (kind, open, close) in &balance {
        println!("  audit {kind}: {open} opened, {close} closed");
    }
    println!(
        "  exits: client {}, server {}",
        ok(client_ok),
        ok(server_ok)
    );
    let passed = corrupt == 0 && whole > 0 && balanced && client_ok && server_ok;
    println!("soak {}", if passed { "passed" } else { "FAILED" });
    Ok(passed)
}

fn ok(success: bool) -> &'static str {
    if success {
        "0"
    } else {
        "FAILED"
    }
}

/// Turns a fault on for `length`, then off.
fn spell(proxy: &FaultProxy, length: Duration, set: impl Fn(&FaultProxy, bool)) {
    set(proxy, true);
    std::thread::sleep(length);
    set(proxy, false);
}

/// One short-lived client: logs in with a tunnel, echoes through it, leaves.
fn churn_once(
    client_bin: &Path,
    server: SocketAddr,
    echo: SocketAddr,
    n: u64,
) -> Result<(), String> {
    let mut command = Command::new(client_bin);
    command.args([
        "--server",
        &server.to_string(),
        "--token",
        TOKEN,
        "--name",
        &format!("churn-{n}"),
        "-R",
        &format!("0:{echo}"),
    ]);
    let client = Process::try_spawn("a churn client", command).map_err(|e| e.to_string())?;
    let ready = line_with(&client.stdout, " ready: ").map_err(|_| "never ready".to_owned())?;
    let public: SocketAddr = ready
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .ok_or("unexpected ready line")?;
    let outcome = visit(public, 64 << 10, n);
    let exited = terminate(client);
    match (outcome, exited) {
        (Outcome::Whole, true) => Ok(()),
        (Outcome::Whole, false) => Err("bad exit".into()),
        (other, _) => Err(format!("visitor {other:?}")),
    }
}

/// The server's warning lines, counted by kind: the message and its
/// `error` field, each number (ids, ports, durations) written as `#`.
fn warnings_by_kind(lines: &[String]) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for line in lines.iter().filter(|l| l.contains(" WARN ")) {
        let message = line.split(" WARN ").nth(1).unwrap_or_default();
        let mut kind = String::new();
        for c in message.chars().take(100) {
            let c = if c.is_ascii_digit() { '#' } else { c };
            if !(c == '#' && kind.ends_with('#')) {
                kind.push(c);
            }
        }
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// Opens and closes per kind in the audit log.
fn audit_balance(path: &Path) -> Result<Vec<(&'static str, usize, usize)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let count = |event: &str| {
        let needle = format!("\"event\":\"{event}\"");
        text.lines().filter(|l| l.contains(&needle)).count()
    };
    Ok([
        ("clients", "client.connected", "client.disconnected"),
        ("tunnels", "tunnel.opened", "tunnel.closed"),
        ("streams", "stream.opened", "stream.closed"),
    ]
    .into_iter()
    .map(|(kind, open, close)| (kind, count(open), count(close)))
    .collect())
}
