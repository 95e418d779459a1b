//! SIGHUP on the `reitunnel-server` binary: the token list, policies and
//! hook settings are read again while clients stay connected and a stream
//! keeps flowing; a removed token can no longer log in; a broken file is
//! refused with its line and the previous settings stay in force; an audit
//! log rotated away is reopened.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{echo_through, start, Running};
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, http, pseudo_random};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(60);

/// A server config: a `policy` hook with one `[hooks.clients.NAME]` table
/// per `(name, token)`, then an audit log of every event (`extra` goes in between).
fn config(audit: &Path, clients: &[(&str, &str)], extra: &str) -> String {
    let mut text = "listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\n\
                    [[hooks]]\nkind = \"policy\"\n"
        .to_owned();
    for (name, token) in clients {
        text.push_str(&format!("[hooks.clients.{name}]\ntoken = \"{token}\"\n"));
    }
    text.push_str(extra);
    text.push_str(&format!(
        "[[hooks]]\nkind = \"audit\"\npath = \"{}\"\n",
        audit.display()
    ));
    text
}

fn hangup(server: &Running) {
    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

/// Sends SIGHUP and waits for the `n`th line containing `outcome`.
fn reload(server: &Running, outcome: &str, n: usize) -> String {
    hangup(server);
    tokio::task::block_in_place(|| {
        server
            .log()
            .wait_for_nth(outcome, n, PATIENCE, |l| l.contains(outcome))
    })
}

async fn login(server: SocketAddr, name: &str, token: &str) -> Result<Client, String> {
    let cfg = ClientConfig::new(server.to_string(), name, Secret::new(token));
    Client::connect(cfg, HookChain::default())
        .await
        .map_err(|e| e.to_string())
}

/// A logged-in client with a tunnel to a fresh echo service.
async fn tunnelled(server: SocketAddr, name: &str, token: &str) -> (Client, SocketAddr) {
    let client = login(server, name, token).await.unwrap();
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let public = client.open_reverse(spec).await.unwrap().public_addr;
    (client, public)
}

/// Writes `chunk` and reads its echo back.
async fn round_trip(stream: &mut TcpStream, chunk: &[u8]) {
    stream.write_all(chunk).await.unwrap();
    let mut back = vec![0u8; chunk.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert!(back == chunk, "the echo differs");
}

/// The audit log's lines.
fn audit_lines(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit log's event names.
fn events(audit: &Path) -> Vec<String> {
    audit_lines(audit)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_token_list_without_dropping_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(
        &path,
        config(&audit, &[("alice", "a-1"), ("bob", "b-1")], ""),
    )
    .unwrap();
    let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);

    let (alice, alice_public) = tunnelled(addr, "alice", "a-1").await;
    let (bob, bob_public) = tunnelled(addr, "bob", "b-1").await;
    // A visitor stream that stays open across both reloads.
    let mut visitor = TcpStream::connect(alice_public).await.unwrap();
    round_trip(&mut visitor, &pseudo_random(1, 64 << 10)).await;
    assert!(
        login(addr, "carol", "c-1").await.is_err(),
        "carol is unknown"
    );

    // Bob is taken out, carol put in.
    std::fs::write(
        &path,
        config(&audit, &[("alice", "a-1"), ("carol", "c-1")], ""),
    )
    .unwrap();
    let line = reload(&server, "configuration reloaded", 1);
    assert!(line.contains("\"policy\", \"audit\""), "{line}");

    let refused = login(addr, "bob", "b-1").await.err().expect("bob refused");
    assert!(
        refused.contains("client 'bob' is unknown, or its token"),
        "{refused}"
    );
    // The server's log says which it was.
    server.log().wait_for("the policy's reason", PATIENCE, |l| {
        l.contains("login refused")
            && l.contains("client=bob")
            && l.contains("why=\"unknown client\"")
    });
    let carol = login(addr, "carol", "c-1").await.expect("carol logs in");
    // Nobody was dropped: the open stream, and both old tunnels, still carry bytes.
    round_trip(&mut visitor, &pseudo_random(2, 64 << 10)).await;
    echo_through(alice_public, 256 << 10, 3).await.unwrap();
    echo_through(bob_public, 256 << 10, 4).await.unwrap();

    // A broken file: refused with its line, the previous settings stay.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[[hooks]]\nkind = \"telepathy\"\n",
    )
    .unwrap();
    let line = reload(&server, "reload refused", 1);
    assert!(
        line.contains("the previous configuration stays in force")
            && line.contains("line 2")
            && line.contains("unknown variant `telepathy`"),
        "{line}"
    );
    assert!(server.log().count(|l| l.contains("configuration reloaded")) == 1);
    let again = login(addr, "carol", "c-1")
        .await
        .expect("still carol's server");
    let refused = login(addr, "bob", "b-1")
        .await
        .err()
        .expect("bob still refused");
    assert!(
        refused.contains("client 'bob' is unknown, or its token"),
        "{refused}"
    );
    round_trip(&mut visitor, &pseudo_random(5, 64 << 10)).await;
    echo_through(bob_public, 64 << 10, 6).await.unwrap();

    drop(visitor);
    for client in [alice, bob, carol, again] {
        client.shutdown().await.unwrap();
    }
    assert!(server.stop().success(), "exit 0");
    let events = events(&audit);
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    // The audit hook was kept, not reopened anew: one start, one stop, and
    // every session's open and close in the same file.
    assert_eq!(count("server.started"), 1, "{events:#?}");
    assert_eq!(count("server.stopped"), 1, "{events:#?}");
    assert_eq!(count("client.connected"), 4, "{events:#?}");
    assert_eq!(count("client.disconnected"), 4, "{events:#?}");
    assert_eq!(count("tunnel.opened"), count("tunnel.closed"));
    // The broken reload reached the hooks as an error event.
    let lines = audit_lines(&audit);
    assert!(
        lines.iter().any(|l| l["event"] == "error"
            && l["error"].as_str().is_some_and(|e| e.contains("telepathy"))),
        "{events:#?}"
    );
    // One refusal before each reload and two after: carol, then bob twice.
    assert_eq!(count("client.rejected"), 3, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_logins_get_new_hook_settings_and_unchanged_hooks_keep_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let audit = dir.path().join("audit.jsonl");
    let quota = "[[hooks]]\nkind = \"quota\"\nbytes = \"1MiB\"\n";
    std::fs::write(&path, config(&audit, &[("alice", "a-1")], quota)).unwrap();
    let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);

    // 600 KiB (300 each way) of alice's 1 MiB quota used before the reload.
    let (first, public) = tunnelled(addr, "alice", "a-1").await;
    echo_through(public, 300 << 10, 1).await.unwrap();

    // The quota table is unchanged: the same hook, the same usage. A
    // tunnel limit is added to the policy.
    std::fs::write(
        &path,
        config(&audit, &[("alice", "a-1")], quota)
            .replace("token = \"a-1\"\n", "token = \"a-1\"\nmax_tunnels = 1\n"),
    )
    .unwrap();
    reload(&server, "configuration reloaded", 1);
    let line = server
        .log()
        .wait_for("the reload's summary", PATIENCE, |l| {
            l.contains("settings reloaded")
        });
    assert!(
        line.contains("added=[\"policy\"]") && line.contains("removed=[\"policy\"]"),
        "only the policy is new: {line}"
    );

    // The old session keeps its settings: a second tunnel is fine.
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    first
        .open_reverse(spec)
        .await
        .expect("old session, old policy");
    // A new session gets the new policy.
    let second = login(addr, "alice", "a-1").await.unwrap();
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let new_public = second.open_reverse(spec.clone()).await.unwrap().public_addr;
    let refused = second.open_reverse(spec).await.unwrap_err().to_string();
    assert!(refused.contains("maximum of 1 tunnels"), "{refused}");

    // The new session's chain holds the same quota hook: 600 KiB used, so
    // 600 more (under the quota on their own) cross 1 MiB.
    let crossing = echo_through(new_public, 300 << 10, 2).await;
    assert!(
        crossing.is_err(),
        "the quota, kept across the reload, cut the stream"
    );
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    assert!(server.stop().success());
    let events = events(&audit);
    assert_eq!(
        events.iter().filter(|e| *e == "quota.exceeded").count(),
        1,
        "{events:#?}"
    );
}

/// Waits until the server runs `n` audit writer threads. A thread takes
/// its name only once it runs, and its end has no event to wait on, so this
/// looks until the count is right (failing after [`PATIENCE`]).
async fn audit_writers(server: &Running, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.threads_named("audit-log") != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} audit writers, not {n}",
            server.threads_named("audit-log")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_a_reload_took_out_is_closed_once_its_last_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let (old, new) = (dir.path().join("old.jsonl"), dir.path().join("new.jsonl"));
    std::fs::write(&path, config(&old, &[("alice", "a-1")], "")).unwrap();
    let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);
    let (alice, public) = tunnelled(addr, "alice", "a-1").await;
    audit_writers(&server, 1, "one audit writer").await;

    std::fs::write(&path, config(&new, &[("alice", "a-1")], "")).unwrap();
    reload(&server, "configuration reloaded", 1);
    // Alice keeps the settings she logged in with, her audit log included.
    audit_writers(&server, 2, "the old and the new audit writer").await;
    echo_through(public, 1000, 1).await.unwrap();
    alice.shutdown().await.unwrap();
    server.log().wait_for("the old hooks' stop", PATIENCE, |l| {
        l.contains("no longer in use: stopped")
    });
    // Its writer flushes and ends once the stopped hooks let go of it.
    audit_writers(&server, 1, "the old audit writer ended").await;
    let old_events = events(&old);
    assert_eq!(
        old_events[old_events.len() - 2..],
        ["client.disconnected", "server.stopped"],
        "{old_events:#?}"
    );
    assert!(server.stop().success());
    assert_eq!(
        events(&old).len(),
        old_events.len(),
        "nothing more reached the old log at exit"
    );
    assert_eq!(events(&new), ["server.started", "server.stopped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_a_rotated_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(&path, config(&audit, &[("alice", "a-1")], "")).unwrap();
    let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);
    let first = login(addr, "alice", "a-1").await.unwrap();
    first.shutdown().await.unwrap();
    // logrotate: move the file away, then SIGHUP.
    let rotated = dir.path().join("audit.jsonl.1");
    tokio::task::block_in_place(|| {
        server
            .log()
            .wait_for("alice's first session to end", PATIENCE, |l| {
                l.contains("client gone")
            })
    });
    std::fs::rename(&audit, &rotated).unwrap();
    reload(&server, "configuration reloaded", 1);
    let second = login(addr, "alice", "a-1").await.unwrap();
    second.shutdown().await.unwrap();
    assert!(server.stop().success());
    let old = events(&rotated);
    let new = events(&audit);
    assert_eq!(old[..2], ["server.started", "client.connected"], "{old:#?}");
    assert!(old.contains(&"client.disconnected".to_owned()), "{old:#?}");
    assert_eq!(
        new,
        ["client.connected", "client.disconnected", "server.stopped"],
        "{:#?}",
        audit_lines(&audit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_drop_the_token_on_the_strength_of_tls_it_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\ntoken = \"t-1\"\n").unwrap();
    let (server, addr, _) = start(&["--config", path.to_str().unwrap()]);
    // Client certificates would replace the token, but TLS only starts
    // with a restart: until then this file would let anyone in.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"\nclient_ca = \"ca.crt\"\n",
    )
    .unwrap();
    let line = reload(&server, "reload refused", 1);
    assert!(
        line.contains("TLS changes need a restart") && line.contains("a token is required"),
        "{line}"
    );
    let refused = login(addr, "mallory", "wrong")
        .await
        .err()
        .expect("still a token");
    assert!(refused.contains("token"), "{refused}");
    login(addr, "alice", "t-1")
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    assert!(server.stop().success());
}

