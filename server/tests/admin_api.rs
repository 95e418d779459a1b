//! The admin endpoint of the server program, run in-process as the binary
//! runs it: the JSON API and `/metrics` read during a transfer agree with
//! the bytes moved; a kick with a ban closes the session (the client hears
//! why) and refuses its next login; closing a tunnel frees its port while
//! the client's other tunnel keeps working; a kick frees the ports leased
//! to a client that vanished; each action is an `admin` event
//! on the live event stream and in the audit log; the token is enforced.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_audit_balanced, echo_through, RunningApp};
use reitunnel_client::{Client, ClientConfig, ClientError};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::{HookChain, RefuseCode};
use reitunnel_testkit::{
    echo_service, event_stream, http, http_with, prometheus_value, pseudo_random, same_echo,
    within, FaultProxy,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(60);

async fn login(server: SocketAddr, name: &str) -> Result<Client, ClientError> {
    let cfg = ClientConfig::new(server.to_string(), name, Secret::new("t"));
    Client::connect(cfg, HookChain::default()).await
}

/// `GET path` as JSON, asserting a 200.
async fn get(admin: SocketAddr, path: &str) -> Value {
    let res = http(admin, "GET", path, None).await.unwrap();
    assert_eq!(res.status, 200, "GET {path}: {}", res.body);
    serde_json::from_str(&res.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", res.body))
}

/// Polls `GET path` until `ok` holds for its JSON, which it returns.
async fn get_until(
    admin: SocketAddr,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let polled = async {
        loop {
            let v = get(admin, path).await;
            if ok(&v) {
                return v;
            }
            tokio::task::yield_now().await;
        }
    };
    match tokio::time::timeout(PATIENCE, polled).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: last {path}: {}", get(admin, path).await),
    }
}

/// Reads the event stream until an event whose JSON has every `fields` pair.
async fn next_event(events: &mut Lines<BufReader<TcpStream>>, fields: &[(&str, Value)]) -> Value {
    let wanted = async {
        while let Some(line) = events.next_line().await.unwrap() {
            let Some(json) = line.strip_prefix("data: ") else {
                continue;
            };
            let v: Value = serde_json::from_str(json).unwrap();
            if fields.iter().all(|(k, want)| v[*k] == *want) {
                return v;
            }
        }
        panic!("the event stream ended before {fields:?}");
    };
    within(PATIENCE, "an event on the stream", wanted).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_a_transfer_kicks_and_closes_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let (config, audit) = (
        dir.path().join("server.toml"),
        dir.path().join("audit.jsonl"),
    );
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\ntoken = \"t\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\n\
             [[hooks]]\nkind = \"rate_limit\"\nper_client_bytes_per_sec = \"1GiB\"\n\
             [[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
            audit.display()
        ),
    )
    .unwrap();
    let server = RunningApp::start(&["--config", config.to_str().unwrap()]).await;
    let (addr, admin) = (server.addr, server.admin);
    assert_eq!(
        http(admin, "GET", "/healthz", None).await.unwrap().status,
        200
    );
    get_until(admin, "/api/v1/clients", "no clients yet", |v| {
        v == &Value::Array(vec![])
    })
    .await;

    // A transfer through alice's tunnel, its visitor still connected.
    let alice = login(addr, "alice").await.unwrap();
    let tunnel = alice
        .open_reverse(format!("0:{}", echo_service().await).parse().unwrap())
        .await
        .unwrap();
    let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
    let mut moved = 0u64;
    let payload = pseudo_random(7, 256 << 10);
    let mut back = vec![0u8; payload.len()];
    // Until the rate sampled each second shows traffic (bounded by PATIENCE).
    let flowing = async {
        loop {
            visitor.write_all(&payload).await.unwrap();
            visitor.read_exact(&mut back).await.unwrap();
            same_echo(&payload, &back, tunnel.public_addr).unwrap();
            moved += payload.len() as u64;
            let t = get(admin, "/api/v1/tunnels").await;
            if t[0]["rate_in"].as_u64() > Some(0) && t[0]["rate_out"].as_u64() > Some(0) {
                return;
            }
        }
    };
    within(PATIENCE, "a rate above zero", flowing).await;
    let id = tunnel.id.0;
    let tunnels = get_until(admin, "/api/v1/tunnels", "the bytes moved", |v| {
        v[0]["bytes_in"] == moved && v[0]["bytes_out"] == moved
    })
    .await;
    let t = &tunnels[0];
    assert_eq!(tunnels.as_array().unwrap().len(), 1, "{tunnels}");
    assert_eq!(
        (
            t["id"].as_u64(),
            t["client"].as_str(),
            t["kind"].as_str(),
            t["streams"].as_u64()
        ),
        (Some(id), Some("alice"), Some("reverse"), Some(1)),
        "{t}"
    );
    assert_eq!(t["bind"], tunnel.public_addr.to_string());
    let clients = get(admin, "/api/v1/clients").await;
    let c = &clients[0];
    assert_eq!(
        (c["name"].as_str(), c["streams"].as_u64()),
        (Some("alice"), Some(1)),
        "{c}"
    );
    assert_eq!(
        (c["bytes_in"].as_u64(), c["bytes_out"].as_u64()),
        (Some(moved), Some(moved))
    );
    assert_eq!(c["tunnels"], serde_json::json!([id]));
    let since = c["logged_in_at"].as_str().unwrap();
    assert!(
        since.len() == 20 && since.ends_with('Z'),
        "RFC 3339 UTC: {since}"
    );
    assert_eq!(c["quota"]["limit"], 1u64 << 30);
    let used = c["quota"]["used"].as_u64().unwrap();
    assert!(used >= moved, "quota used {used} < {moved} moved: {c}");
    assert_eq!(c["quota"]["left"], (1u64 << 30) - used);
    assert_eq!(
        c["throttled_chunks"], 0,
        "1 GiB/s never held a chunk back: {c}"
    );
    assert_eq!(get(admin, "/api/v1/clients/alice").await["id"], c["id"]);
    let metrics = http(admin, "GET", "/metrics", None).await.unwrap().body;
    for (dir, bytes) in [("in", moved), ("out", moved)] {
        let series = format!("reitunnel_bytes_total{{direction=\"{dir}\",client=\"alice\"}}");
        assert_eq!(
            prometheus_value(&metrics, &series),
            Some(bytes as f64),
            "{series}"
        );
    }
    // Closed, the stream's bytes move to the tunnel's own count: none lost.
    drop(visitor);
    get_until(admin, "/api/v1/tunnels", "the visitor closed", |v| {
        v[0]["streams"] == 0 && v[0]["bytes_in"] == moved && v[0]["bytes_out"] == moved
    })
    .await;

    // A kick with a ban, seen on the event stream.
    let mut events = event_stream(admin, "/api/v1/events", None).await.unwrap();
    while events
        .next_line()
        .await
        .unwrap()
        .expect("the stream's first line")
        != ": reitunnel event stream"
    {}
    let kicked = http(
        admin,
        "POST",
        "/api/v1/clients/alice/kick?ban_secs=60",
        None,
    )
    .await
    .unwrap();
    assert_eq!(kicked.status, 200, "{}", kicked.body);
    let kicked: Value = serde_json::from_str(&kicked.body).unwrap();
    assert_eq!(
        (
            kicked["sessions_closed"].as_u64(),
            kicked["banned_secs"].as_u64()
        ),
        (Some(1), Some(60))
    );
    let action = next_event(
        &mut events,
        &[("event", "admin".into()), ("action", "kick".into())],
    )
    .await;
    assert_eq!(action["target"], "alice");
    assert!(
        action["by"]
            .as_str()
            .unwrap()
            .starts_with("admin API client 127.0.0.1:"),
        "{action}"
    );
    let gone = next_event(
        &mut events,
        &[
            ("event", "client.disconnected".into()),
            ("client", "alice".into()),
        ],
    )
    .await;
    assert_eq!(gone["reason"], "admin", "{gone}");
    within(PATIENCE, "alice's session to end", alice.ended()).await;
    match alice.shutdown().await {
        Err(ClientError::ServerGoodbye { code, message }) => {
            assert_eq!(code, RefuseCode::Forbidden);
            assert!(
                message.starts_with("kicked by admin API client 127.0.0.1:"),
                "{message}"
            );
            assert!(message.ends_with("banned for 60s"), "{message}");
        }
        other => panic!("alice was told {other:?}"),
    }
    match login(addr, "alice").await {
        Err(ClientError::LoginRefused { message, .. }) => assert!(
            message.contains("client 'alice' is banned by an operator for another"),
            "{message}"
        ),
        other => panic!("a banned login got {:?}", other.map(|c| c.id())),
    }
    get_until(admin, "/api/v1/clients", "alice gone", |v| {
        v == &Value::Array(vec![])
    })
    .await;

    // Closing one of bob's tunnels: its port closes, his other tunnel works.
    let bob = login(addr, "bob").await.unwrap();
    let echo = echo_service().await;
    let spec = || format!("0:{echo}").parse().unwrap();
    let (first, second) = (
        bob.open_reverse(spec()).await.unwrap(),
        bob.open_reverse(spec()).await.unwrap(),
    );
    let path = format!("/api/v1/tunnels/{}/close", first.id.0);
    let closed = http(admin, "POST", &path, None).await.unwrap();
    assert_eq!(closed.status, 200, "{}", closed.body);
    let ended = next_event(
        &mut events,
        &[
            ("event", "tunnel.closed".into()),
            ("tunnel_id", first.id.0.into()),
        ],
    )
    .await;
    assert_eq!(ended["reason"], "admin", "{ended}");
    assert!(
        TcpStream::connect(first.public_addr).await.is_err(),
        "the closed tunnel's port still accepts"
    );
    echo_through(second.public_addr, 64 << 10, 3).await.unwrap();
    let listed = get(admin, "/api/v1/tunnels").await;
    let ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [second.id.0], "{listed}");

    // A vanished client's ports are leased; a kick frees them.
    let link = FaultProxy::start(addr).unwrap();
    let carol = login(link.addr(), "carol").await.unwrap();
    let leased = carol.open_reverse(spec()).await.unwrap();
    link.cut();
    within(PATIENCE, "carol's session to end", carol.ended()).await;
    get_until(admin, "/api/v1/clients", "carol's session gone", |v| {
        v.as_array().unwrap().iter().all(|c| c["name"] != "carol")
    })
    .await;
    assert!(
        TcpStream::connect(leased.public_addr).await.is_ok(),
        "the leased port listens"
    );
    let freed = http(admin, "POST", "/api/v1/clients/carol/kick", None)
        .await
        .unwrap();
    let freed: Value = serde_json::from_str(&freed.body).unwrap();
    assert_eq!(
        (
            freed["sessions_closed"].as_u64(),
            freed["leases_freed"].as_u64()
        ),
        (Some(0), Some(1)),
        "{freed}"
    );
    let lease_end = next_event(
        &mut events,
        &[
            ("event", "tunnel.closed".into()),
            ("tunnel_id", leased.id.0.into()),
        ],
    )
    .await;
    assert_eq!(lease_end["reason"], "connection_lost", "{lease_end}");
    assert!(
        TcpStream::connect(leased.public_addr).await.is_err(),
        "the freed port still accepts"
    );

    // The audit file is a sink, healthy.
    let sinks = get(admin, "/api/v1/sinks").await;
    assert_eq!(
        (sinks[0]["kind"].as_str(), sinks[0]["dropped"].as_u64()),
        (Some("audit"), Some(0)),
        "{sinks}"
    );
    assert_eq!(sinks[0]["target"], audit.display().to_string());

    // What a page of another site could make a browser send is refused,
    // and so is a Host that is not loopback (a DNS-rebound page) without a token.
    let kick_bob = "/api/v1/clients/bob/kick";
    let cross = [("Origin", "http://evil.example")];
    let from_elsewhere = http_with(admin, "POST", kick_bob, None, &cross)
        .await
        .unwrap();
    assert_eq!(from_elsewhere.status, 403, "{}", from_elsewhere.body);
    assert!(from_elsewhere
        .body
        .contains("a request from a page of http://evil.example"));
    let rebound = [("Host", "evil.example:9200")];
    let read = http_with(admin, "GET", "/api/v1/clients", None, &rebound)
        .await
        .unwrap();
    assert_eq!(read.status, 403, "{}", read.body);
    assert!(read
        .body
        .contains("Host 'evil.example:9200' is not a loopback name"));
    let local = [("Host", "localhost"), ("Origin", "http://localhost")];
    assert_eq!(
        http_with(admin, "GET", "/api/v1/tunnels", None, &local)
            .await
            .unwrap()
            .status,
        200
    );

    // Mistakes are named.
    for (method, path, status, says) in [
        (
            "POST",
            "/api/v1/clients/nobody/kick",
            404,
            "no client named 'nobody' is logged in",
        ),
        (
            "POST",
            "/api/v1/tunnels/abc/close",
            400,
            "'abc' is not a tunnel id",
        ),
        (
            "POST",
            "/api/v1/tunnels/999999/close",
            404,
            "no open tunnel has id",
        ),
        (
            "POST",
            "/api/v1/clients/bob/kick?ban_secs=soon",
            400,
            "ban_secs must be a whole number",
        ),
        (
            "POST",
            "/api/v1/clients/bob/kick?ban_secs=18446744073709551615",
            400,
            "at most 315360000 (ten years)",
        ),
        (
            "POST",
            "/api/v1/clients/no%40body/kick",
            404,
            "no client named 'no@body'",
        ),
        (
            "GET",
            "/api/v1/clients/bob/kick",
            405,
            "is not an action of the API",
        ),
        (
            "GET",
            "/api/v2/clients",
            404,
            "no such endpoint: /api/v2/clients",
        ),
    ] {
        let res = http(admin, method, path, None).await.unwrap();
        assert_eq!(res.status, status, "{method} {path}: {}", res.body);
        let error: Value = serde_json::from_str(&res.body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{method} {path}: {}",
            res.body
        );
    }

    bob.shutdown().await.unwrap();
    server.stop().await;
    let log = std::fs::read_to_string(&audit).unwrap();
    let admin_lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "admin")
        .collect();
    let actions: Vec<(&str, &str)> = admin_lines
        .iter()
        .map(|v| (v["action"].as_str().unwrap(), v["target"].as_str().unwrap()))
        .collect();
    let first_id = first.id.0.to_string();
    assert_eq!(
        actions,
        [
            ("kick", "alice"),
            ("close_tunnel", first_id.as_str()),
            ("kick", "carol")
        ]
    );
    assert_audit_balanced(&audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_and_checked() {
    let server = RunningApp::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token",
        "t",
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "s3cret",
    ])
    .await;
    let admin = server.admin;
    for (token, status, says) in [
        (None, 401, "this endpoint needs the admin token"),
        (Some("guess"), 401, "wrong admin token"),
    ] {
        for path in ["/api/v1/clients", "/metrics", "/api/v1/events"] {
            let res = http(admin, "GET", path, token).await.unwrap();
            assert_eq!(res.status, status, "{path} with {token:?}");
            assert!(res.body.contains(says), "{path}: {}", res.body);
            assert!(
                res.head.contains("www-authenticate: Bearer"),
                "{}",
                res.head
            );
        }
    }
    let ok = http(admin, "GET", "/api/v1/clients", Some("s3cret"))
        .await
        .unwrap();
    assert_eq!((ok.status, ok.body.as_str()), (200, "[]"));
    // Health and the page itself hold no data: open to probes and browsers.
    for path in ["/healthz", "/"] {
        assert_eq!(
            http(admin, "GET", path, None).await.unwrap().status,
            200,
            "{path}"
        );
    }
    // Ready once the server runs (its task may not have started yet).
    let ready = async {
        while http(admin, "GET", "/readyz", None).await.unwrap().status != 200 {
            tokio::task::yield_now().await;
        }
    };
    within(PATIENCE, "/readyz to answer 200", ready).await;
    // A browser's EventSource cannot send headers: the stream takes ?token=.
    let mut events = event_stream(admin, "/api/v1/events?token=s3cret", None)
        .await
        .unwrap();
    let status = events.next_line().await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    server.stop().await;
}

