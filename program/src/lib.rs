//! What Reitunnel's two binaries share that is not the tunnel itself:
//! logging set-up, the runtime, signals, allocator tuning, and config
//! files (TOML read with line numbers in errors, `${VAR}` expansion).
//!
//! ```
//! std::env::set_var("EXAMPLE_SECRET", "s3cret");
//! assert_eq!(reitunnel_program::expand_env("${EXAMPLE_SECRET}").unwrap(), "s3cret");
//! assert_eq!(reitunnel_program::expand_env("${EXAMPLE_UNSET}").unwrap_err(), "EXAMPLE_UNSET");
//! ```

#![deny(unsafe_code)] // one audited exception: tune_allocator

pub mod config_file;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    init_logging_at("info");
}

/// Logs to stderr, filtered by `RUST_LOG`, else by `default` (`warn`, say,
/// where the program draws on the terminal itself).
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The async runtime of a binary, with `threads` workers: 0 means one per
/// core. Sessions, tunnels and streams are tasks that any worker may run, so
/// a server with many clients uses every core. With 1 it is a
/// current-thread runtime, which has no cross-thread wake-ups: the fastest
/// for a single busy session.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// SIGINT and SIGTERM, counted: the first asks for a graceful shutdown,
/// the second forces it; and SIGHUP, the conventional "read your
/// configuration again", counted apart. Handlers are installed when this is
/// created, not at first poll: a signal arriving between start-up and the
/// first poll would otherwise get the default action and kill the process
/// (for SIGHUP too) without a clean shutdown. Create inside the runtime,
/// before starting the server.
#[derive(Debug, Clone)]
pub struct Signals {
    stops: tokio::sync::watch::Receiver<u32>,
    reloads: tokio::sync::watch::Receiver<u32>,
}

impl Signals {
    /// Installs the handlers and starts counting.
    pub fn install() -> Signals {
        let (stop_count, stops) = tokio::sync::watch::channel(0u32);
        let (reload_count, reloads) = tokio::sync::watch::channel(0u32);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(mut int), Ok(mut term), Ok(mut hup)) => {
                    tokio::spawn(async move {
                        loop {
                            let counter = tokio::select! {
                                _ = int.recv() => &stop_count,
                                _ = term.recv() => &stop_count,
                                _ = hup.recv() => &reload_count,
                            };
                            counter.send_modify(|n| *n += 1);
                        }
                    });
                }
                _ => Signals::count_ctrl_c(stop_count),
            }
        }
        #[cfg(not(unix))]
        {
            drop(reload_count);
            Signals::count_ctrl_c(stop_count);
        }
        Signals { stops, reloads }
    }

    /// Signals sent by hand through the returned [`SignalSender`] instead
    /// of by the OS: for running a program in-process, in tests.
    pub fn by_hand() -> (Signals, SignalSender) {
        let (stop, stops) = tokio::sync::watch::channel(0u32);
        let (reload, reloads) = tokio::sync::watch::channel(0u32);
        (Signals { stops, reloads }, SignalSender { stop, reload })
    }

    fn count_ctrl_c(count: tokio::sync::watch::Sender<u32>) {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                count.send_modify(|n| *n += 1);
            }
        });
    }

    /// Resolves once `n` SIGINT/SIGTERMs have arrived (1: shut down, 2: force).
    pub fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + 'static {
        let mut seen = self.stops.clone();
        async move {
            let _ = seen.wait_for(|&count| count >= n).await;
        }
    }

    /// SIGHUPs since [`Signals::install`]: each `changed().await` on the
    /// receiver returns after one or more new ones (a burst is one reload).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u32> {
        self.reloads.clone()
    }
}

/// Sends the signals of [`Signals::by_hand`].
#[derive(Debug)]
pub struct SignalSender {
    stop: tokio::sync::watch::Sender<u32>,
    reload: tokio::sync::watch::Sender<u32>,
}

impl SignalSender {
    /// As a SIGINT or SIGTERM: the first asks for a graceful stop, the second forces it.
    pub fn stop(&self) {
        self.stop.send_modify(|n| *n += 1);
    }

    /// As a SIGHUP: read the configuration again.
    pub fn reload(&self) {
        self.reload.send_modify(|n| *n += 1);
    }
}

/// Tunes glibc's allocator for yamux, which allocates a buffer per frame
/// (up to 256 KiB here). With glibc's defaults those sizes cross the
/// dynamic mmap threshold and the heap top is trimmed and regrown
/// constantly: throughput swung 10–25 Gbit/s run to run on page faults,
/// and our e2e bench measured 0.24× → 0.32× of direct
/// loopback with these settings. Call once at start-up, before threads.
/// No-op on other platforms.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes glibc's allocator parameters; it is called
    // with valid parameter ids and values and touches no Rust-managed memory.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Replaces `${VAR}` in a config value with the variable's value, so
/// secrets can stay out of config files; `Err(VAR)` if it is unset.
pub fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let var = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        out.push_str(&std::env::var(var).map_err(|_| var.to_owned())?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
