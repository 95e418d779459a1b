//! A hook chain built from server TOML, as `reitunnel-server --config`
//! builds it: the audit log gets one valid JSON line per event, in order,
//! with the fields operators expect.

mod common;

use std::path::Path;

use common::*;
use reitunnel_client::Client;
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_server::file_config::FileConfig;
use reitunnel_server::hook_config::add_hooks;
use reitunnel_testkit::echo_service;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_has_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let toml = format!(
        r#"
[[hooks]]
kind = "quota"
bytes = "64KiB"
[[hooks]]
kind = "meter"
interval_secs = 3600
sinks = ["events"]
[[hooks]]
kind = "audit"
path = "{}"
streams = true
"#,
        audit.display()
    );
    let cfg = FileConfig::parse(&toml, Path::new("test.toml")).unwrap();
    let rec = Recorder::new();
    let (builder, bg) = add_hooks(
        HookChain::builder(),
        &cfg.hooks,
        "edge-1",
        Path::new("test.toml"),
    )
    .unwrap();
    let server = TestServer::start(builder.shared(rec.clone()).build(), |c| {
        c.name = "edge-1".into()
    })
    .await;
    let echo = echo_service().await;

    let mut bad = client_config(server.addr, "mallory");
    bad.token = Secret::new("wrong");
    assert!(Client::connect(bad, HookChain::default()).await.is_err());
    let client = connect(server.addr, "alice").await;
    let tunnel = reverse(&client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 10_000, 1).await, 10_000);
    // The visitor has its echo before the server closed its stream: wait for
    // the close, so the two streams' lines cannot interleave.
    rec.wait_for("the first stream close", |e| {
        e.iter().any(|e| matches!(e, Ev::StreamClose(..)))
    })
    .await;
    // The next visitor pushes past the 64 KiB quota and is cut off.
    let _ = tokio::time::timeout(PATIENCE, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut v = tokio::net::TcpStream::connect(tunnel.public_addr)
            .await
            .unwrap();
        let _ = v.write_all(&vec![0u8; 256 * 1024]).await;
        let _ = v.read_to_end(&mut Vec::new()).await;
    })
    .await;
    rec.wait_for("two stream closes", |e| {
        e.iter()
            .filter(|e| matches!(e, Ev::StreamClose(..)))
            .count()
            == 2
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_eq!(bg.audit[0].dropped(), 0);

    let text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // Chain order: the meter (before the audit hook) reports a stream's
    // remainder from its own close handler, so that report precedes the
    // audit hook's `stream.closed` line.
    assert_eq!(
        names,
        [
            "server.started",
            "client.rejected",
            "client.connected",
            "tunnel.opened",
            "stream.opened",
            "bandwidth.report",
            "bandwidth.report",
            "stream.closed",
            "stream.opened",
            "quota.exceeded",
            "bandwidth.report",
            "bandwidth.report",
            "stream.closed",
            "tunnel.closed",
            "client.disconnected",
            "server.stopped",
        ],
        "{text}"
    );
    let find = |name: &str, nth: usize| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .nth(nth)
            .unwrap()
    };
    for e in &events {
        let ts = e["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == 20,
            "RFC 3339 UTC seconds: {ts}"
        );
        assert_eq!(e["server"], "edge-1", "{e}");
    }
    let rejected = find("client.rejected", 0);
    assert_eq!(rejected["client"], "mallory");
    assert_eq!(rejected["by"], "token_auth");
    let opened = find("tunnel.opened", 0);
    assert_eq!(opened["client"], "alice");
    assert_eq!(opened["tunnel_id"], tunnel.id.0);
    assert_eq!(opened["bind"], tunnel.public_addr.to_string());
    assert_eq!(opened["target"], echo.to_string());
    let first = find("stream.closed", 0);
    assert_eq!(
        (first["bytes_in"].as_u64(), first["bytes_out"].as_u64()),
        (Some(10_000), Some(10_000))
    );
    assert_eq!(first["reason"], "finished");
    assert_eq!(find("stream.closed", 1)["reason"], "hook");
    assert_eq!(find("quota.exceeded", 0)["client"], "alice");
    assert_eq!(find("quota.exceeded", 0)["limit_bytes"], 65536);
    // Bandwidth reports add up to what the tunnel closed with.
    let closed = find("tunnel.closed", 0);
    let reported = |k: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == "bandwidth.report" && e.get("tunnel_id").is_none())
            .map(|e| e[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(reported("bytes_in"), closed["bytes_in"].as_u64().unwrap());
    assert_eq!(reported("bytes_out"), closed["bytes_out"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_meter_still_reports_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let toml = format!(
        r#"
[[hooks]]
kind = "sampled"
one_in = 16
hook = {{ kind = "meter", interval_secs = 3600, sinks = ["events"] }}
[[hooks]]
kind = "audit"
path = "{}"
"#,
        audit.display()
    );
    let cfg = FileConfig::parse(&toml, Path::new("sampled.toml")).unwrap();
    let (builder, _bg) = add_hooks(
        HookChain::builder(),
        &cfg.hooks,
        "edge",
        Path::new("sampled.toml"),
    )
    .unwrap();
    let chain = builder.build();
    assert_eq!(chain.names(), ["sampled(meter)", "audit"]);
    let server = TestServer::start(chain, |_| {}).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "alice").await;
    let tunnel = reverse(&client, echo).await;
    let mut total = 0u64;
    for i in 0..4 {
        let len = 1_000_003 + i * 77;
        total += len as u64;
        echo_check(tunnel.public_addr, len, i as u64 + 1).await;
    }
    client.shutdown().await.unwrap();
    server.stop().await;

    let text = std::fs::read_to_string(&audit).unwrap();
    let sum = |key: &str| -> u64 {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["event"] == "bandwidth.report" && e.get("tunnel_id").is_none())
            .map(|e| e[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("bytes_in"), sum("bytes_out")),
        (total, total),
        "{text}"
    );
}
