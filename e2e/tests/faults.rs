//! What real networks do to the link between a client process and a server
//! process, through the fault-injection proxy: cuts in the middle of
//! transfers, and a link that goes silent without closing (half-open).
//! After each fault the client is back on the same public port, bytes flow,
//! and the server's audit log balances: every open has its close.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use reitunnel_testkit::{pseudo_random, FaultProxy};

/// The server's side: a ping every 200 ms, dead after 1.5 s of silence; an
/// audit log of every event, streams included.
fn server_config(name: &str, audit: &Path) -> ConfigFile {
    ConfigFile::new(
        name,
        &format!(
            "[limits]\nheartbeat_interval_ms = 200\nheartbeat_timeout_ms = 1500\n\
             [[hooks]]\nkind = \"audit\"\npath = \"{}\"\nstreams = true\n",
            audit.display()
        ),
    )
}

fn audit_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{}-{name}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The audit log's events: how many of each, and the close reasons of streams.
fn audit_counts(path: &Path) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut events = HashMap::new();
    let mut stream_reasons = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let event = v["event"].as_str().unwrap().to_owned();
        if event == "stream.closed" {
            let reason = v["reason"].as_str().unwrap_or_default().to_owned();
            *stream_reasons.entry(reason).or_default() += 1;
        }
        *events.entry(event).or_default() += 1;
    }
    (events, stream_reasons)
}

/// Every open in the audit log has exactly one close.
fn assert_balanced(events: &HashMap<String, usize>) {
    for (open, close) in [
        ("client.connected", "client.disconnected"),
        ("tunnel.opened", "tunnel.closed"),
        ("stream.opened", "stream.closed"),
    ] {
        let count = |e: &str| events.get(e).copied().unwrap_or(0);
        assert_eq!(count(open), count(close), "{open} vs {close}: {events:?}");
    }
}

/// A visitor with bytes flowing: 64 KiB sent and echoed, the stream open.
fn flowing_visitor(public: SocketAddr) -> TcpStream {
    let mut visitor = TcpStream::connect(public).unwrap();
    visitor.set_read_timeout(Some(PATIENCE)).unwrap();
    let sent = pseudo_random(7, 64 << 10);
    visitor.write_all(&sent).unwrap();
    let mut back = vec![0u8; sent.len()];
    visitor.read_exact(&mut back).unwrap();
    assert!(back == sent, "the echo before the fault differs");
    visitor
}

/// Reads until the visitor's connection ends (the read timeout is a
/// failure guard); returns how long it took.
fn ended(mut visitor: TcpStream) -> std::time::Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match visitor.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the interrupted visitor was left hanging for {PATIENCE:?}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the interrupted visitor was left hanging for {PATIENCE:?}")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

/// The control connection is reset in the middle of a transfer, twenty
/// times in a row. Each time the visitor whose stream was cut is closed
/// promptly, the client logs in again and gets the same public port (held
/// on a lease), and new visitors get through. In the end the audit log
/// balances and counts every interrupted stream as a lost connection.
#[test]
fn twenty_cuts_mid_transfer_and_the_client_is_back_on_its_port_each_time() {
    const CUTS: usize = 20;
    let echo = echo_service();
    let audit = audit_path("cuts");
    let config = server_config("cuts", &audit);
    let server = start_server("127.0.0.1:0", &["--config", config.arg()]);
    let proxy = FaultProxy::start(server.addr).unwrap();
    let client = start_client(
        proxy.addr(),
        &["--reconnect-max", "1", "-R", &format!("0:{echo}")],
    );
    let public = client.ready(1, PATIENCE);
    let mut slowest_end = std::time::Duration::ZERO;
    let mut slowest_back = std::time::Duration::ZERO;
    for cut in 1..=CUTS {
        let visitor = flowing_visitor(public);
        let at = Instant::now();
        proxy.cut();
        slowest_end = slowest_end.max(ended(visitor));
        let again = client.ready(cut + 1, PATIENCE);
        slowest_back = slowest_back.max(at.elapsed());
        assert_eq!(again, public, "cut {cut}: the same public port");
        echo_check(public, 256 << 10, cut as u64)
            .unwrap_or_else(|e| panic!("after cut {cut}: {e}"));
    }
    eprintln!(
        "{CUTS} cuts: interrupted visitors closed within {}, client ready again within {} of a cut; \
         {} connections through the proxy",
        ms(slowest_end),
        ms(slowest_back),
        proxy.accepted()
    );
    client.proc.signal("TERM");
    assert!(client.proc.wait_exit(PATIENCE).success());
    server.proc.signal("TERM");
    assert!(server.proc.wait_exit(PATIENCE).success());

    let (events, reasons) = audit_counts(&audit);
    assert_balanced(&events);
    assert_eq!(events["client.connected"], CUTS + 1, "{events:?}");
    assert_eq!(
        reasons.get("connection_lost").copied(),
        Some(CUTS),
        "each cut stream counted once as lost: {reasons:?}"
    );
    assert_eq!(
        reasons.get("finished").copied(),
        Some(CUTS),
        "each check after a cut finished: {reasons:?}"
    );
}

/// The link goes silent without closing (packets dropped, no reset), so
/// neither side's TCP says anything: both must notice from missing
/// heartbeats within their deadlines (1.5 s here), not when TCP gives up
/// minutes later. When the link heals, the client is back on its port.
#[test]
fn a_half_open_link_is_noticed_by_both_sides_from_their_heartbeats() {
    let echo = echo_service();
    let audit = audit_path("half-open");
    let config = server_config("half-open", &audit);
    let server = start_server("127.0.0.1:0", &["--config", config.arg()]);
    let proxy = FaultProxy::start(server.addr).unwrap();
    let client_config = ConfigFile::new(
        "half-open-client",
        &format!("heartbeat_timeout_ms = 1500\nremote = [\"0:{echo}\"]\n"),
    );
    let client = start_client(
        proxy.addr(),
        &["--reconnect-max", "1", "--config", client_config.arg()],
    );
    let public = client.ready(1, PATIENCE);
    let visitor = flowing_visitor(public);

    let silent = Instant::now();
    proxy.black_hole(true);
    let server_saw = server
        .proc
        .stderr
        .wait_for("the server's heartbeat timeout", PATIENCE, |l| {
            l.contains("heartbeat timeout")
        });
    let server_after = silent.elapsed();
    let client_saw = client
        .proc
        .stderr
        .wait_for("the client's heartbeat timeout", PATIENCE, |l| {
            l.contains("disconnected; reconnecting") && l.contains("heartbeat timeout")
        });
    let client_after = silent.elapsed();
    let visitor_after = ended(visitor);
    eprintln!(
        "half-open: the server noticed after {}, the client after {}; the cut visitor closed {} later\n  {server_saw}\n  {client_saw}",
        ms(server_after),
        ms(client_after),
        ms(visitor_after)
    );

    proxy.black_hole(false);
    assert_eq!(client.ready(2, PATIENCE), public, "the same public port");
    echo_check(public, 256 << 10, 2).unwrap();
    client.proc.signal("TERM");
    assert!(client.proc.wait_exit(PATIENCE).success());
    server.proc.signal("TERM");
    assert!(server.proc.wait_exit(PATIENCE).success());
    let (events, _) = audit_counts(&audit);
    assert_balanced(&events);
}