/// The headers that keep an answer out of other sites' frames and sniffing.
const HARDENED: [&str; 3] = [
    "x-frame-options: DENY",
    "content-security-policy: frame-ancestors 'none'",
    "x-content-type-options: nosniff",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_guarded_like_the_api_and_no_answer_can_be_framed() {
    let server = RunningApp::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token",
        "t",
        "--admin",
        "127.0.0.1:0",
    ])
    .await;
    let admin = server.admin;

    // A DNS-rebound page (a Host that is not loopback) and another site's
    // page read /metrics no more than the API.
    let foreign: [&[(&str, &str)]; 3] = [
        &[("Host", "evil.example:9200")],
        &[("Origin", "http://evil.example")],
        &[("Sec-Fetch-Site", "cross-site")],
    ];
    for headers in foreign {
        for path in ["/metrics", "/api/v1/clients"] {
            let res = http_with(admin, "GET", path, None, headers).await.unwrap();
            assert_eq!(res.status, 403, "{path} with {headers:?}: {}", res.body);
        }
    }
    // Prometheus, curl and the page itself are served.
    let local: [&[(&str, &str)]; 2] = [
        &[],
        &[("Host", "localhost"), ("Origin", "http://localhost")],
    ];
    for headers in local {
        let res = http_with(admin, "GET", "/metrics", None, headers)
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{headers:?}: {}", res.body);
    }

    // No answer can be framed (a framed page could be click-jacked into a
    // Kick) or sniffed as another type: the page, the API, metrics, errors.
    for path in ["/", "/api/v1/clients", "/metrics", "/api/v2/nothing"] {
        let res = http(admin, "GET", path, None).await.unwrap();
        for header in HARDENED {
            assert!(
                res.head.contains(header),
                "{path} lacks {header}:\n{}",
                res.head
            );
        }
    }
    let mut events = event_stream(admin, "/api/v1/events", None).await.unwrap();
    let mut head = String::new();
    while let Some(line) = events.next_line().await.unwrap() {
        if line.is_empty() {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    for header in HARDENED {
        assert!(
            head.contains(header),
            "the event stream lacks {header}:\n{head}"
        );
    }

    server.stop().await;
}
