//! A hook that does slow work (a file, an HTTP call, a database) without
//! slowing a tunnel: it formats the event, `try_send`s it into a bounded
//! queue and returns; a worker thread does the slow part. A full queue
//! drops the event and counts it, and `on_server_stop` waits for the worker
//! to finish what is queued. `cargo run -p reitunnel-hooks --example
//! slow_work` opens and closes 2,000 clients against a worker that takes
//! 1 ms per event, and shows that the hook never waited. `cargo test` runs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, Hook, HookChain, HookResult, Login, Scope, ServerInfo,
    Totals,
};

/// Sends a line per open and close to a slow writer.
struct SlowSink {
    /// `None` tells the worker to stop, after what is queued before it.
    tx: SyncSender<Option<String>>,
    /// Taken (once) by `on_server_stop`.
    worker: Mutex<Option<JoinHandle<u64>>>,
    dropped: AtomicU64,
}

impl SlowSink {
    /// A sink whose queue holds `queue` lines; its worker takes `cost` per line.
    fn new(queue: usize, cost: Duration) -> SlowSink {
        let (tx, rx) = sync_channel::<Option<String>>(queue);
        let worker = std::thread::spawn(move || {
            let mut written = 0;
            while let Ok(Some(_line)) = rx.recv() {
                std::thread::sleep(cost); // the slow part: a write, a POST, …
                written += 1;
            }
            written
        });
        SlowSink {
            tx,
            worker: Mutex::new(Some(worker)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Never blocks: a full queue drops the line and counts it.
    fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Some(line))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Hook for SlowSink {
    fn name(&self) -> &str {
        "slow_sink"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_open(&self, scope: Scope<'_>) {
        self.send(format!("opened {scope}"));
    }
    fn on_client_disconnect(
        &self,
        client: &ClientInfo,
        reason: &CloseReason,
        _: &Totals,
    ) -> HookResult {
        self.send(format!("closed {} ({reason})", Scope::Client(client)));
        Ok(())
    }
    /// The last event: the worker writes what is queued, then stops. Waiting
    /// for room in the queue is fine here, off every tunnel's path.
    fn on_server_stop(&self, _: &ServerInfo) -> HookResult {
        let _ = self.tx.send(None);
        if let Some(worker) = self.worker.lock().unwrap().take() {
            let written = worker.join().map_err(|_| "the worker panicked")?;
            println!("worker wrote {written} lines");
        }
        Ok(())
    }
}

fn main() {
    let sink = Arc::new(SlowSink::new(64, Duration::from_millis(1)));
    let chain = HookChain::builder().shared(sink.clone()).build();
    let server = ServerInfo {
        name: "example".into(),
        listen: "127.0.0.1:7000".parse().unwrap(),
    };
    chain.server_start(&server).unwrap();
    let login = Login {
        nonce: &[0; 32],
        proof: &[0; 32],
    };
    let clients: u32 = 2_000;
    let start = Instant::now();
    for id in 0..clients {
        let info = ClientInfo::new(
            ClientId(id.into()),
            "alice",
            "127.0.0.1:40000".parse().unwrap(),
        );
        let client = chain.open_client(Arc::new(info), &login).unwrap();
        client.close(CloseReason::Finished);
    }
    let hooks_took = start.elapsed();
    chain.server_stop(&server).unwrap();
    let dropped = sink.dropped.load(Ordering::Relaxed);
    println!(
        "{} events in {hooks_took:?} of hook time ({:?} each); {dropped} dropped by the full queue",
        2 * clients,
        hooks_took / (2 * clients)
    );
    // The worker needs 1 ms a line: 4,000 lines would take 4 s if the hook
    // waited for it; the queue took 64, the rest were counted and dropped.
    assert!(dropped > 0 && dropped < u64::from(2 * clients));
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        super::main();
    }
}
