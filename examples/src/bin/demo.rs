//! `cargo run --release -p reitunnel-examples --bin demo`
//!
//! A real tunnel on loopback with no setup: a server, a client exposing an
//! echo service, visitors pushing data through it, and the hook pipeline
//! metering all of it live. Ends with a wrong-token login to show a refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reitunnel_client::{Client, ClientConfig};
use reitunnel_examples::{echo_service, Loopback};
use reitunnel_hooks::builtin::{Counters, Secret};
use reitunnel_hooks::{
    ClientInfo, CloseReason, Gate, Hook, HookChain, HookResult, Rejection, ServerInfo, StreamEnd,
    Totals, TunnelInfo,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Prints lifecycle events as the server's hooks see them.
struct Printer;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Hook for Printer {
    fn name(&self) -> &str {
        "printer"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_server_start(&self, s: &ServerInfo) -> HookResult {
        println!("  [hook] server.started   listen={}", s.listen);
        Ok(())
    }
    fn on_server_stop(&self, _: &ServerInfo) -> HookResult {
        println!("  [hook] server.stopped");
        Ok(())
    }
    fn on_client_disconnect(&self, c: &ClientInfo, r: &CloseReason, t: &Totals) -> HookResult {
        println!(
            "  [hook] client.disconnected {} reason={r} in={:.1}MiB out={:.1}MiB streams={}",
            c.name,
            mb(t.bytes_in),
            mb(t.bytes_out),
            t.streams
        );
        Ok(())
    }
    fn on_tunnel_open(&self, t: &TunnelInfo) -> Gate {
        println!(
            "  [hook] tunnel.opened    {} {} -> {} (client {})",
            t.id, t.bind, t.target, t.client.name
        );
        Gate::Allow
    }
    fn on_tunnel_close(&self, t: &TunnelInfo, r: &CloseReason, tot: &Totals) -> HookResult {
        println!(
            "  [hook] tunnel.closed    {} reason={r} in={:.1}MiB out={:.1}MiB streams={}",
            t.id,
            mb(tot.bytes_in),
            mb(tot.bytes_out),
            tot.streams
        );
        Ok(())
    }
    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        let (s, r, t) = (end.stream, end.reason, end.totals);
        println!(
            "  [hook] stream.closed    {} from {} reason={r} in={:.1}MiB out={:.1}MiB",
            s.id,
            s.peer,
            mb(t.bytes_in),
            mb(t.bytes_out)
        );
        Ok(())
    }
    fn on_rejected(&self, r: &Rejection<'_>) {
        println!(
            "  [hook] rejected         by={} reason=\"{}\"",
            r.by, r.reason
        );
    }
}

const VISITORS: u64 = 12;
const PER_VISITOR: usize = 32 << 20;

async fn visitor(addr: std::net::SocketAddr, sent: Arc<AtomicU64>) -> std::io::Result<()> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let buf = vec![0x5a; 64 * 1024];
        for _ in 0..PER_VISITOR / buf.len() {
            w.write_all(&buf).await?;
            sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        w.shutdown().await
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0;
    while let n @ 1.. = r.read(&mut buf).await? {
        echoed += n;
    }
    writer.await.map_err(std::io::Error::other)??;
    if echoed != PER_VISITOR {
        return Err(std::io::Error::other(format!("echo lost bytes: {echoed}")));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    reitunnel_program::tune_allocator();
    println!("Reitunnel demo: server + client + echo service on 127.0.0.1, metered by hooks\n");
    let counters = Arc::new(Counters::new());
    let chain = HookChain::builder()
        .hook(Printer)
        .shared(counters.clone())
        .build();
    let echo = echo_service();
    let lb = Loopback::start(echo, chain, HookChain::default())?;
    println!(
        "\ntunnel ready: {} -> {} (echo service)\n",
        lb.public_addr, echo
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let public = lb.public_addr;
    let server_addr = lb.server_addr;
    runtime.block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut visitors = tokio::task::JoinSet::new();
        for _ in 0..VISITORS {
            visitors.spawn(visitor(public, sent.clone()));
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = (0u64, 0u64);
        let mut done = 0;
        while done < VISITORS {
            tokio::select! {
                r = visitors.join_next() => {
                    r.expect("visitor").expect("join")?;
                    done += 1;
                }
                _ = tick.tick() => {
                    let s = counters.snapshot();
                    let rate = |now: u64, before: u64| mb(now - before) * 4.0;
                    println!(
                        "[meter] clients={} tunnels={} streams={} (total {}) in={:7.1}MiB ({:6.1}MiB/s) out={:7.1}MiB ({:6.1}MiB/s)",
                        s.clients_active, s.tunnels_active, s.streams_active, s.streams_total,
                        mb(s.bytes_in), rate(s.bytes_in, last.0), mb(s.bytes_out), rate(s.bytes_out, last.1)
                    );
                    last = (s.bytes_in, s.bytes_out);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let s = counters.snapshot();
        println!(
            "\n{VISITORS} visitors echoed {:.0} MiB each way in {secs:.2}s; the meter counted in={:.0}MiB out={:.0}MiB (sent {:.0}MiB)",
            mb(s.bytes_out), mb(s.bytes_in), mb(s.bytes_out), mb(sent.load(Ordering::Relaxed))
        );

        println!("\nA client with the wrong token:");
        let bad = ClientConfig::new(server_addr.to_string(), "mallory", Secret::new("guess"));
        match Client::connect(bad, HookChain::default()).await {
            Ok(_) => println!("  unexpectedly accepted"),
            Err(e) => println!("  error: {e}"),
        }
        Ok::<_, std::io::Error>(())
    })?;

    println!("\nShutting down:");
    lb.stop();
    let s = counters.snapshot();
    println!(
        "\nopen/close balance: clients {}/{} tunnels {}/{} streams {}/{} still open (0 expected)",
        s.clients_active,
        s.clients_total,
        s.tunnels_active,
        s.tunnels_total,
        s.streams_active,
        s.streams_total
    );
    Ok(())
}
