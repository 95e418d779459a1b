//! The server binary with no token of its own, asking an `http_auth`
//! service (written here) about every login: the service checks each
//! client's proof against the token it holds for that client, so the right
//! token logs in and the client binary serves its tunnel, and a wrong one
//! is refused with the service's reason in the client's own output.

mod common;

use common::*;
use reitunnel_proto::auth::verify;
use reitunnel_testkit::{HttpService, Reply};
use serde_json::Value;

/// Decodes the hex of a login question's field.
fn bytes32(ask: &Value, key: &str) -> [u8; 32] {
    let hex = ask[key].as_str().unwrap_or_default();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    out
}

/// Knows one client, `alice`, whose token is the test token.
fn service() -> HttpService {
    HttpService::start(|body| {
        let ask: Value = serde_json::from_str(body).unwrap();
        let allow = match ask["ask"].as_str() {
            Some("login") => {
                let name = ask["client"].as_str().unwrap_or_default();
                let (nonce, proof) = (bytes32(&ask, "nonce"), bytes32(&ask, "proof"));
                name == "alice" && verify(TOKEN.as_bytes(), &nonce, name, &proof)
            }
            _ => true,
        };
        let answer = if allow {
            r#"{"allow":true}"#.to_owned()
        } else {
            r#"{"allow":false,"reason":"unknown client or wrong token (checked by the ticket service)"}"#
                .to_owned()
        };
        Reply::Json(200, answer)
    })
}

#[test]
fn a_server_without_a_token_lets_in_whom_the_service_vouches_for() {
    let auth = service();
    let config = ConfigFile::new(
        "http-auth",
        &format!(
            "listen = \"127.0.0.1:0\"\nbind_ip = \"127.0.0.1\"\nstats_interval = 0\n\
             [[hooks]]\nkind = \"http_auth\"\nurl = \"http://{}/check\"\ntimeout_ms = 5000\n",
            auth.addr
        ),
    );
    let server = start_configured(config.arg());
    let echo = echo_service();
    let alice = start_client(
        server.addr,
        &["--name", "alice", "-R", &format!("0:{echo}")],
    );
    let public = alice.ready(1, PATIENCE);
    echo_check(public, 1 << 16, 7).expect("bytes through alice's tunnel");

    let mallory = start_client_with_token(
        server.addr,
        "not-the-token",
        &[
            "--name",
            "alice",
            "--reconnect-max",
            "0",
            "-R",
            &format!("0:{echo}"),
        ],
    );
    mallory.proc.stderr.wait_for("the refusal", PATIENCE, |l| {
        l.contains("unknown client or wrong token (checked by the ticket service)")
    });
    let asked = auth.bodies();
    assert!(
        asked
            .iter()
            .filter(|b| b.contains("\"ask\":\"login\""))
            .count()
            >= 2
    );
    assert!(asked.iter().any(|b| b.contains("\"ask\":\"tunnel\"")));
}
