//! What every command-line binary needs: logging set-up, signals, and
//! `${VAR}` expansion in config files.

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Installs SIGINT and SIGTERM handlers now and returns a future that
/// resolves on either. Installing at call time, not at first poll, matters:
/// a signal arriving between start-up and the first poll would otherwise
/// get the default action and kill the process without a clean shutdown.
/// Call inside the runtime, before starting the server.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Tunes glibc's allocator for yamux, which allocates a buffer per frame
/// (up to 256 KiB here). With glibc's defaults those sizes cross the
/// dynamic mmap threshold and the heap top is trimmed and regrown
/// constantly: throughput swung 10–25 Gbit/s run to run on page faults
/// (DESIGN.md), and our e2e bench measured 0.24× → 0.32× of direct
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
