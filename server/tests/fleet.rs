//! The fleet against a real redis-server (Debian's; skipped when it is not
//! installed unless `REITUNNEL_REQUIRE_TOOLS` is set): server processes on
//! loopback, each a node sharing one Redis. A name is logged in once
//! fleet-wide (a login elsewhere replaces the session, or is refused as
//! configured); a kick and a ban on one node act on every node, and a node
//! that starts later learns the ban from the store; a node killed outright
//! is forgotten once its entries expire; while Redis is away logins are
//! decided locally or refused as configured, and a node writes its entries
//! back into a Redis that restarted empty.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{redis_connection, start, Running};
use redis::aio::MultiplexedConnection;
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{
    chromium, echo_service, free_port, http, installed, within, FaultProxy, RedisServer,
    REDIS_SERVER,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// A node of the fleet in `redis`, named `node`; `cluster` adds keys to its
/// `[cluster]` table. Entries live 2 s, so a dead node is forgotten fast.
struct Node {
    server: Running,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    fn start(dir: &Path, redis: &RedisServer, node: &str, cluster: &str) -> Node {
        Node::start_with(dir, redis, node, "bind_ip = \"127.0.0.1\"\n", cluster)
    }

    /// With `top` (top-level settings, `bind_ip` among them) and `cluster`.
    fn start_with(dir: &Path, redis: &RedisServer, node: &str, top: &str, cluster: &str) -> Node {
        Node::start_at(dir, &redis.url(), node, top, cluster)
    }

    /// A node whose store is at `url`.
    fn start_at(dir: &Path, url: &str, node: &str, top: &str, cluster: &str) -> Node {
        let path = dir.join(format!("{node}.toml"));
        let text = format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"t\"\nadmin_listen = \"127.0.0.1:0\"\n{top}\
             [cluster]\nredis = \"{url}\"\nnode = \"{node}\"\nentry_ttl_secs = 2\n{cluster}"
        );
        std::fs::write(&path, text).unwrap();
        let (server, addr, seen) = start(&["--config", path.to_str().unwrap()]);
        let admin = seen
            .iter()
            .find(|l| l.contains("admin API and status page"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {seen:#?}"));
        Node {
            server,
            addr,
            admin,
        }
    }

    async fn login(&self, name: &str) -> Result<Client, String> {
        let cfg = ClientConfig::new(self.addr.to_string(), name, Secret::new("t"));
        Client::connect(cfg, HookChain::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// `GET` on the admin API: the JSON it answers.
    async fn get(&self, path: &str) -> Value {
        let answer = http(self.admin, "GET", path, None).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    }

    /// `POST` on the admin API; returns the status and the body.
    async fn post(&self, path: &str) -> (u16, String) {
        let answer = http(self.admin, "POST", path, None).await.unwrap();
        (answer.status, answer.body)
    }
}

/// Nodes a and b on 127.0.0.1, both with `cluster` in their `[cluster]`.
fn two_nodes(dir: &Path, redis: &RedisServer, cluster: &str) -> (Node, Node) {
    (
        Node::start(dir, redis, "a", cluster),
        Node::start(dir, redis, "b", cluster),
    )
}

/// A temporary directory and a redis-server in it; `None` (the test is
/// skipped) where redis-server is not installed.
fn with_redis() -> Option<(tempfile::TempDir, RedisServer)> {
    if !installed(REDIS_SERVER, "redis-server") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    Some((dir, redis))
}

/// Waits until `addr` takes connections (`true`) or refuses them (`false`).
async fn until_listening(addr: SocketAddr, listening: bool) {
    within(PATIENCE, &format!("{addr} listening: {listening}"), async {
        while TcpStream::connect(addr).await.is_ok() != listening {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The node `name`'s entry names, if it has one.
async fn holder(conn: &mut MultiplexedConnection, name: &str) -> Option<String> {
    let entry: Option<String> = redis::cmd("GET")
        .arg(format!("reitunnel:client:{name}"))
        .query_async(conn)
        .await
        .unwrap();
    entry.map(|e| {
        let e: Value = serde_json::from_str(&e).unwrap();
        e["node"].as_str().unwrap().to_owned()
    })
}

/// Waits until `name`'s entry names `node` (`None`: until it has none).
async fn until_held_by(conn: &mut MultiplexedConnection, name: &str, node: Option<&str>) {
    within(PATIENCE, &format!("{name}'s entry on {node:?}"), async {
        while holder(conn, name).await.as_deref() != node {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The nodes of the `client.connected` events on the fleet's stream, in order.
async fn connected_on(conn: &mut MultiplexedConnection) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("reitunnel:events")
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .filter(|e| e.get::<String>("event").as_deref() == Some("client.connected"))
        .filter_map(|e| e.get::<String>("body"))
        .map(|body| serde_json::from_str::<Value>(&body).unwrap()["server"].to_string())
        .map(|server| server.trim_matches('"').to_owned())
        .collect()
}

/// How a session `client` ended, once it did.
async fn end_of(client: Client) -> String {
    within(PATIENCE, "the session's end", client.ended()).await;
    client.shutdown().await.unwrap_err().to_string()
}

/// A tunnel of `client` to a fresh echo service carries a round trip.
async fn tunnel_echoes(client: &Client) {
    let public = tunnel_on(client, 0).await.unwrap();
    round_trip(public).await;
}

/// A tunnel of `client` on public `port` (0: any) to a fresh echo service:
/// its public address, or the refusal.
async fn tunnel_on(client: &Client, port: u16) -> Result<SocketAddr, String> {
    let spec: RemoteSpec = format!("{port}:{}", echo_service().await).parse().unwrap();
    match client.open_reverse(spec).await {
        Ok(ready) => Ok(ready.public_addr),
        Err(e) => Err(e.to_string()),
    }
}

/// One checked round trip through the tunnel at `public`.
async fn round_trip(public: SocketAddr) {
    let mut visitor = TcpStream::connect(public).await.unwrap();
    visitor.write_all(b"fleet").await.unwrap();
    let mut back = [0u8; 5];
    visitor.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_replaces_the_session_there() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let mut conn = redis_connection(&redis).await;
    let (a, b) = two_nodes(dir.path(), &redis, "");
    let first = a.login("alice").await.unwrap();
    assert_eq!(holder(&mut conn, "alice").await.as_deref(), Some("a"));
    let second = b.login("alice").await.unwrap();
    assert_eq!(holder(&mut conn, "alice").await.as_deref(), Some("b"));
    let why = end_of(first).await;
    assert!(
        why.contains("replaced") && why.contains("logged in again, on node b"),
        "{why}"
    );
    tunnel_echoes(&second).await;
    // The replaced session's end does not free the name the new one holds.
    assert!(a
        .server
        .log()
        .all()
        .iter()
        .any(|l| l.contains("client gone") && l.contains("replaced")));
    assert_eq!(holder(&mut conn, "alice").await.as_deref(), Some("b"));
    second.shutdown().await.unwrap();
    until_held_by(&mut conn, "alice", None).await;
    // Both nodes' events are on the fleet's stream, each naming its node.
    within(PATIENCE, "both logins on the fleet's stream", async {
        loop {
            let logins = connected_on(&mut conn).await;
            if logins.len() >= 2 {
                assert_eq!(logins, ["a", "b"]);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_duplicates_wait_for_the_first_session_to_end() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let mut conn = redis_connection(&redis).await;
    let refuse = "on_duplicate_login = \"refuse\"\n";
    let (a, b) = two_nodes(dir.path(), &redis, refuse);
    let first = a.login("alice").await.unwrap();
    let refused = b.login("alice").await.err().expect("a refusal");
    assert!(
        refused.contains("client 'alice' is logged in already on node a"),
        "{refused}"
    );
    tunnel_echoes(&first).await;
    first.shutdown().await.unwrap();
    until_held_by(&mut conn, "alice", None).await;
    let second = b.login("alice").await.unwrap();
    tunnel_echoes(&second).await;
    second.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_with_a_ban_on_one_node_closes_and_refuses_on_every_node() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let (a, b) = two_nodes(dir.path(), &redis, "");
    let alice = a.login("alice").await.unwrap();
    let bob = a.login("bob").await.unwrap();
    // b's admin API lists the whole fleet.
    let listed = b.get("/api/v1/clients").await;
    let on: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["node"].as_str().unwrap()))
        .collect();
    assert_eq!(on, [("alice", "a"), ("bob", "a")], "{listed}");
    let nodes = b.get("/api/v1/nodes").await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{nodes}");
    let (status, body) = b.post("/api/v1/clients/alice/kick?ban_secs=600").await;
    assert_eq!(status, 200, "{body}");
    let why = end_of(alice).await;
    assert!(why.contains("on node b, banned for 600s"), "{why}");
    for node in [&a, &b] {
        let refused = node.login("alice").await.err().expect("a refusal");
        assert!(refused.contains("'alice' is banned"), "{refused}");
    }
    // A node that joins later reads the ban from the store.
    let c = Node::start(dir.path(), &redis, "c", "");
    within(PATIENCE, "the ban on the new node", async {
        while !c
            .login("alice")
            .await
            .err()
            .unwrap_or_default()
            .contains("banned")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Nobody else was touched.
    tunnel_echoes(&bob).await;
    // A kick of a name no node holds is no error in a fleet: another node may hold it.
    let (status, body) = c.post("/api/v1/clients/nobody/kick").await;
    assert_eq!(status, 200, "{body}");
    bob.shutdown().await.unwrap();
    for node in [a, b, c] {
        assert!(node.server.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_forgotten_and_its_clients_log_in_elsewhere() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let mut conn = redis_connection(&redis).await;
    let (a, b) = two_nodes(dir.path(), &redis, "");
    let alice = a.login("alice").await.unwrap();
    let carol = a.login("carol").await.unwrap();
    assert!(key_exists(&mut conn, "reitunnel:node:a").await);
    a.server.kill();
    // alice comes back on b at once; carol's entry, and a's, expire.
    let back = b.login("alice").await.unwrap();
    tunnel_echoes(&back).await;
    until_held_by(&mut conn, "carol", None).await;
    within(PATIENCE, "node a's key to expire", async {
        while key_exists(&mut conn, "reitunnel:node:a").await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(holder(&mut conn, "alice").await.as_deref(), Some("b"));
    drop((alice, carol));
    back.shutdown().await.unwrap();
    assert!(b.server.stop().success());
}

async fn key_exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_logins_are_decided_locally_or_refused_and_entries_return() {
    let Some((dir, mut redis)) = with_redis() else {
        return;
    };
    let local = Node::start(dir.path(), &redis, "a", "");
    let strict = Node::start(dir.path(), &redis, "b", "store_failure = \"refuse\"\n");
    let alice = local.login("alice").await.unwrap();
    redis.stop();
    // The session in place goes on.
    tunnel_echoes(&alice).await;
    let bob = local.login("bob").await.unwrap();
    let refused = strict.login("carol").await.err().expect("a refusal");
    assert!(
        refused.contains("the fleet's store redis://127.0.0.1:")
            && refused.contains("logins are refused until it answers"),
        "{refused}"
    );
    let metrics = http(local.admin, "GET", "/metrics", None)
        .await
        .unwrap()
        .body;
    assert!(metrics.contains("reitunnel_store_up 0"), "{metrics}");
    // Back, empty: node a writes alice and bob in again.
    redis.restart();
    let mut conn = redis_connection(&redis).await;
    until_held_by(&mut conn, "alice", Some("a")).await;
    until_held_by(&mut conn, "bob", Some("a")).await;
    let carol = strict.login("carol").await.unwrap();
    tunnel_echoes(&carol).await;
    for client in [alice, bob, carol] {
        client.shutdown().await.unwrap();
    }
    assert!(local.server.stop().success());
    assert!(strict.server.stop().success());
}

/// Nodes on 127.0.0.2 and 127.0.0.3, like two hosts: each could bind any
/// port, so only the fleet keeps a port to one tunnel.
fn two_hosts(dir: &Path, redis: &RedisServer, ports: &str) -> (Node, Node) {
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{ports}\"\n");
    (
        Node::start_with(dir, redis, "a", &on("127.0.0.2"), ""),
        Node::start_with(dir, redis, "b", &on("127.0.0.3"), ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_port_belongs_to_one_tunnel_fleet_wide() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let (p, q) = (free_port().port(), free_port().port());
    let (a, b) = two_hosts(dir.path(), &redis, &format!("{p},{q}"));
    let alice = a.login("alice").await.unwrap();
    let first = tunnel_on(&alice, 0).await.unwrap();
    round_trip(first).await;
    let taken = first.port();
    let bob = b.login("bob").await.unwrap();
    let refused = tunnel_on(&bob, taken).await.unwrap_err();
    assert!(
        refused.contains(&format!(
            "port {taken} (tcp) is in use by another client's tunnel on node a"
        )),
        "{refused}"
    );
    // Asked for any port, bob gets the other one, though b could bind both.
    let other = tunnel_on(&bob, 0).await.unwrap();
    assert_eq!(other.ip().to_string(), "127.0.0.3");
    assert_ne!(other.port(), taken);
    round_trip(other).await;
    // None is left: a third tunnel is refused, saying why.
    let none = tunnel_on(&bob, 0).await.unwrap_err();
    assert!(none.contains("no port free"), "{none}");
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_node_gets_its_port_and_the_old_lease_ends() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let mut conn = redis_connection(&redis).await;
    let port = free_port().port();
    let (a, b) = two_hosts(dir.path(), &redis, &port.to_string());
    // alice reaches a through a link the test can cut.
    let link = FaultProxy::start(a.addr).unwrap();
    let cfg = ClientConfig::new(link.addr().to_string(), "alice", Secret::new("t"));
    let alice = Client::connect(cfg, HookChain::default()).await.unwrap();
    let public = tunnel_on(&alice, port).await.unwrap();
    round_trip(public).await;
    // The connection is lost (no goodbye): a keeps the port on lease.
    link.cut();
    a.server.log().wait_for("the lease", PATIENCE, |l| {
        l.contains("port leased until the client reconnects")
    });
    // Another client may not have it, on any node.
    let bob = b.login("bob").await.unwrap();
    let refused = tunnel_on(&bob, port).await.unwrap_err();
    assert!(
        refused.contains("in use by another client's tunnel on node a"),
        "{refused}"
    );
    // alice, back on b, has it; a lets its lease go.
    let back = b.login("alice").await.unwrap();
    let moved = tunnel_on(&back, port).await.unwrap();
    assert_eq!(moved, format!("127.0.0.3:{port}").parse().unwrap());
    round_trip(moved).await;
    until_listening(public, false).await;
    let entry: String = redis::cmd("GET")
        .arg(format!("reitunnel:port:tcp:{port}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(entry.contains("\"node\":\"b\""), "{entry}");
    // Killed outright, b leaves alice's port to her on c within the lease.
    b.server.kill();
    let c = Node::start_with(
        dir.path(),
        &redis,
        "c",
        &format!("bind_ip = \"127.0.0.4\"\nallow_ports = \"{port}\"\n"),
        "",
    );
    let again = c.login("alice").await.unwrap();
    let third = tunnel_on(&again, port).await.unwrap();
    round_trip(third).await;
    drop((alice, back, bob));
    again.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(c.server.stop().success());
}

/// Keys of a node that takes links and relays visitors, with an audit log
/// of every event (streams included) at `audit`.
fn relaying(audit: &Path) -> String {
    format!(
        "{}[[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
        relay_keys("fleet-s3cret"),
        audit.display()
    )
}

/// The audit log's lines with event `event`.
fn audited(audit: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_to_any_node_reaches_the_tunnel_on_the_node_holding_it() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let port = free_port().port();
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n");
    let (audit_a, audit_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2"),
        &relaying(&audit_a),
    );
    let b = Node::start_with(
        dir.path(),
        &redis,
        "b",
        &on("127.0.0.3"),
        &relaying(&audit_b),
    );
    let alice = a.login("alice").await.unwrap();
    let public = tunnel_on(&alice, port).await.unwrap();
    assert_eq!(public, format!("127.0.0.2:{port}").parse().unwrap());
    // b listens on the port too once it hears of the tunnel.
    let elsewhere: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    until_listening(elsewhere, true).await;
    let tunnels = b.get("/api/v1/tunnels").await;
    assert_eq!(tunnels[0]["port"], port, "{tunnels}");
    assert_eq!(tunnels[0]["node"], "a", "{tunnels}");
    // One visitor through b, its address noted, then a hundred at once.
    let mut visitor = TcpStream::connect(elsewhere).await.unwrap();
    let seen_as = visitor.local_addr().unwrap();
    visitor.write_all(b"fleet").await.unwrap();
    let mut back = [0u8; 5];
    visitor.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"fleet");
    drop(visitor);
    let visitors: Vec<_> = (0..100)
        .map(|i| tokio::spawn(common::echo_through(elsewhere, 64 * 1024, i)))
        .collect();
    for v in visitors {
        v.await.unwrap().unwrap();
    }
    alice.shutdown().await.unwrap();
    // The port is gone on every node: a visitor to b is refused, not hung.
    until_listening(elsewhere, false).await;
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
    // The tunnel's hooks ran once, on a, and saw the visitor's real address:
    // the probe that found b listening, the noted visitor and the hundred.
    let opened = audited(&audit_a, "stream.opened");
    assert_eq!(opened.len(), 102, "{opened:#?}");
    assert!(
        opened.iter().any(|e| e["peer"] == seen_as.to_string()),
        "{seen_as} in {opened:#?}"
    );
    let closed = audited(&audit_a, "stream.closed");
    assert_eq!(closed.len(), 102);
    let moved: u64 = closed.iter().map(|e| e["bytes_in"].as_u64().unwrap()).sum();
    assert_eq!(moved, 100 * 64 * 1024 + 5);
    assert!(audited(&audit_b, "stream.opened").is_empty());
}

/// A `quota` hook of `bytes` a day per client.
fn quota(bytes: &str) -> String {
    format!("[[hooks]]\nkind = \"quota\"\nbytes = \"{bytes}\"\n")
}

/// alice's fleet-wide quota total in the store, once it has one.
async fn quota_total(conn: &mut MultiplexedConnection) -> Option<u64> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("reitunnel:quota:*:alice")
        .query_async(conn)
        .await
        .unwrap();
    let key = keys.first()?;
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

/// Waits until alice's total in the store is `bytes`.
async fn until_quota_total(conn: &mut MultiplexedConnection, bytes: u64) {
    within(
        PATIENCE,
        &format!("alice's total of {bytes} bytes"),
        async {
            while quota_total(conn).await != Some(bytes) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}

/// What `node`'s admin API says alice used of her quota.
async fn quota_used(node: &Node) -> u64 {
    node.get("/api/v1/clients/alice").await["quota"]["used"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_counted_fleet_wide_when_its_client_moves_to_another_node() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    const MIB: u64 = 1 << 20;
    let mut conn = redis_connection(&redis).await;
    let (a, b) = (
        Node::start(dir.path(), &redis, "a", &quota("8MiB")),
        Node::start(dir.path(), &redis, "b", &quota("8MiB")),
    );
    // 2 MiB echoed on a: 4 MiB of alice's 8, in the store.
    let first = a.login("alice").await.unwrap();
    let public = tunnel_on(&first, 0).await.unwrap();
    common::echo_through(public, 2 << 20, 1).await.unwrap();
    until_quota_total(&mut conn, 4 * MIB).await;
    // On b, she has the 4 MiB left, not 8: the echo of 4 MiB is cut.
    let second = b.login("alice").await.unwrap();
    let public = tunnel_on(&second, 0).await.unwrap();
    let cut = common::echo_through(public, 4 << 20, 2).await;
    assert!(cut.is_err(), "8 MiB moved under a quota of 8 MiB");
    // Once b has added its bytes, the store and b agree on the total.
    let total = within(PATIENCE, "b's bytes in the store", async {
        loop {
            let total = quota_total(&mut conn).await.unwrap_or(0);
            if total > 4 * MIB && total == quota_used(&b).await {
                break total;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let bound = 8 * MIB + reitunnel_server::QUOTA_FLUSH_BYTES;
    assert!(
        total > 7 * MIB && total <= bound,
        "{total} bytes, bound {bound}"
    );
    // And a new stream on b is refused, the quota used.
    let mut visitor = TcpStream::connect(public).await.unwrap();
    let _ = visitor.write_all(b"more").await;
    let mut buf = [0u8; 4];
    assert!(!matches!(visitor.read(&mut buf).await, Ok(n) if n > 0));
    second.shutdown().await.unwrap();
    drop(first);
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_bytes_moved_while_redis_is_away_reach_the_total_once_it_is_back() {
    let Some((dir, mut redis)) = with_redis() else {
        return;
    };
    const MIB: u64 = 1 << 20;
    let a = Node::start(dir.path(), &redis, "a", &quota("1GiB"));
    let alice = a.login("alice").await.unwrap();
    let public = tunnel_on(&alice, 0).await.unwrap();
    common::echo_through(public, 2 << 20, 1).await.unwrap();
    let mut conn = redis_connection(&redis).await;
    until_quota_total(&mut conn, 4 * MIB).await;
    // Redis dies; the transfer goes on; Redis comes back empty.
    redis.stop();
    common::echo_through(public, 2 << 20, 2).await.unwrap();
    redis.restart();
    let mut conn = redis_connection(&redis).await;
    // Every byte is in the total, none twice.
    until_quota_total(&mut conn, 8 * MIB).await;
    assert_eq!(quota_used(&a).await, 8 * MIB);
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_rate_limit_holds_for_its_visitors_on_every_node_together() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    const MIB: usize = 1 << 20;
    let port = free_port().port();
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n");
    let limited = |audit: &Path| {
        format!(
            "{}[[hooks]]\nkind = \"rate_limit\"\nper_client_bytes_per_sec = \"1MiB\"\nburst = \"64KiB\"\n",
            relaying(audit)
        )
    };
    let (audit_a, audit_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2"),
        &limited(&audit_a),
    );
    let b = Node::start_with(
        dir.path(),
        &redis,
        "b",
        &on("127.0.0.3"),
        &limited(&audit_b),
    );
    let alice = a.login("alice").await.unwrap();
    let here = tunnel_on(&alice, port).await.unwrap();
    let elsewhere: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    until_listening(elsewhere, true).await;
    // 1 MiB each way through a and 1 MiB each way through b, at once: the
    // client's one limiter (on a, which holds its session) takes both, so
    // 2 MiB cannot pass in less than about 2 s. A lower bound only: a slow
    // machine makes it longer, never shorter.
    let started = std::time::Instant::now();
    let (x, y) = tokio::join!(
        common::echo_through(here, MIB, 1),
        common::echo_through(elsewhere, MIB, 2)
    );
    x.unwrap();
    y.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "2 MiB at 1 MiB/s took {took:?}"
    );
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_spread_over_nodes_are_counted_together() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let limit = "[limits]\nfailed_logins_per_minute = 3\n";
    let (a, b) = (
        Node::start_with(dir.path(), &redis, "a", limit, ""),
        Node::start_with(dir.path(), &redis, "b", limit, ""),
    );
    // Two wrong tokens on each node: neither node alone saw more than 3.
    for node in [&a, &b, &a, &b] {
        let cfg = ClientConfig::new(node.addr.to_string(), "mallory", Secret::new("guess"));
        let refused = Client::connect(cfg, HookChain::default())
            .await
            .err()
            .unwrap();
        assert!(refused.to_string().contains("token refused"), "{refused}");
    }
    // The fleet saw 4: the address is refused on both, the right token too.
    for node in [&a, &b] {
        within(PATIENCE, "the fleet's block", async {
            loop {
                match node.login("alice").await {
                    Err(e) if e.contains("too many failed logins") => break,
                    Err(e) => panic!("{e}"),
                    Ok(client) => {
                        client.shutdown().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
        .await;
    }
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

/// Keys of a relaying node whose links listen on `listen` and are dialed
/// at `advertise`, proving `secret`.
fn links(listen: SocketAddr, advertise: SocketAddr, secret: &str) -> String {
    format!(
        "relay_listen = \"{listen}\"\nrelay_advertise = \"{advertise}\"\ncluster_secret = \"{secret}\"\n"
    )
}

/// Keys of a relaying node with links on loopback, proving `secret`.
fn relay_keys(secret: &str) -> String {
    format!("relay_listen = \"127.0.0.1:0\"\ncluster_secret = \"{secret}\"\n")
}

/// Whether a visitor to `addr` is turned away (its connection closes)
/// rather than served or left hanging.
async fn turned_away(addr: SocketAddr) -> bool {
    let Ok(mut visitor) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = visitor.write_all(b"fleet").await;
    let mut back = [0u8; 5];
    within(PATIENCE, "the visitor's end", visitor.read(&mut back))
        .await
        .map_or(true, |n| n == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_ends_its_visitors_and_is_dialed_again_and_a_dead_one_refuses() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let port = free_port().port();
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n");
    // a's links are reached through a link the test can cut.
    let listen = free_port();
    let link = FaultProxy::start(listen).unwrap();
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2"),
        &links(listen, link.addr(), "s"),
    );
    let b = Node::start_with(dir.path(), &redis, "b", &on("127.0.0.3"), &relay_keys("s"));
    let alice = a.login("alice").await.unwrap();
    tunnel_on(&alice, port).await.unwrap();
    let elsewhere: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    until_listening(elsewhere, true).await;
    let mut visitor = TcpStream::connect(elsewhere).await.unwrap();
    visitor.write_all(b"fleet").await.unwrap();
    let mut back = [0u8; 5];
    visitor.read_exact(&mut back).await.unwrap();
    // The link is cut: the visitor on it ends; the next one gets a new link.
    link.cut();
    let ended = within(
        PATIENCE,
        "the relayed visitor's end",
        visitor.read(&mut back),
    )
    .await;
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    round_trip(elsewhere).await;
    assert!(link.accepted() >= 2, "the link was dialed again");
    // a's link address is gone for good: b's visitors are refused, not hung.
    // One may still meet the closing link (it ends with it); once b sees it
    // gone, b says why it refuses them.
    drop(link);
    let refused = "relayed visitor refused: no link to the node that holds the port";
    within(PATIENCE, "b to refuse for want of a link", async {
        loop {
            assert!(turned_away(elsewhere).await);
            if b.server.log().all().iter().any(|l| l.contains(refused)) {
                break;
            }
        }
    })
    .await;
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_secret_gets_no_link() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let port = free_port().port();
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n");
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2"),
        &relay_keys("right"),
    );
    let c = Node::start_with(
        dir.path(),
        &redis,
        "c",
        &on("127.0.0.4"),
        &relay_keys("wrong"),
    );
    let alice = a.login("alice").await.unwrap();
    tunnel_on(&alice, port).await.unwrap();
    let via_c: SocketAddr = format!("127.0.0.4:{port}").parse().unwrap();
    until_listening(via_c, true).await;
    assert!(turned_away(via_c).await);
    a.server.log().wait_for("the wrong proof", PATIENCE, |l| {
        l.contains("link refused: its proof of cluster_secret is wrong")
    });
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(c.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_given_out_twice_while_redis_was_away_goes_to_the_older_claim() {
    let Some((dir, mut redis)) = with_redis() else {
        return;
    };
    let (a, b) = two_nodes(dir.path(), &redis, "");
    let older = a.login("alice").await.unwrap();
    // Redis away: b cannot see that a holds alice, and lets her in too.
    redis.stop();
    let newer = b.login("alice").await.unwrap();
    // Back, empty: whichever node writes first, the older claim wins.
    redis.restart();
    let why = end_of(newer).await;
    assert!(why.contains("replaced"), "{why}");
    let mut conn = redis_connection(&redis).await;
    until_held_by(&mut conn, "alice", Some("a")).await;
    tunnel_echoes(&older).await;
    older.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_link_is_cut_reconnects_and_hears_the_fleet_again() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    // a reaches Redis through a link the test can cut; b directly.
    let link = FaultProxy::start(redis.addr()).unwrap();
    let url = format!("redis://{}", link.addr());
    let a = Node::start_at(dir.path(), &url, "a", "bind_ip = \"127.0.0.1\"\n", "");
    let b = Node::start(dir.path(), &redis, "b", "");
    let mut conn = redis_connection(&redis).await;
    let alice = a.login("alice").await.unwrap();
    until_held_by(&mut conn, "alice", Some("a")).await;
    // Every connection of a's to Redis is reset.
    link.cut();
    // a subscribes again: a kick from b reaches it (asked until it does,
    // as a kick made while a was away would be lost to it).
    within(PATIENCE, "the kick to reach a", async {
        loop {
            let (status, body) = b.post("/api/v1/clients/alice/kick").await;
            assert_eq!(status, 200, "{body}");
            if tokio::time::timeout(Duration::from_millis(200), alice.ended())
                .await
                .is_ok()
            {
                break;
            }
        }
    })
    .await;
    assert!(end_of(alice).await.contains("kicked by"));
    // And its calls work again: a new session of a's is in the store.
    let bob = a.login("bob").await.unwrap();
    until_held_by(&mut conn, "bob", Some("a")).await;
    bob.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_nodes_and_what_the_others_hold() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let Some(chromium) = chromium() else {
        return;
    };
    let (a, b) = two_nodes(dir.path(), &redis, "");
    let alice = b.login("alice").await.unwrap();
    let port = tunnel_on(&alice, 0).await.unwrap().port();
    let bob = a.login("bob").await.unwrap();
    // a's page as a browser renders it, once its scripts have run.
    let profile = tempfile::tempdir().unwrap();
    let page = tokio::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://{}/", a.admin))
        .kill_on_drop(true)
        .output();
    let page = within(PATIENCE, "Chromium's rendering", page)
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&page.stdout);
    for shown in [
        "<td>a (this one)</td>".to_owned(),
        "<tr data-node=\"b\"><td>b</td>".to_owned(),
        "<tr><td>alice</td><td>b</td>".to_owned(),
        format!("<tr><td>{port}/tcp</td><td>alice</td><td>b</td>"),
        "<tr data-client=\"bob\"><td>bob</td>".to_owned(),
    ] {
        assert!(dom.contains(&shown), "no {shown} in {dom}");
    }
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_listener_that_cannot_prove_the_secret_gets_no_visitor() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    // What sits at a's advertised link address welcomes any proof but
    // cannot prove the secret itself: it took the address, not the fleet.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = impostor.local_addr().unwrap();
    let welcomes = tokio::spawn(async move {
        let (mut tcp, _) = impostor.accept().await.unwrap();
        let mut hello = b"RTLINK01".to_vec();
        hello.extend_from_slice(&[7u8; 32]);
        tcp.write_all(&hello).await.unwrap();
        let mut len = [0u8; 1];
        tcp.read_exact(&mut len).await.unwrap();
        let mut rest = vec![0u8; usize::from(len[0]) + 32 + 32];
        tcp.read_exact(&mut rest).await.unwrap();
        let mut welcome = vec![1u8];
        welcome.extend_from_slice(&[0u8; 32]);
        tcp.write_all(&welcome).await.unwrap();
        // The dialer hangs up instead of opening a visitor's stream.
        let mut after = Vec::new();
        tcp.read_to_end(&mut after).await.unwrap_or(0)
    });
    let port = free_port().port();
    let on = |ip: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n");
    let real = free_port();
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2"),
        &links(real, fake, "s"),
    );
    let b = Node::start_with(dir.path(), &redis, "b", &on("127.0.0.3"), &relay_keys("s"));
    let alice = a.login("alice").await.unwrap();
    tunnel_on(&alice, port).await.unwrap();
    let elsewhere: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    until_listening(elsewhere, true).await;
    assert!(turned_away(elsewhere).await);
    assert_eq!(
        within(PATIENCE, "the impostor's end", welcomes)
            .await
            .unwrap(),
        0
    );
    b.server
        .log()
        .wait_for("the impostor named", PATIENCE, |l| {
            l.contains("cannot prove cluster_secret")
        });
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}

/// A self-signed certificate for a node, as `tls_cert`/`tls_key` settings,
/// and the pin a client trusts it by.
fn node_certificate(dir: &Path, node: &str) -> (String, reitunnel_transport::tls::Fingerprint) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{node}.fleet.test")])
        .and_then(|p| p.self_signed(&key))
        .unwrap();
    let (cert_file, key_file) = (
        dir.join(format!("{node}.crt")),
        dir.join(format!("{node}.key")),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let settings = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    (
        settings,
        reitunnel_transport::tls::Fingerprint::of(cert.der()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_control_ports_have_tls_relay_visitors_over_tls() {
    let Some((dir, redis)) = with_redis() else {
        return;
    };
    let port = free_port().port();
    let on = |ip: &str, tls: &str| format!("bind_ip = \"{ip}\"\nallow_ports = \"{port}\"\n{tls}");
    let ((tls_a, pin_a), (tls_b, _)) = (
        node_certificate(dir.path(), "a"),
        node_certificate(dir.path(), "b"),
    );
    let a = Node::start_with(
        dir.path(),
        &redis,
        "a",
        &on("127.0.0.2", &tls_a),
        &relay_keys("s"),
    );
    let b = Node::start_with(
        dir.path(),
        &redis,
        "b",
        &on("127.0.0.3", &tls_b),
        &relay_keys("s"),
    );
    let mut cfg = ClientConfig::new(a.addr.to_string(), "alice", Secret::new("t"));
    cfg.tls = Some(reitunnel_transport::tls::ClientTls {
        fingerprint: Some(pin_a),
        ..Default::default()
    });
    let alice = Client::connect(cfg, HookChain::default()).await.unwrap();
    tunnel_on(&alice, port).await.unwrap();
    let elsewhere: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    until_listening(elsewhere, true).await;
    round_trip(elsewhere).await;
    // b pinned a's certificate from a's entry; a took TLS on its link.
    b.server.log().wait_for("b's link over TLS", PATIENCE, |l| {
        l.contains("link to node open") && l.contains("tls=true")
    });
    a.server.log().wait_for("a's link over TLS", PATIENCE, |l| {
        l.contains("link from node") && l.contains("tls=true")
    });
    alice.shutdown().await.unwrap();
    assert!(a.server.stop().success());
    assert!(b.server.stop().success());
}
