//! Churn: 20,000 short visitors through one client, then 2,000 logins, each
//! with a tunnel, and logouts. Server and client each run on a runtime of
//! their own in this process, so afterwards the process's file descriptors,
//! each runtime's live task count and the resident memory can be compared
//! with where they stood before: they must be back within a small margin,
//! and every open must have had its close.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reitunnel_client::Client;
use reitunnel_hooks::{
    ClientInfo, CloseReason, Hook, HookChain, HookResult, Scope, StreamEnd, Totals, TunnelInfo,
};
use reitunnel_testkit::echo_service;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const VISITORS: u64 = 20_000;
const LOGINS: u64 = 2_000;
/// Visitors at a time.
const AT_ONCE: u64 = 32;
/// Logins at a time. Each session also joins connections to itself, one
/// at a time, and a join under way finishes after its session ended: the
/// server here takes 64 handshakes at once from one address, not 16.
const LOGINS_AT_ONCE: u64 = 8;
/// Warm-up visitors before the first reading, so pools and caches are sized.
const WARM_UP: u64 = 500;
/// Resident memory the churn may leave behind (allocator caches): a leak of
/// half a KiB per visitor would already exceed it.
const RSS_MARGIN_KIB: u64 = 8 * 1024;

/// Counts opens and closes by kind; wakes waiters on every close.
#[derive(Default)]
struct Balance {
    opened: [AtomicU64; 3],
    closed: [AtomicU64; 3],
    changed: Notify,
}

const CLIENTS: usize = 0;
const TUNNELS: usize = 1;
const STREAMS: usize = 2;

impl Balance {
    fn opened(&self, kind: usize) -> u64 {
        self.opened[kind].load(Ordering::SeqCst)
    }
    fn closed(&self, kind: usize) -> u64 {
        self.closed[kind].load(Ordering::SeqCst)
    }
    fn close(&self, kind: usize) {
        self.closed[kind].fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `closed` streams, tunnels and clients have closed.
    async fn until_closed(&self, what: &str, [clients, tunnels, streams]: [u64; 3]) {
        let done = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.closed(CLIENTS) >= clients
                    && self.closed(TUNNELS) >= tunnels
                    && self.closed(STREAMS) >= streams
                {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, done)
            .await
            .unwrap_or_else(|_| panic!("{what}: not all closed"));
    }

    fn assert_balanced(&self) {
        for (kind, name) in [
            (CLIENTS, "clients"),
            (TUNNELS, "tunnels"),
            (STREAMS, "streams"),
        ] {
            assert_eq!(self.opened(kind), self.closed(kind), "{name}");
        }
    }
}

impl Hook for Balance {
    fn name(&self) -> &str {
        "balance"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_open(&self, scope: Scope<'_>) {
        let kind = match scope {
            Scope::Client(_) => CLIENTS,
            Scope::Tunnel(_) => TUNNELS,
            Scope::Stream(_) => STREAMS,
            Scope::Server => return,
        };
        self.opened[kind].fetch_add(1, Ordering::SeqCst);
    }
    fn on_client_disconnect(&self, _: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        self.close(CLIENTS);
        Ok(())
    }
    fn on_tunnel_close(&self, _: &TunnelInfo, _: &CloseReason, _: &Totals) -> HookResult {
        self.close(TUNNELS);
        Ok(())
    }
    fn on_stream_close(&self, _: &StreamEnd<'_>) -> HookResult {
        self.close(STREAMS);
        Ok(())
    }
}

/// What the process holds, and what each runtime runs.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    rss_kib: u64,
    server_tasks: usize,
    client_tasks: usize,
    /// Tasks of the runtime driving the test: the echo service's accept
    /// loop and one task per echo connection, each holding a socket until
    /// it ends, which may be just after its visitor has read the echo.
    driver_tasks: usize,
}

/// The driver runtime's tasks once every echo connection has ended: the
/// echo service's accept loop alone.
const DRIVER_IDLE_TASKS: usize = 1;

fn usage(server: &Runtime, client: &Runtime) -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    Usage {
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        rss_kib,
        server_tasks: server.metrics().num_alive_tasks(),
        client_tasks: client.metrics().num_alive_tasks(),
        driver_tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    }
}

