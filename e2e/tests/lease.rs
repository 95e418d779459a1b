//! A killed client process: its public port stays reserved for the lease
//! (still bound, its tunnel and session still open for the hooks), then the
//! lease runs out, the port is freed and the close events fire, tunnel
//! before client.

mod common;

use std::time::Instant;

use common::*;

#[test]
fn a_killed_clients_port_is_held_for_the_lease_then_freed_with_its_close_events() {
    let echo = echo_service();
    let server = start_server("127.0.0.1:0", &["--port-lease", "5"]);
    let client = start_client(server.addr, &["-R", &format!("0:{echo}")]);
    let public = client.ready(1, PATIENCE);
    echo_check(public, 1 << 20, 1).expect("traffic before the kill");

    client.proc.signal("KILL");
    let killed = Instant::now();
    let log = &server.proc.stderr;
    log.wait_for("the port's lease", PATIENCE, |l| {
        l.contains("port leased until the client reconnects")
    });
    // Held: nobody else can bind it, and the tunnel has not closed.
    assert!(
        std::net::TcpListener::bind(public).is_err(),
        "the leased port is still bound"
    );
    let closed = |l: &str| l.contains("tunnel.closed");
    assert_eq!(log.count(closed), 0, "{}", log.tail(20));

    log.wait_for("the lease to expire", PATIENCE, |l| {
        l.contains("lease expired; port freed")
    });
    let expired = killed.elapsed();
    log.wait_for("the client's close event", PATIENCE, |l| {
        l.contains("client.disconnected")
    });
    std::net::TcpListener::bind(public).expect("the port is free after the lease");
    let lines = log.all();
    let at = |text: &str| {
        lines
            .iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in the log"))
    };
    let (expiry, tunnel, gone) = (
        at("lease expired; port freed"),
        at("tunnel.closed"),
        at("client.disconnected"),
    );
    assert!(
        expiry < tunnel && tunnel < gone,
        "port freed, then the tunnel's close, then the client's:\n{}",
        lines[expiry.min(tunnel)..].join("\n")
    );
    assert!(
        lines[tunnel].contains("reason=connection_lost"),
        "{}",
        lines[tunnel]
    );
    assert!(
        lines[gone].contains("reason=connection_lost"),
        "{}",
        lines[gone]
    );
    eprintln!(
        "killed client: port leased, freed {} after SIGKILL (lease 5 s)",
        ms(expired)
    );
}
