//! The `redis` hook kind against a real redis-server (Debian's; skipped
//! when it is not installed unless `REITUNNEL_REQUIRE_TOOLS` is set): the
//! server binary, started from a TOML file, appends every event of a
//! session to a stream that a consumer group reads in order and publishes
//! each on its channel; Redis killed in the middle of a session holds the
//! events back (the tunnels keep working), delivers them in order once it
//! is back, and counts those the full queue had to drop.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{redis_connection, start};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{
    echo_service, free_port, http, installed, within, RedisServer, REDIS_SERVER,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// A config: alice may log in, and a `redis` hook (`redis_keys` are its
/// keys after `kind`) sends every event to `redis`.
fn write_config(dir: &Path, redis: &RedisServer, redis_keys: &str, extra: &str) -> String {
    let path = dir.join("server.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\n{extra}\
         [[hooks]]\nkind = \"policy\"\n[hooks.clients.alice]\ntoken = \"a-1\"\n\
         [[hooks]]\nkind = \"redis\"\nurl = \"{}\"\n{redis_keys}",
        redis.url()
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn login(server: SocketAddr) -> Client {
    let cfg = ClientConfig::new(server.to_string(), "alice", Secret::new("a-1"));
    Client::connect(cfg, HookChain::default()).await.unwrap()
}

/// A tunnel of `client` to a fresh echo service, and one round trip through it.
async fn tunnel_that_echoes(client: &Client) {
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let public = client.open_reverse(spec).await.unwrap().public_addr;
    let mut visitor = TcpStream::connect(public).await.unwrap();
    visitor.write_all(b"through the tunnel").await.unwrap();
    let mut back = [0u8; 18];
    visitor.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"through the tunnel");
}

/// An entry's `event`, `id` and parsed `body`, checked to agree.
fn entry(e: &StreamId) -> (String, String, Value) {
    let event: String = e.get("event").expect("an event field");
    let id: String = e.get("id").expect("an id field");
    let body: String = e.get("body").expect("a body field");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["event"], event.as_str(), "the body is the event");
    (event, id, body)
}

/// Every entry of `stream`, oldest first.
async fn whole_stream(conn: &mut MultiplexedConnection, stream: &str) -> Vec<StreamId> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply.ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_reads_every_event_of_a_session_in_order_and_subscribers_hear_them() {
    if !installed(REDIS_SERVER, "redis-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let mut conn = redis_connection(&redis).await;
    // The group exists before the server: it reads from the first event.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "tunnels", "audit", "$", "MKSTREAM"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.psubscribe("reitunnel.*").await.unwrap();
    let mut published = pubsub.into_on_message();

    let config = write_config(
        dir.path(),
        &redis,
        "stream = \"tunnels\"\nmaxlen = 1000\nchannel_prefix = \"reitunnel.\"\n",
        "",
    );
    let (server, addr, _) = start(&["--config", &config]);
    let client = login(addr).await;
    tunnel_that_echoes(&client).await;
    client.shutdown().await.unwrap();

    // The consumer group, as a worker would read it: until the session ends.
    let mut read = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !read
        .iter()
        .any(|(e, _, _): &(String, _, _)| e == "client.disconnected")
    {
        assert!(Instant::now() < deadline, "read so far: {read:#?}");
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP", "audit", "worker-1", "COUNT", "100", "BLOCK", "1000",
            ])
            .arg(&["STREAMS", "tunnels", ">"])
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for e in &key.ids {
                read.push(entry(e));
                let acked: u64 = redis::cmd("XACK")
                    .arg(&["tunnels", "audit", &e.id])
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(acked, 1);
            }
        }
    }
    let names: Vec<&str> = read.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "server.started",
            "client.connected",
            "tunnel.opened",
            "tunnel.closed",
            "client.disconnected"
        ],
        "every event of the session, in order"
    );
    for (event, _, body) in &read[1..] {
        assert_eq!(body["client"], "alice", "{event}: {body}");
    }
    let mut ids: Vec<&str> = read.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), read.len(), "one id per event");

    // Each event was also published on reitunnel.<its name>, in order.
    let mut heard = Vec::new();
    while heard.len() < names.len() {
        let message = within(PATIENCE, "the next published event", published.next())
            .await
            .expect("the subscription stays open");
        let body: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
        let event = body["event"].as_str().unwrap().to_owned();
        assert_eq!(message.get_channel_name(), format!("reitunnel.{event}"));
        heard.push(event);
    }
    assert_eq!(heard, names);
    server.stop();
}

