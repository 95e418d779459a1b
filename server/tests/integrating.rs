//! The examples of docs/INTEGRATING.md, run by the server binary.
//!
//! `statsd`: the server, started from a TOML file whose `statsd` table is
//! an example of the page, sends to a UDP socket of the test. Every line
//! of every packet parses, no packet is larger than `max_packet_bytes`,
//! each flavor's lines have their shape, and the byte counters add up to
//! exactly the bytes moved through a real client's tunnels.
//!
//! `alert`: the page's example starts a server (its URLs pointed at a
//! loopback port), whose chain has the alert hook; a rule of a server
//! fires once to a webhook target when a client logs in and resolves when
//! it leaves.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{echo_through, start};
use reitunnel_client::{Client, ClientConfig, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, within, HttpService, Reply};
use tokio::net::UdpSocket;

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// Bytes each visitor sends (and gets back from the echo service).
const LEN: usize = 300_000;

/// The `toml` code blocks of the section `heading` of docs/INTEGRATING.md.
fn doc_examples(heading: &str) -> Vec<String> {
    let docs = include_str!("../../docs/INTEGRATING.md");
    let start = docs
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/INTEGRATING.md has no `{heading}`"));
    let section = &docs[start + heading.len() + 2..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

/// The example of the StatsD section with `flavor = "<flavor>"`, sending to `to`.
fn statsd_example(flavor: &str, to: SocketAddr) -> String {
    let example = doc_examples("## StatsD and DogStatsD")
        .into_iter()
        .find(|b| b.contains(&format!("flavor = \"{flavor}\"")))
        .unwrap_or_else(|| panic!("no example with flavor = \"{flavor}\""));
    let addr = example
        .lines()
        .find(|l| l.starts_with("addr = "))
        .expect("the example's addr");
    example.replace(addr, &format!("addr = \"{to}\""))
}

/// A config: alice may log in, then `hooks`.
fn write_config(dir: &Path, hooks: &str) -> String {
    let path = dir.join("server.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\n\
         [[hooks]]\nkind = \"policy\"\n[hooks.clients.alice]\ntoken = \"a-1\"\n{hooks}"
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Logs alice in, echoes `LEN` bytes through each of `tunnels` tunnels,
/// and is refused once with a wrong token. Returns the logged-in client.
async fn session(server: SocketAddr, tunnels: usize) -> Client {
    let wrong = ClientConfig::new(server.to_string(), "alice", Secret::new("wrong"));
    assert!(Client::connect(wrong, HookChain::default()).await.is_err());
    let cfg = ClientConfig::new(server.to_string(), "alice", Secret::new("a-1"));
    let client = Client::connect(cfg, HookChain::default()).await.unwrap();
    for seed in 0..tunnels {
        let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
        let public = client.open_reverse(spec).await.unwrap().public_addr;
        echo_through(public, LEN, seed as u64).await.unwrap();
    }
    client
}

/// One metric line: `name:value|type[|#tags]`.
#[derive(Debug)]
struct Line {
    name: String,
    value: f64,
    kind: String,
    tags: BTreeMap<String, String>,
}

fn parse(line: &str) -> Line {
    let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
    let mut fields = rest.split('|');
    let value = fields
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{line:?}"));
    let kind = fields
        .next()
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    assert!(["c", "g", "ms"].contains(&kind.as_str()), "{line:?}");
    let mut tags = BTreeMap::new();
    for field in fields {
        let list = field
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{line:?}"));
        for tag in list.split(',') {
            let (k, v) = tag.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
            tags.insert(k.to_owned(), v.to_owned());
        }
    }
    assert!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "{line:?}"
    );
    Line {
        name: name.to_owned(),
        value,
        kind,
        tags,
    }
}

/// Every packet waiting on `socket`, each checked to fit `max` bytes, as lines.
fn received(socket: &UdpSocket, max: usize, packets: &mut usize) -> Vec<Line> {
    let mut buf = vec![0u8; 65_536];
    let mut lines = Vec::new();
    loop {
        match socket.try_recv(&mut buf) {
            Ok(n) => {
                assert!(n <= max, "a packet of {n} bytes, more than {max}");
                *packets += 1;
                let text = std::str::from_utf8(&buf[..n]).unwrap();
                lines.extend(text.lines().filter(|l| !l.is_empty()).map(parse));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return lines,
            Err(e) => panic!("receiving: {e}"),
        }
    }
}

async fn listener() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn sum(lines: &[Line], name: &str, filter: impl Fn(&Line) -> bool) -> f64 {
    lines
        .iter()
        .filter(|l| l.name == name && filter(l))
        .map(|l| l.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_statsd_counts_every_byte_with_the_client_and_tunnel_in_the_name() {
    // Enough lines not to fit one packet of MAX bytes.
    const TUNNELS: usize = 6;
    const MAX: usize = 512;
    let udp = listener().await;
    let dir = tempfile::tempdir().unwrap();
    // The Telegraf example, in small packets, so that they must be several.
    let hooks = format!(
        "{}max_packet_bytes = {MAX}\n",
        statsd_example("statsd", udp.local_addr().unwrap())
    );
    let (server, addr, _) = start(&["--config", &write_config(dir.path(), &hooks)]);
    let client = session(addr, TUNNELS).await;
    client.shutdown().await.unwrap();
    assert!(server.stop().success());

    let mut packets = 0;
    let lines = received(&udp, MAX, &mut packets);
    assert!(packets > 1, "{packets} packet(s): {lines:#?}");
    let tunnels = |prefix: &str| -> Vec<&str> {
        let mut names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.name.strip_prefix(prefix))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(tunnels("reitunnel.bytes_in.alice.").len(), TUNNELS);
    for l in &lines {
        assert!(l.tags.is_empty(), "plain StatsD has no tags: {l:?}");
        if l.name.contains(".bytes_") {
            assert_eq!(l.kind, "c", "{l:?}");
        }
    }
    let all = |_: &Line| true;
    let moved = (TUNNELS * LEN) as f64;
    let bytes_in: f64 = tunnels("reitunnel.bytes_in.alice.")
        .iter()
        .map(|t| sum(&lines, &format!("reitunnel.bytes_in.alice.{t}"), all))
        .sum();
    let bytes_out: f64 = tunnels("reitunnel.bytes_out.alice.")
        .iter()
        .map(|t| sum(&lines, &format!("reitunnel.bytes_out.alice.{t}"), all))
        .sum();
    assert_eq!((bytes_in, bytes_out), (moved, moved));
    assert_eq!(sum(&lines, "reitunnel.logins", all), 1.0);
    assert_eq!(sum(&lines, "reitunnel.streams_opened", all), TUNNELS as f64);
    assert_eq!(sum(&lines, "reitunnel.streams_closed", all), TUNNELS as f64);
    assert_eq!(
        sum(&lines, "reitunnel.refusals.client.auth_failed", all),
        1.0
    );
    assert!(
        lines
            .iter()
            .any(|l| l.name == "reitunnel.login" && l.kind == "ms"),
        "{lines:#?}"
    );
    let last_gauge = |name: &str| lines.iter().rev().find(|l| l.name == name).map(|l| l.value);
    assert_eq!(last_gauge("reitunnel.open_streams"), Some(0.0));
    assert_eq!(last_gauge("reitunnel.sessions"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dogstatsd_tags_every_line_and_reports_quota_use_while_a_client_is_connected() {
    let udp = listener().await;
    let dir = tempfile::tempdir().unwrap();
    let example = statsd_example("dogstatsd", udp.local_addr().unwrap());
    let max = example
        .lines()
        .find_map(|l| l.strip_prefix("max_packet_bytes = "))
        .map_or(1432, |n| n.parse().unwrap());
    // Emitting often, so that a gauge comes while alice is connected.
    let interval = example
        .lines()
        .find(|l| l.starts_with("interval_ms = "))
        .expect("the example's interval_ms");
    let hooks = format!(
        "[[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\n{}",
        example.replace(interval, "interval_ms = 100")
    );
    let (server, addr, _) = start(&["--config", &write_config(dir.path(), &hooks)]);
    let client = session(addr, 1).await;

    let mut packets = 0;
    let mut lines = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let all_used = |l: &Line| {
        l.name == "reitunnel.quota_used_bytes"
            && l.tags.get("client").map(String::as_str) == Some("alice")
            && l.value == (2 * LEN) as f64
    };
    while !lines.iter().any(all_used) {
        assert!(Instant::now() < deadline, "no quota gauge: {lines:#?}");
        within(PATIENCE, "the next packet", udp.readable())
            .await
            .unwrap();
        lines.extend(received(&udp, max, &mut packets));
    }
    client.shutdown().await.unwrap();
    assert!(server.stop().success());
    lines.extend(received(&udp, max, &mut packets));

    for l in &lines {
        for (k, v) in [("env", "prod"), ("region", "eu-1")] {
            assert_eq!(l.tags.get(k).map(String::as_str), Some(v), "{l:?}");
        }
        assert!(l.name.starts_with("reitunnel."), "{l:?}");
    }
    let alice = |l: &Line| l.tags.get("client").map(String::as_str) == Some("alice");
    let byte_lines: Vec<&Line> = lines
        .iter()
        .filter(|l| l.name == "reitunnel.bytes_in")
        .collect();
    assert!(!byte_lines.is_empty());
    for l in &byte_lines {
        assert!(
            alice(l) && l.tags.get("tunnel").is_some_and(|t| t.starts_with('t')),
            "{l:?}"
        );
    }
    assert_eq!(sum(&lines, "reitunnel.bytes_in", alice), LEN as f64);
    assert_eq!(sum(&lines, "reitunnel.bytes_out", alice), LEN as f64);
    let refused = |l: &Line| {
        l.tags.get("scope").map(String::as_str) == Some("client")
            && l.tags.get("reason").map(String::as_str) == Some("auth_failed")
    };
    assert_eq!(sum(&lines, "reitunnel.refusals", refused), 1.0);
    let ratio = lines
        .iter()
        .find(|l| l.name == "reitunnel.quota_used_ratio" && alice(l))
        .expect("a quota ratio");
    assert!(ratio.value > 0.0 && ratio.value < 1.0, "{ratio:?}");
    assert_eq!(
        ratio.tags.get("period").map(String::as_str),
        Some("86400s"),
        "the quota's period"
    );
}

#[test]
fn the_alert_example_starts_a_server_with_the_alert_hook() {
    let [example] = &doc_examples("## Alerts")[..] else {
        panic!("one example in the Alerts section");
    };
    // Never a request out of the machine: the targets point at a port of ours.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = format!("url = \"http://{}/hook\"", unused.local_addr().unwrap());
    let hooks: String = example
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                local.as_str()
            } else {
                l
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::env::set_var("REITUNNEL_ALERT_SECRET", "test-secret");
    let dir = tempfile::tempdir().unwrap();
    let (server, _, log) = start(&["--config", &write_config(dir.path(), &hooks)]);
    assert!(
        log.iter()
            .any(|l| l.contains("hook chain") && l.contains("\"alert\"")),
        "{log:#?}"
    );
    assert!(server.stop().success());
}

/// The next alert a target was sent.
async fn next_alert(sent: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> serde_json::Value {
    let body = within(PATIENCE, "the next alert", sent.recv())
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_of_the_server_fires_once_to_a_webhook_and_resolves() {
    let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let tx = std::sync::Mutex::new(tx);
    let receiver = HttpService::start(move |body| {
        let _ = tx.lock().unwrap().send(body.to_owned());
        Reply::Json(200, "{}".to_owned())
    });
    let hooks = format!(
        "[[hooks]]\nkind = \"alert\"\ninterval_ms = 50\n\
         [hooks.targets.noc]\nformat = \"webhook\"\nurl = \"http://{}/alerts\"\nsecret = \"s\"\n\
         [[hooks.rules]]\nname = \"anyone-in\"\nmetric = \"sessions\"\nabove = 0\ntargets = [\"noc\"]\n",
        receiver.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, _) = start(&["--config", &write_config(dir.path(), &hooks)]);
    let client = session(addr, 0).await;
    let firing = next_alert(&mut sent).await;
    assert_eq!(
        (
            &firing["event"],
            &firing["rule"],
            &firing["subject"],
            &firing["value"]
        ),
        (
            &"alert.firing".into(),
            &"anyone-in".into(),
            &"server".into(),
            &1.0.into()
        ),
        "{firing}"
    );
    client.shutdown().await.unwrap();
    let resolved = next_alert(&mut sent).await;
    assert_eq!(resolved["event"], "alert.resolved", "{resolved}");
    assert!(server.stop().success());
    assert_eq!(receiver.bodies().len(), 2, "one firing, one resolution");
}

/// An alert target of format "command": the program gets each message as
/// JSON on stdin (here it hands it back over a TCP connection).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_of_the_server_fires_to_a_command_and_resolves() {
    use tokio::io::AsyncReadExt;
    let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = back.local_addr().unwrap().port();
    let hooks = format!(
        "[[hooks]]\nkind = \"alert\"\ninterval_ms = 50\n\
         [hooks.targets.pager]\nformat = \"command\"\n\
         command = [\"bash\", \"-c\", \"cat > /dev/tcp/127.0.0.1/{port}\"]\n\
         [[hooks.rules]]\nname = \"anyone-in\"\nmetric = \"sessions\"\nabove = 0\ntargets = [\"pager\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, _) = start(&["--config", &write_config(dir.path(), &hooks)]);
    let message = || async {
        let (mut conn, _) = within(PATIENCE, "the program's message", back.accept())
            .await
            .unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let client = session(addr, 0).await;
    let firing = message().await;
    assert_eq!(
        (&firing["event"], &firing["rule"]),
        (&"alert.firing".into(), &"anyone-in".into()),
        "{firing}"
    );
    assert!(
        firing["id"].is_string(),
        "the event id, as a webhook's: {firing}"
    );
    client.shutdown().await.unwrap();
    let resolved = message().await;
    assert_eq!(resolved["event"], "alert.resolved", "{resolved}");
    assert!(server.stop().success());
}
