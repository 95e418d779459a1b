//! The server binary behind HAProxy from Debian (`--proxy-protocol-from`),
//! the client binary sending a PROXY header to nginx behind its tunnel:
//! the visitor's address travels from HAProxy's header through the server
//! and the client to nginx. HAProxy connects from 127.0.0.5, the only
//! address the server trusts; whoever skips it is refused, with the reason
//! in the server's log and in the refused client's own words.
//!
//! Skipped without nginx or HAProxy unless `REITUNNEL_REQUIRE_TOOLS` is set.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use reitunnel_testkit::{
    free_port, haproxy_sending_proxy_v2, installed, nginx_showing_proxy_protocol, HAPROXY, NGINX,
};

/// One HTTP request to `addr`; nginx's answer body, empty if the
/// connection was closed unanswered. Also returns the visitor's port.
fn visit(addr: SocketAddr) -> (u16, String) {
    let mut visitor = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    visitor.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = visitor.local_addr().unwrap().port();
    visitor
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = visitor.read_to_string(&mut answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (port, body.trim().to_owned())
}

#[test]
fn the_visitors_address_crosses_haproxy_server_client_and_reaches_nginx() {
    if !installed(NGINX, "nginx-light") || !installed(HAPROXY, "haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, web) = nginx_showing_proxy_protocol(dir.path());
    let server = start_server("127.0.0.1:0", &["--proxy-protocol-from", "127.0.0.5"]);
    let public = free_port();
    let (control_front, public_front) = (free_port(), free_port());
    let routes = [(control_front, server.addr), (public_front, public)];
    let _haproxy = haproxy_sending_proxy_v2(dir.path(), &routes, "127.0.0.5".parse().unwrap());

    let tunnel = format!("{}:{web}", public.port());
    let client = start_client(control_front, &["--proxy-protocol", "v1", "-R", &tunnel]);
    assert_eq!(client.ready(1, PATIENCE).port(), public.port());
    let log = &server.proc.stderr;
    log.wait_for("the login's log line", PATIENCE, |l| {
        l.contains("client logged in") && l.contains("peer=127.0.0.1:")
    });

    // Through HAProxy: nginx is told the visitor's own address and port,
    // not HAProxy's 127.0.0.5.
    let (port, body) = visit(public_front);
    assert_eq!(body, format!("visitor=127.0.0.1:{port} server=127.0.0.1"));

    // Around it: refused, and the log says why.
    let (_, body) = visit(public);
    assert_eq!(body, "", "a visitor skipping HAProxy was served");
    log.wait_for("the direct visitor's refusal", PATIENCE, |l| {
        l.contains("visitor refused")
            && l.contains("only the balancers it lists may connect, and 127.0.0.1 is not in it")
    });
    let direct = start_client(
        server.addr,
        &["--reconnect-max", "0", "-R", &format!("0:{web}")],
    );
    direct
        .proc
        .stderr
        .wait_for("the direct client's refusal", PATIENCE, |l| {
            l.contains("proxy_protocol_from is set, so only the balancers it lists may connect")
        });
}
