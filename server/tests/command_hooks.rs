//! `command` hooks in the server binary, started from a TOML file, with a
//! real client on 127.0.0.1: the login gate of docs/INTEGRATING.md (its
//! script and table read out of the guide) admits alice and tells bob
//! why not; a notifier hears a session's events with their bytes and
//! never the server's secrets; a tunnel gate's reason reaches the client;
//! a visitor gate turns a visitor away; a port chooser's port is the
//! tunnel's, and when it declines the server picks as before; a failing
//! notifier shows in the admin API's sinks with its error.
#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{echo_through, start, start_with_env};
use reitunnel_client::{Client, ClientConfig, ClientError, RemoteSpec};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, free_port, http, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);
const TOKEN: &str = "command-hooks-token";

/// `body` as an executable script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A config file in `dir`: the server on 127.0.0.1, then `rest`.
fn write_config(dir: &Path, rest: &str) -> String {
    let path = dir.join("server.toml");
    let text = format!("listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\n{rest}");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn login(server: SocketAddr, name: &str) -> Result<Client, ClientError> {
    let cfg = ClientConfig::new(server.to_string(), name, Secret::new(TOKEN));
    Client::connect(cfg, HookChain::default()).await
}

/// The body of each fenced block of `lang` in `text`'s section `heading`.
fn blocks<'a>(text: &'a str, heading: &str, lang: &str) -> Vec<&'a str> {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let section = &text[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let fence = format!("```{lang}\n");
    section
        .split(fence.as_str())
        .skip(1)
        .map(|rest| &rest[..rest.find("```").expect("a closed block")])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_login_gate_admits_alice_and_tells_bob_why_not() {
    let guide = include_str!("../../docs/INTEGRATING.md");
    let (bash, toml) = (
        blocks(guide, "## Command hooks", "bash"),
        blocks(guide, "## Command hooks", "toml"),
    );
    assert_eq!((bash.len(), toml.len()), (1, 1), "one script, one table");
    let dir = tempfile::tempdir().unwrap();
    let gate = script(dir.path(), "login-gate.sh", bash[0]);
    let table = toml[0].replace("/etc/reitunnel/login-gate.sh", gate.to_str().unwrap());
    assert_ne!(table, toml[0], "the table runs the script");
    let config = write_config(dir.path(), &table);
    let (server, addr, _) = start_with_env(&["--config", &config], &[("REITUNNEL_TOKEN", TOKEN)]);

    let alice = login(addr, "alice").await.expect("alice is on the list");
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let public = alice.open_reverse(spec).await.unwrap().public_addr;
    echo_through(public, 256 << 10, 1).await.unwrap();
    alice.shutdown().await.unwrap();

    let refused = login(addr, "bob")
        .await
        .err()
        .expect("bob is not on the list");
    assert!(
        refused
            .to_string()
            .contains("bob is not on the allow-list (ask ops to add you)"),
        "{refused}"
    );
    server.stop();
}

/// Each connection's bytes, one message per connection: where the
/// notifier scripts send what they got (bash's `/dev/tcp`).
struct Inbox(TcpListener);

impl Inbox {
    async fn open() -> (Inbox, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Inbox(listener), port)
    }

    async fn next(&self) -> String {
        within(PATIENCE, "a notifier's message", async {
            let (mut conn, _) = self.0.accept().await.unwrap();
            let mut text = String::new();
            conn.read_to_string(&mut text).await.unwrap();
            text
        })
        .await
    }
}

