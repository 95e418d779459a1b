//! A real client process outliving its server process: the server crashes
//! (SIGKILL) or is restarted in order (SIGTERM), a new server process comes
//! up on the same control address, and the client logs in again, re-opens
//! its tunnel on the same public port, and bytes flow through it again.

mod common;

use std::time::Instant;

use common::*;

/// Kills the first server with `signal`, starts a second one on the same
/// control address, and checks the client's way back: it reports the loss
/// (`disconnected; reconnecting`), prints its ready line again with the same
/// public port, and 1 MiB echoes through byte for byte before and after.
fn client_survives_server_restart(signal: &str, first_args: &[&str]) {
    let echo = echo_service();
    let Server {
        proc: first,
        addr: control,
    } = start_server("127.0.0.1:0", first_args);
    let client = start_client(
        control,
        &["--reconnect-max", "1", "-R", &format!("0:{echo}")],
    );
    let public = client.ready(1, PATIENCE);
    echo_check(public, 1 << 20, 1).expect("traffic before the restart");

    let down = Instant::now();
    first.signal(signal);
    let log = first.stderr.clone();
    let status = first.wait_exit(PATIENCE);
    let exited = down.elapsed();
    if signal == "TERM" {
        assert!(
            status.success(),
            "SIGTERM is an orderly shutdown, exit 0: {status}; log tail:\n{}",
            log.tail(20)
        );
    }
    let lost = client
        .proc
        .stderr
        .wait_for("the client reports the lost server", PATIENCE, |l| {
            l.contains("disconnected; reconnecting")
        });
    let noticed = down.elapsed();

    let restarted = Instant::now();
    let second = start_server(&control.to_string(), &[]);
    assert_eq!(second.addr, control, "the new server on the old address");
    let again = client.ready(2, PATIENCE);
    let back = down.elapsed();
    eprintln!(
        "SIG{signal}: server exited after {}, client noticed after {}, \
         ready again {} after the new server started ({} after SIG{signal}); \
         client: {lost}",
        ms(exited),
        ms(noticed),
        ms(restarted.elapsed()),
        ms(back),
    );
    assert_eq!(again, public, "the same public port after the restart");
    echo_check(public, 1 << 20, 2).expect("traffic after the restart");
    assert_eq!(client.ready_lines(), 2, "one ready line per login");
    assert!(
        second.proc.stderr.count(|l| l.contains("client logged in")) == 1,
        "the client logged in to the new server once; its log:\n{}",
        second.proc.stderr.tail(20)
    );
}

/// A crash: SIGKILL leaves the client no Goodbye, only a dead connection.
/// The client still reconnects to the server that replaces it and gets its
/// public port back.
#[test]
fn client_reconnects_after_the_server_is_killed() {
    client_survives_server_restart("KILL", &[]);
}

/// An orderly restart: SIGTERM drains (nothing is open), says Goodbye and
/// exits 0; the client takes that as a loss to recover from, not as the end,
/// and gets its public port back from the next server.
#[test]
fn client_reconnects_after_the_server_is_terminated() {
    client_survives_server_restart("TERM", &["--drain-timeout", "10"]);
}