/// The admin endpoint's address, from the server's log before it started.
fn admin_addr(seen: &[String]) -> SocketAddr {
    seen.iter()
        .find(|l| l.contains("admin API and status page"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {seen:#?}"))
}

/// A config with an admin endpoint on loopback that requires `admin_token`.
fn with_admin_token(admin_token: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ntoken = \"t\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{admin_token}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_new_admin_token_in_force_and_the_old_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, with_admin_token("old-secret")).unwrap();
    let (server, _, seen) = start(&["--config", path.to_str().unwrap()]);
    let admin = admin_addr(&seen);
    let status = |token: &'static str| async move {
        http(admin, "GET", "/api/v1/clients", Some(token))
            .await
            .unwrap()
            .status
    };
    assert_eq!(
        (status("old-secret").await, status("new-secret").await),
        (200, 401)
    );

    // A leaked token is revoked by a reload, no restart.
    std::fs::write(&path, with_admin_token("new-secret")).unwrap();
    reload(&server, "configuration reloaded", 1);
    assert_eq!(
        (status("old-secret").await, status("new-secret").await),
        (401, 200)
    );
    let warned: Vec<String> = server
        .log()
        .all()
        .into_iter()
        .filter(|l| l.contains("only after a restart"))
        .collect();
    assert!(warned.is_empty(), "{warned:#?}");
    assert!(server.stop().success());
}

/// Counts a hook's starts and stops; its start fails when `fail` is set.
#[derive(Default)]
struct Lifecycle {
    starts: std::sync::atomic::AtomicUsize,
    stops: std::sync::atomic::AtomicUsize,
    fail: bool,
    started: tokio::sync::Notify,
    stopped: tokio::sync::Notify,
}

impl reitunnel_hooks::Hook for Lifecycle {
    fn name(&self) -> &str {
        "lifecycle"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_server_start(&self, _: &reitunnel_hooks::ServerInfo) -> reitunnel_hooks::HookResult {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.started.notify_one();
        if self.fail {
            return Err("refusing to start".into());
        }
        Ok(())
    }
    fn on_server_stop(&self, _: &reitunnel_hooks::ServerInfo) -> reitunnel_hooks::HookResult {
        self.stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.stopped.notify_one();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_start_of_a_hook_has_one_stop_however_often_it_is_reloaded_in_and_out() {
    use reitunnel_server::{Reload, Server, ServerConfig};
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;

    let kept = Arc::new(Lifecycle::default());
    let juggled = Arc::new(Lifecycle::default());
    let broken = Arc::new(Lifecycle {
        fail: true,
        ..Lifecycle::default()
    });
    let chain = |hooks: &[&Arc<Lifecycle>]| {
        hooks
            .iter()
            .fold(HookChain::builder(), |b, h| b.shared((*h).clone()))
            .build()
    };
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new("t")));
    let server = Server::bind(config.clone(), chain(&[&kept])).await.unwrap();
    let reloader = server.reloader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let update = |hooks: &[&Arc<Lifecycle>]| Reload::from_config(&config, chain(hooks));
    // Reloads from here on find the server started (one before would only
    // change what the start starts).
    kept.started.notified().await;
    assert_eq!(reloader.chain().names(), ["token_auth", "lifecycle"]);

    reloader.reload(update(&[&kept, &juggled])).unwrap();
    reloader.reload(update(&[&kept])).unwrap();
    // No session used it: stopped at once, and started again when it is back.
    assert_eq!(juggled.stops.load(SeqCst), 1);
    reloader.reload(update(&[&kept, &juggled])).unwrap();
    let err = reloader
        .reload(update(&[&kept, &broken]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to start"), "{err}");
    // The failed reload changed nothing: the juggled hook is still in force.
    assert_eq!(
        reloader.chain().names(),
        ["token_auth", "lifecycle", "lifecycle"]
    );
    reloader.reload(update(&[&kept])).unwrap();

    let _ = stop.send(());
    running.await.unwrap().unwrap();
    for (name, hook, times) in [("kept", &kept, 1), ("juggled", &juggled, 2)] {
        assert_eq!(hook.starts.load(SeqCst), times, "{name} starts");
        assert_eq!(hook.stops.load(SeqCst), times, "{name} stops");
    }
    assert_eq!(broken.starts.load(SeqCst), 1);
    assert_eq!(
        broken.stops.load(SeqCst),
        0,
        "a hook that never started is not stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_a_reload_took_out_stops_when_its_last_session_ends_not_before() {
    use reitunnel_server::{Reload, Server, ServerConfig};
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;

    let (old, new) = (
        Arc::new(Lifecycle::default()),
        Arc::new(Lifecycle::default()),
    );
    let chain = |hook: &Arc<Lifecycle>| HookChain::builder().shared(hook.clone()).build();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new("t")));
    let server = Server::bind(config.clone(), chain(&old)).await.unwrap();
    let addr = server.local_addr();
    let reloader = server.reloader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let (alice, public) = tunnelled(addr, "alice", "t").await;
    reloader
        .reload(Reload::from_config(&config, chain(&new)))
        .unwrap();
    // Alice's session still runs on the old hook.
    echo_through(public, 1000, 1).await.unwrap();
    assert_eq!(old.stops.load(SeqCst), 0);
    alice.shutdown().await.unwrap();
    tokio::time::timeout(PATIENCE, old.stopped.notified())
        .await
        .expect("the old hook stops when alice's session ends");
    assert_eq!(new.stops.load(SeqCst), 0, "the server runs on");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(old.stops.load(SeqCst), 1, "stopped once");
    assert_eq!(new.stops.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_failing_at_start_up_stops_the_ones_started_before_it() {
    use reitunnel_server::{Server, ServerConfig};
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;

    let first = Arc::new(Lifecycle::default());
    let broken = Arc::new(Lifecycle {
        fail: true,
        ..Lifecycle::default()
    });
    let chain = HookChain::builder()
        .shared(first.clone())
        .shared(broken.clone())
        .build();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some(Secret::new("t")));
    let server = Server::bind(config, chain).await.unwrap();
    let err = server
        .run(std::future::pending())
        .await
        .expect_err("a hook refused to start")
        .to_string();
    assert!(err.contains("refusing to start"), "{err}");
    assert_eq!(first.starts.load(SeqCst), 1);
    assert_eq!(
        first.stops.load(SeqCst),
        1,
        "the hook that had started is stopped"
    );
    assert_eq!(
        broken.stops.load(SeqCst),
        0,
        "the one that failed never started"
    );
}
