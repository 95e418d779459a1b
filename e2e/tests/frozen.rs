//! Peers that freeze without closing anything (SIGSTOP: the kernel keeps
//! their sockets open and acknowledges what arrives): only heartbeats can
//! tell. The other side must notice within its heartbeat timeout, and after
//! SIGCONT the two must find each other again, the tunnel on the same port.

mod common;

use std::time::Instant;

use common::*;

/// The server's `[limits]`: a ping every 200 ms, dead after 1.5 s of silence.
const SERVER_LIMITS: &str = "[limits]\nheartbeat_interval_ms = 200\nheartbeat_timeout_ms = 1500\n";

/// A frozen client is caught by the server's heartbeat: it logs the client
/// unresponsive (`heartbeat timeout`) and the session gone, rather than
/// holding it until TCP gives up. Thawed, the client finds its session dead,
/// logs in again, gets the same public port (held on a lease meanwhile) and
/// traffic flows.
#[test]
fn server_drops_a_frozen_client_and_takes_it_back_when_thawed() {
    let echo = echo_service();
    let config = ConfigFile::new("frozen-client-server", SERVER_LIMITS);
    let server = start_server(
        "127.0.0.1:0",
        &["--config", config.arg(), "--port-lease", "30"],
    );
    let client = start_client(
        server.addr,
        &["--reconnect-max", "1", "-R", &format!("0:{echo}")],
    );
    let public = client.ready(1, PATIENCE);
    echo_check(public, 1 << 20, 3).expect("traffic before the freeze");

    let frozen = client.proc.freeze();
    let stopped = Instant::now();
    let timeout = server.proc.stderr.wait_for_nth(
        "the server's heartbeat timeout for the frozen client",
        1,
        PATIENCE,
        |l| l.contains("heartbeat timeout"),
    );
    let detected = stopped.elapsed();
    let gone = server
        .proc
        .stderr
        .wait_for("the frozen client's session closing", PATIENCE, |l| {
            l.contains("client gone") && l.contains("timeout")
        });
    eprintln!(
        "frozen client: the server's heartbeat caught it {} after SIGSTOP\n  {timeout}\n  {gone}",
        ms(detected)
    );

    frozen.thaw();
    let thawed = Instant::now();
    let lost = client.proc.stderr.wait_for_nth(
        "the thawed client noticing its session is gone",
        1,
        PATIENCE,
        |l| l.contains("disconnected; reconnecting"),
    );
    let noticed = thawed.elapsed();
    let again = client.ready(2, PATIENCE);
    eprintln!(
        "frozen client: after SIGCONT it noticed in {} and was ready again in {}\n  {lost}",
        ms(noticed),
        ms(thawed.elapsed())
    );
    assert_eq!(again, public, "the same public port after the thaw");
    echo_check(public, 1 << 20, 4).expect("traffic after the thaw");
    assert_eq!(client.ready_lines(), 2, "one ready line per login");
    server.proc.stderr.wait_for_nth(
        "the server handing the leased port back",
        1,
        PATIENCE,
        |l| l.contains("leased port reclaimed"),
    );
}

/// Freezes the server until the client has reported `losses` failures
/// (the first is the heartbeat timeout, the next ones login attempts that
/// found the frozen server's backlog and timed out), then thaws it; returns
/// after the client is back on the same port and traffic flowed.
fn client_returns_to_a_thawed_server(name: &str, losses: usize) {
    let echo = echo_service();
    let server_config = ConfigFile::new(&format!("{name}-server"), SERVER_LIMITS);
    let client_config = ConfigFile::new(
        &format!("{name}-client"),
        "heartbeat_timeout_ms = 1500\nreconnect_max_secs = 1\n",
    );
    let server = start_server(
        "127.0.0.1:0",
        &["--config", server_config.arg(), "--port-lease", "30"],
    );
    let client = start_client(
        server.addr,
        &[
            "--config",
            client_config.arg(),
            "--reconnect-max",
            "1",
            "-R",
            &format!("0:{echo}"),
        ],
    );
    let public = client.ready(1, PATIENCE);
    echo_check(public, 1 << 20, 5).expect("traffic before the freeze");

    let frozen = server.proc.freeze();
    let stopped = Instant::now();
    let is_loss = |l: &str| l.contains("disconnected; reconnecting");
    let lost = client.proc.stderr.wait_for_nth(
        "the client's heartbeat timeout for the frozen server",
        1,
        PATIENCE,
        is_loss,
    );
    eprintln!(
        "{name}: the client's heartbeat caught the frozen server {} after SIGSTOP\n  {lost}",
        ms(stopped.elapsed())
    );
    assert!(
        lost.contains("heartbeat timeout"),
        "the client names the heartbeat as the reason: {lost}"
    );
    for n in 2..=losses {
        let failed = client.proc.stderr.wait_for_nth(
            "a login attempt to the frozen server failing",
            n,
            PATIENCE,
            is_loss,
        );
        eprintln!(
            "{name}: loss {n} {} after SIGSTOP\n  {failed}",
            ms(stopped.elapsed())
        );
    }

    frozen.thaw();
    let thawed = Instant::now();
    let again = client.ready(2, PATIENCE);
    eprintln!(
        "{name}: ready again {} after SIGCONT (frozen for {})",
        ms(thawed.elapsed()),
        ms(thawed - stopped)
    );
    assert_eq!(again, public, "the same public port after the thaw");
    echo_check(public, 1 << 20, 6).expect("traffic after the thaw");
    assert_eq!(client.ready_lines(), 2, "one ready line per login");
    server.proc.stderr.wait_for_nth(
        "the server handing the leased port back",
        1,
        PATIENCE,
        |l| l.contains("leased port reclaimed"),
    );
}

/// A frozen server is caught by the client's heartbeat (client.toml
/// `heartbeat_timeout_ms = 1500`): the client logs the loss (`disconnected;
/// reconnecting`, naming the heartbeat timeout) and keeps trying. Thawed
/// right away, the server lets it log in again, its tunnel on the same
/// public port (the old session's port came back through the lease), and
/// traffic flows.
#[test]
fn client_leaves_a_frozen_server_and_returns_when_thawed() {
    client_returns_to_a_thawed_server("frozen-server", 1);
}

/// Like the above, but the server stays frozen until a login attempt has
/// failed against it too: the client's connect lands in the frozen
/// server's listen backlog and only its login timeout ends it. Thawed, the
/// server works through the stale connections in its backlog and the client
/// still gets back in, on the same port.
#[test]
fn client_returns_to_a_server_frozen_past_a_login_attempt() {
    client_returns_to_a_thawed_server("long-frozen-server", 2);
}