/// The `NAME=value` lines of a message, and its JSON line.
fn parse(message: &str) -> (Vec<&str>, Value) {
    let (env, json) = message.split_once("\n---\n").expect("env, then the event");
    (env.lines().collect(), serde_json::from_str(json).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_hears_the_session_with_its_bytes_and_never_the_servers_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (inbox, port) = Inbox::open().await;
    let notify = script(
        dir.path(),
        "notify.sh",
        &format!("#!/bin/bash\n{{ env; echo ---; cat; }} > /dev/tcp/127.0.0.1/{port}\n"),
    );
    let config = write_config(
        dir.path(),
        &format!(
            "token = \"${{REITUNNEL_TOKEN}}\"\n[[hooks]]\nkind = \"command\"\n\
             command = [\"{}\"]\nevents = [\"tunnel.opened\", \"tunnel.closed\"]\n\
             max_concurrent = 1\nenv = [\"NOTIFY_PASSED\"]\n",
            notify.display()
        ),
    );
    let env = [
        ("REITUNNEL_TOKEN", TOKEN),
        ("NOTIFY_MADE_UP_SECRET", "do-not-leak-me"),
        ("NOTIFY_PASSED", "handed-on"),
    ];
    let (server, addr, _) = start_with_env(&["--config", &config], &env);

    let alice = login(addr, "alice").await.unwrap();
    let spec: RemoteSpec = format!("0:{}", echo_service().await).parse().unwrap();
    let public = alice.open_reverse(spec).await.unwrap().public_addr;
    let first = inbox.next().await;
    let (vars, opened) = parse(&first);
    assert_eq!(opened["event"], "tunnel.opened");
    echo_through(public, 300_000, 2).await.unwrap();
    alice.shutdown().await.unwrap();
    let message = inbox.next().await;
    let (closed_vars, closed) = parse(&message);

    assert_eq!(closed["event"], "tunnel.closed");
    assert_eq!(closed["bytes_in"], 300_000);
    assert!(closed["id"].as_str().is_some_and(|id| id != opened["id"]));
    let port = public.port().to_string();
    for wanted in [
        "REITUNNEL_EVENT=tunnel.closed".to_owned(),
        "REITUNNEL_CLIENT=alice".to_owned(),
        format!("REITUNNEL_PORT={port}"),
        "REITUNNEL_BYTES_UP=300000".to_owned(),
        "REITUNNEL_BYTES_DOWN=300000".to_owned(),
        format!("REITUNNEL_EVENT_ID={}", closed["id"].as_str().unwrap()),
        format!("REITUNNEL_TUNNEL={}", closed["tunnel_id"]),
        "NOTIFY_PASSED=handed-on".to_owned(),
    ] {
        assert!(
            closed_vars.contains(&wanted.as_str()),
            "{wanted} in {closed_vars:?}"
        );
    }
    for secret in [TOKEN, "do-not-leak-me"] {
        assert!(!message.contains(secret), "{message}");
        assert!(!vars.iter().any(|v| v.contains(secret)), "{vars:?}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_and_visitor_gates_refuse_with_reasons_and_a_port_chooser_picks_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (echo, other_echo) = (echo_service().await, echo_service().await);
    let chosen = free_port().port();
    let tunnels = script(
        dir.path(),
        "tunnel-gate.sh",
        "#!/bin/bash\n[[ \"$(cat)\" == *'\"target\":\"127.0.0.1:1\"'* ]] || exit 0\n\
         echo \"no tunnels to port 1, $REITUNNEL_CLIENT\"\nexit 1\n",
    );
    // Tells the test whom it turned away, then why.
    let (inbox, inbox_port) = Inbox::open().await;
    let visitors = script(
        dir.path(),
        "visitor-gate.sh",
        &format!(
            "#!/bin/bash\n[[ $REITUNNEL_REMOTE_ADDR == 127.0.0.1:* ]] && exit 0\n\
             echo \"$REITUNNEL_REMOTE_ADDR to $REITUNNEL_PORT\" > /dev/tcp/127.0.0.1/{inbox_port}\n\
             echo \"only local visitors\"\nexit 1\n"
        ),
    );
    let ports = script(
        dir.path(),
        "port-chooser.sh",
        &format!(
            "#!/bin/bash\n[[ \"$(cat)\" == *'\"target\":\"{echo}\"'* ]] || exit 1\necho {chosen}\n"
        ),
    );
    let hook = |program: &Path, gate: &str| {
        format!(
            "[[hooks]]\nkind = \"command\"\ncommand = [\"{}\"]\ngate = \"{gate}\"\n",
            program.display()
        )
    };
    let config = write_config(
        dir.path(),
        &format!(
            "token = \"{TOKEN}\"\n{}{}{}",
            hook(&tunnels, "tunnel"),
            hook(&visitors, "visitor"),
            hook(&ports, "port")
        ),
    );
    let (server, addr, _) = start(&["--config", &config]);
    let alice = login(addr, "alice").await.unwrap();

    let spec: RemoteSpec = format!("0:{echo}").parse().unwrap();
    let public = alice.open_reverse(spec).await.unwrap().public_addr;
    assert_eq!(public.port(), chosen, "the chooser's port");
    echo_through(public, 64 << 10, 3).await.unwrap();

    let spec: RemoteSpec = format!("0:{other_echo}").parse().unwrap();
    let picked = alice.open_reverse(spec).await.unwrap().public_addr;
    assert_ne!(
        picked.port(),
        chosen,
        "the chooser declined: the server picked"
    );
    echo_through(picked, 64 << 10, 4).await.unwrap();

    let spec: RemoteSpec = "0:127.0.0.1:1".parse().unwrap();
    let refused = alice
        .open_reverse(spec)
        .await
        .expect_err("the gate refuses");
    assert!(
        refused.to_string().contains("no tunnels to port 1, alice"),
        "{refused}"
    );

    // A visitor from another loopback address is turned away unserved.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut visitor = socket.connect(public).await.unwrap();
    // Refused, it may find the connection reset already.
    let _ = visitor.write_all(b"let me in").await;
    let _ = visitor.shutdown().await;
    let mut got = Vec::new();
    let read = within(
        PATIENCE,
        "the refused visitor's close",
        visitor.read_to_end(&mut got),
    )
    .await;
    assert!(read.is_err() || got.is_empty(), "served: {got:?}");
    let turned_away = inbox.next().await;
    assert!(turned_away.starts_with("127.0.0.2:"), "{turned_away}");
    assert!(
        turned_away.ends_with(&format!(" to {chosen}\n")),
        "{turned_away}"
    );
    echo_through(public, 1 << 10, 5)
        .await
        .expect("local visitors still get in");

    alice.shutdown().await.unwrap();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_notifier_shows_in_the_admin_apis_sinks_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let fails = script(
        dir.path(),
        "fails.sh",
        "#!/bin/bash\necho \"cannot reach the pager for $REITUNNEL_CLIENT\" >&2\nexit 3\n",
    );
    let config = write_config(
        dir.path(),
        &format!(
            "token = \"{TOKEN}\"\nadmin_listen = \"127.0.0.1:0\"\n[[hooks]]\nkind = \"command\"\n\
             command = [\"{}\"]\nevents = [\"client.connected\"]\n",
            fails.display()
        ),
    );
    let server = common::RunningApp::start(&["--config", &config]).await;
    let alice = login(server.addr, "alice").await.unwrap();
    let sinks = within(PATIENCE, "the failed run counted", async {
        loop {
            let res = http(server.admin, "GET", "/api/v1/sinks", None)
                .await
                .unwrap();
            let sinks: Value = serde_json::from_str(&res.body).unwrap();
            if sinks[0]["failed"] == 1 {
                return sinks;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let sink = &sinks[0];
    assert_eq!(sink["kind"], "command", "{sinks}");
    assert_eq!(sink["target"], fails.to_str().unwrap());
    assert_eq!(
        (sink["succeeded"].as_u64(), sink["healthy"].as_bool()),
        (Some(0), Some(false))
    );
    let error = sink["last_error"].as_str().unwrap();
    assert!(
        error.contains("exit status: 3: cannot reach the pager for alice"),
        "{error}"
    );
    alice.shutdown().await.unwrap();
    server.stop().await;
}