/// The value of the `reitunnel_redis_*` series `name` with the label
/// `lane` (if given) in the server's metrics; 0 before it is first set.
async fn metric(metrics: SocketAddr, name: &str, lane: Option<&str>) -> f64 {
    let text = http(metrics, "GET", "/metrics", None).await.unwrap().body;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| lane.is_none_or(|lane| l.contains(&format!("lane=\"{lane}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_session_gets_the_queued_events_in_order_once_back_and_drops_are_counted()
{
    if !installed(REDIS_SERVER, "redis-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path());
    let metrics = free_port();
    // Room for 8 events: the 1 + TUNNELS events of the outage overflow it.
    const TUNNELS: usize = 12;
    let config = write_config(
        dir.path(),
        &redis,
        "queue = 8\n",
        &format!("metrics_listen = \"{metrics}\"\n"),
    );
    let (server, addr, _) = start(&["--config", &config]);
    let mut conn = redis_connection(&redis).await;
    let started = async {
        while whole_stream(&mut conn, "reitunnel:events").await.is_empty() {
            tokio::task::yield_now().await;
        }
    };
    within(PATIENCE, "server.started in the stream", started).await;

    redis.stop();
    // The server keeps serving while Redis is away.
    let client = login(addr).await;
    for _ in 0..TUNNELS {
        tunnel_that_echoes(&client).await;
    }
    let outage = 1 + TUNNELS; // client.connected and each tunnel.opened
    let unhealthy = async {
        while metric(metrics, "reitunnel_redis_healthy", None).await != 0.0 {
            tokio::task::yield_now().await;
        }
    };
    within(PATIENCE, "the bus reported unhealthy", unhealthy).await;

    // Back, empty (nothing was persisted): it gets what waited, in order.
    redis.restart();
    let mut conn = redis_connection(&redis).await;
    // Every event of the outage is either in the stream or counted dropped.
    let settled = async {
        loop {
            let entries = whole_stream(&mut conn, "reitunnel:events").await;
            let dropped = metric(metrics, "reitunnel_redis_dropped_total", Some("main")).await;
            if entries.len() + dropped as usize == outage {
                return (entries, dropped as usize);
            }
            tokio::task::yield_now().await;
        }
    };
    let (delivered, dropped) = within(PATIENCE, "the queued events delivered", settled).await;
    assert!(dropped > 0, "the outage overflowed the queue");
    let kept = outage - dropped;
    assert!(kept >= 8, "what fit the queue was kept: {kept}");
    let names: Vec<String> = delivered.iter().map(|e| entry(e).0).collect();
    let mut expected = vec!["client.connected".to_owned()];
    expected.resize(kept, "tunnel.opened".to_owned());
    assert_eq!(
        names, expected,
        "the oldest {kept} events, in order ({dropped} dropped)"
    );

    // And new events flow again (one at a time: a burst, such as the 13
    // closing events of a shutdown, would overflow this tiny queue).
    tunnel_that_echoes(&client).await;
    let next = async {
        loop {
            let entries = whole_stream(&mut conn, "reitunnel:events").await;
            if entries.len() > kept {
                return entry(&entries[kept]).0;
            }
            tokio::task::yield_now().await;
        }
    };
    assert_eq!(
        within(PATIENCE, "an event after the restart", next).await,
        "tunnel.opened"
    );
    assert_eq!(metric(metrics, "reitunnel_redis_healthy", None).await, 1.0);
    server.stop();
}