/// Waits until the three runtimes run no more tasks than `baseline` (a task
/// ends just after the close event it fires, and the runtime has no
/// notification for that, so this looks until it holds), then reads usage.
/// Runs on the driver runtime.
async fn settled(server: &Runtime, client: &Runtime, baseline: Usage) -> Usage {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = usage(server, client);
        if now.server_tasks <= baseline.server_tasks
            && now.client_tasks <= baseline.client_tasks
            && now.driver_tasks <= baseline.driver_tasks
            || tokio::time::Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_back(what: &str, before: Usage, after: Usage) {
    eprintln!("{what}: before {before:?}, after {after:?}");
    assert_eq!(
        after.server_tasks, before.server_tasks,
        "{what}: server tasks"
    );
    assert_eq!(
        after.client_tasks, before.client_tasks,
        "{what}: client tasks"
    );
    assert_eq!(
        after.driver_tasks, before.driver_tasks,
        "{what}: echo connections"
    );
    assert_eq!(after.fds, before.fds, "{what}: file descriptors");
    assert!(
        after.rss_kib <= before.rss_kib + RSS_MARGIN_KIB,
        "{what}: resident memory grew by {} KiB",
        after.rss_kib.saturating_sub(before.rss_kib)
    );
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `count` visitors, `AT_ONCE` at a time, each echoing 1 KiB checked byte by byte.
async fn visitors(public: SocketAddr, count: u64) {
    let mut running = tokio::task::JoinSet::new();
    for seed in 0..count {
        if running.len() as u64 >= AT_ONCE {
            running.join_next().await.unwrap().unwrap();
        }
        running.spawn(async move { assert_eq!(echo_check(public, 1024, seed).await, 1024) });
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
}

/// A client logged in on the client runtime, with a tunnel to `echo`.
async fn logged_in(
    client_rt: &Runtime,
    server: SocketAddr,
    name: String,
    echo: SocketAddr,
) -> (Client, SocketAddr) {
    let client = client_rt
        .spawn(async move { connect(server, &name).await })
        .await
        .unwrap();
    let public = reverse(&client, echo).await.public_addr;
    (client, public)
}

#[test]
fn churn_of_visitors_and_logins_leaves_nothing_behind() {
    let (server_rt, client_rt, driver) = (runtime(), runtime(), runtime());
    let balance = Arc::new(Balance::default());
    let chain = HookChain::builder().shared(balance.clone()).build();
    let server = driver.block_on(async {
        server_rt
            .spawn(TestServer::start(chain, |cfg| {
                cfg.limits.max_handshakes_per_ip = 64
            }))
            .await
            .unwrap()
    });
    driver.block_on(async {
        let echo = echo_service().await;
        let (client, public) = logged_in(&client_rt, server.addr, "churn".into(), echo).await;
        // The session's connections all joined, on both sides, before the
        // idle session's tasks are counted.
        let joined = async {
            let all = reitunnel_client::CONNECTIONS;
            while client.connections() < all || server.admin.clients()[0].connections < all {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(PATIENCE, joined)
            .await
            .expect("the connections joined");
        // The tasks of one idle session with one tunnel, before any visitor:
        // the first reading waits for the warm-up's tasks to be gone, since a
        // task ends just after the close event it fires.
        let idle = Usage {
            driver_tasks: DRIVER_IDLE_TASKS,
            ..usage(&server_rt, &client_rt)
        };
        visitors(public, WARM_UP).await;
        balance.until_closed("warm-up", [0, 0, WARM_UP]).await;
        let start = settled(&server_rt, &client_rt, idle).await;

        visitors(public, VISITORS).await;
        balance
            .until_closed("visitors", [0, 0, WARM_UP + VISITORS])
            .await;
        let after = settled(&server_rt, &client_rt, start).await;
        assert_back("20,000 visitors", start, after);

        let mut sessions = tokio::task::JoinSet::new();
        for i in 0..LOGINS {
            if sessions.len() as u64 >= LOGINS_AT_ONCE {
                sessions.join_next().await.unwrap().unwrap();
            }
            let (client_rt, addr) = (client_rt.handle().clone(), server.addr);
            sessions.spawn(async move {
                let client = client_rt
                    .spawn(async move { connect(addr, &format!("login-{i}")).await })
                    .await
                    .unwrap();
                reverse(&client, echo).await;
                client.shutdown().await.unwrap();
            });
        }
        while let Some(done) = sessions.join_next().await {
            done.unwrap();
        }
        balance
            .until_closed("logins", [LOGINS, LOGINS, WARM_UP + VISITORS])
            .await;
        let after = settled(&server_rt, &client_rt, start).await;
        assert_back("2,000 logins", start, after);

        client.shutdown().await.unwrap();
        server.stop().await;
    });
    balance.assert_balanced();
    assert_eq!(balance.opened(STREAMS), WARM_UP + VISITORS);
    assert_eq!(balance.opened(CLIENTS), LOGINS + 1);
}
