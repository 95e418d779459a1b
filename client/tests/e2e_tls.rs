//! TLS and mTLS end to end, with certificates made at run time: a tunnel
//! inside TLS carries checked bytes; every certificate problem (expired,
//! unknown CA, wrong name, wrong fingerprint, missing or refused client
//! certificate) fails with a message that names it, on the side that can
//! fix it, while the server keeps serving.

mod common;

use std::sync::Arc;

use common::pki::{Pem, Pki};
use common::*;
use reitunnel_client::{Client, ClientConfig, ClientTls, Fingerprint};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::HookChain;
use reitunnel_server::ServerConfig;
use reitunnel_testkit::echo_service;
use reitunnel_transport::tls::ServerTls;

fn server_tls(pem: &Pem, client_ca: Option<&Pki>) -> ServerTls {
    ServerTls {
        cert: pem.cert.clone(),
        key: pem.key.clone(),
        client_ca: client_ca.map(|ca| ca.ca_file.clone()),
    }
}

async fn tls_server(tls: ServerTls, token: Option<&str>) -> (TestServer, Arc<Recorder>) {
    let rec = Recorder::new();
    let chain = HookChain::builder().shared(rec.clone()).build();
    let server = TestServer::start(chain, |cfg: &mut ServerConfig| {
        cfg.tls = Some(tls);
        cfg.token = token.map(Secret::new);
    })
    .await;
    (server, rec)
}

fn tls_client(server: &TestServer, name: &str, tls: ClientTls) -> ClientConfig {
    let mut cfg = client_config(server.addr, name);
    cfg.tls = Some(tls);
    cfg
}

fn trusting(ca: &Pki) -> ClientTls {
    ClientTls {
        ca: Some(ca.ca_file.clone()),
        ..ClientTls::default()
    }
}

fn with_cert(ca: &Pki, pem: &Pem) -> ClientTls {
    ClientTls {
        cert: Some(pem.cert.clone()),
        key: Some(pem.key.clone()),
        ..trusting(ca)
    }
}

async fn refused(cfg: ClientConfig) -> String {
    match Client::connect(cfg, HookChain::default()).await {
        Ok(_) => panic!("the connection should have been refused"),
        Err(e) => e.to_string(),
    }
}

async fn tunnel_works(client: &Client) {
    let echo = echo_service().await;
    let tunnel = reverse(client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 1 << 20, 7).await, 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_runs_inside_tls_by_ip_and_by_name() {
    let pki = Pki::new("test ca");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], false);
    let (server, rec) = tls_server(server_tls(&cert, None), Some(TOKEN)).await;

    // Default name: the host of the server address, here an IP SAN.
    let by_ip = Client::connect(
        tls_client(&server, "by-ip", trusting(&pki)),
        HookChain::default(),
    )
    .await
    .expect("TLS by IP");
    tunnel_works(&by_ip).await;
    let mut cfg = tls_client(&server, "by-name", trusting(&pki));
    cfg.server_name = Some("localhost".into());
    let by_name = Client::connect(cfg, HookChain::default())
        .await
        .expect("TLS by name");
    tunnel_works(&by_name).await;

    by_ip.shutdown().await.unwrap();
    by_name.shutdown().await.unwrap();
    server.stop().await;
    let events = rec.events();
    assert_balanced(&events);
    assert!(rec.errors().is_empty(), "{:?}", rec.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_problems_are_named() {
    let pki = Pki::new("test ca");
    let other = Pki::new("other ca");
    let expired = pki.leaf("expired", &["127.0.0.1"], true);
    let (server, rec) = tls_server(server_tls(&expired, None), Some(TOKEN)).await;
    let err = refused(tls_client(&server, "c", trusting(&pki))).await;
    assert!(
        err.contains("the server's certificate has expired"),
        "{err}"
    );
    server.stop().await;
    // The server hears that the client walked away, and why it could have.
    let errors = rec.errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("TLS handshake with 127.0.0.1")
                && e.contains("does not trust this server's certificate")),
        "{errors:?}"
    );

    let good = pki.leaf("good", &["localhost", "127.0.0.1"], false);
    let (server, _rec) = tls_server(server_tls(&good, None), Some(TOKEN)).await;
    let err = refused(tls_client(&server, "c", trusting(&other))).await;
    assert!(
        err.contains("the server's certificate is not signed by a trusted CA"),
        "{err}"
    );

    let mut cfg = tls_client(&server, "c", trusting(&pki));
    cfg.server_name = Some("tunnel.example.org".into());
    let err = refused(cfg).await;
    assert!(
        err.contains("is not valid for the name \"tunnel.example.org\"")
            && err.contains("localhost"),
        "{err}"
    );

    // None of that disturbed the server.
    let ok = Client::connect(
        tls_client(&server, "ok", trusting(&pki)),
        HookChain::default(),
    )
    .await
    .expect("a good client still logs in");
    tunnel_works(&ok).await;
    ok.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_fingerprint_accepts_only_that_certificate() {
    let pki = Pki::new("unused ca");
    let cert = pki.self_signed("self", &["tunnel.internal"]);
    let (server, _rec) = tls_server(server_tls(&cert, None), Some(TOKEN)).await;
    let pin = Fingerprint::of(&cert.der);
    let pinned = |fingerprint| ClientTls {
        fingerprint: Some(fingerprint),
        ..ClientTls::default()
    };
    let client = Client::connect(
        tls_client(&server, "pinned", pinned(pin)),
        HookChain::default(),
    )
    .await
    .expect("the pinned certificate is accepted whatever its name and issuer");
    tunnel_works(&client).await;
    client.shutdown().await.unwrap();

    let wrong: Fingerprint = "00".repeat(32).parse().unwrap();
    let err = refused(tls_client(&server, "pinned", pinned(wrong))).await;
    assert!(
        err.contains(&format!("has fingerprint {pin}, not the pinned {wrong}")),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_becomes_the_name_and_replaces_the_token() {
    let pki = Pki::new("test ca");
    let server_cert = pki.leaf("server", &["127.0.0.1"], false);
    let clients = Pki::new("client ca");
    let alice = clients.leaf("alice", &["alice"], false);
    let (server, rec) = tls_server(server_tls(&server_cert, Some(&clients)), None).await;

    let mut cfg = tls_client(&server, "alice", with_cert(&pki, &alice));
    cfg.token = Secret::new(""); // no token: the certificate is the credential
    let client = Client::connect(cfg, HookChain::default())
        .await
        .expect("alice logs in by certificate");
    tunnel_works(&client).await;

    // Claiming another name than the certificate's is refused.
    let err = refused(tls_client(&server, "bob", with_cert(&pki, &alice))).await;
    assert!(
        err.contains("client name 'bob' does not match its certificate, which is for 'alice'"),
        "{err}"
    );
    client.shutdown().await.unwrap();
    server.stop().await;
    let events = rec.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::Connect(_, n) if n == "alice")),
        "{events:#?}"
    );
    assert_balanced(&events);
}

/// A certificate that names no one (only a URI SAN, as SPIFFE issues) once
/// let its holder log in under any name where it was the only credential.
/// It is refused, saying why, with or without a token beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_that_names_no_one_is_refused_saying_so() {
    let pki = Pki::new("test ca");
    let server_cert = pki.leaf("server", &["127.0.0.1"], false);
    let clients = Pki::new("client ca");
    let nameless = clients.leaf_uri("workload", "spiffe://example.test/ns/prod/sa/alice");
    let why =
        "the client certificate names no one (no DNS subject alternative name and no common name)";
    for token in [None, Some(TOKEN)] {
        let (server, rec) = tls_server(server_tls(&server_cert, Some(&clients)), token).await;
        for name in ["bob", "alice"] {
            let mut cfg = tls_client(&server, name, with_cert(&pki, &nameless));
            if token.is_none() {
                cfg.token = Secret::new(""); // the certificate as the only credential
            }
            let err = refused(cfg).await;
            assert!(err.contains(why), "{name}, token {token:?}: {err}");
        }
        server.stop().await;
        let events = rec.events();
        assert_eq!(rec.rejections(&format!("{why}, so it cannot vouch for a client name: issue it with a DNS SAN or CN naming the client")), 2, "{events:#?}");
        assert!(
            !events.iter().any(|e| matches!(e, Ev::Connect(..))),
            "nobody logged in: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_problems_are_named_on_both_sides() {
    let pki = Pki::new("test ca");
    let server_cert = pki.leaf("server", &["127.0.0.1"], false);
    let clients = Pki::new("client ca");
    let strangers = Pki::new("stranger ca");
    let (server, rec) = tls_server(server_tls(&server_cert, Some(&clients)), Some(TOKEN)).await;

    let err = refused(tls_client(&server, "anon", trusting(&pki))).await;
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );
    rec.wait_for("no-certificate error", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Error(m) if m.contains("presented no certificate")))
    })
    .await;

    let stranger = strangers.leaf("mallory", &["mallory"], false);
    let err = refused(tls_client(&server, "mallory", with_cert(&pki, &stranger))).await;
    assert!(
        err.contains("the server refused our client certificate"),
        "{err}"
    );
    rec.wait_for("unknown-CA error", |ev| {
        ev.iter().any(|e| {
            matches!(e, Ev::Error(m) if m.contains("the client's certificate is not signed by a trusted CA"))
        })
    })
    .await;

    let old = clients.leaf("old", &["old"], true);
    let err = refused(tls_client(&server, "old", with_cert(&pki, &old))).await;
    assert!(
        err.contains("the server refused our client certificate"),
        "{err}"
    );
    rec.wait_for("expired error", |ev| {
        ev.iter().any(
            |e| matches!(e, Ev::Error(m) if m.contains("the client's certificate has expired")),
        )
    })
    .await;

    // Certificate and token combined: a good certificate with a wrong token is still refused.
    let carol = clients.leaf("carol", &["carol"], false);
    let mut cfg = tls_client(&server, "carol", with_cert(&pki, &carol));
    cfg.token = Secret::new("wrong");
    let err = refused(cfg).await;
    assert!(err.contains("token refused"), "{err}");
    let client = Client::connect(
        tls_client(&server, "carol", with_cert(&pki, &carol)),
        HookChain::default(),
    )
    .await
    .expect("certificate and token");
    tunnel_works(&client).await;
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_one_side_only_is_named() {
    let pki = Pki::new("test ca");
    let cert = pki.leaf("server", &["127.0.0.1"], false);
    let (tls_srv, _rec) = tls_server(server_tls(&cert, None), Some(TOKEN)).await;
    let err = refused(client_config(tls_srv.addr, "plain")).await;
    assert!(err.contains("TLS"), "plain client to TLS server: {err}");
    tls_srv.stop().await;

    let (plain, rec) = TestServer::with_hook(reitunnel_hooks::builtin::Counters::new()).await;
    let mut cfg = client_config(plain.addr, "tls");
    cfg.tls = Some(trusting(&pki));
    let err = refused(cfg).await;
    assert!(
        err.contains("does not speak TLS"),
        "TLS client to plain server: {err}"
    );
    rec.wait_for("server names the TLS client", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Error(m) if m.contains("peer speaks TLS")))
    })
    .await;
    plain.stop().await;
}

/// The command-line client: `--fingerprint` pins a self-signed server,
/// `--cert/--key` log in by certificate with its name, no token needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_client_pins_the_server_and_logs_in_by_certificate() {
    let pki = Pki::new("unused ca");
    let server_cert = pki.self_signed("self", &["edge.internal"]);
    let clients = Pki::new("client ca");
    let dave = clients.leaf("dave", &["dave"], false);
    let (server, rec) = tls_server(server_tls(&server_cert, Some(&clients)), None).await;
    let echo = echo_service().await;
    let pin = Fingerprint::of(&server_cert.der).to_string();
    let client = |fingerprint: &str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reitunnel-client"));
        cmd.args([
            "--server",
            &server.addr.to_string(),
            "--fingerprint",
            fingerprint,
        ])
        .arg("--cert")
        .arg(&dave.cert)
        .arg("--key")
        .arg(&dave.key)
        .args(["-R", &format!("0:{echo}")])
        .env_remove("REITUNNEL_TOKEN")
        .kill_on_drop(true);
        cmd
    };

    let wrong = "AB".repeat(32);
    let out = client(&wrong).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: TLS with server") && stderr.contains("not the pinned"),
        "{stderr}"
    );

    let mut child = client(&pin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, public) = Ready::of(&mut child).next().await;
    assert_eq!(echo_check(public, 1 << 20, 3).await, 1 << 20);
    rec.wait_for("dave's login", |ev| {
        ev.iter()
            .any(|e| matches!(e, Ev::Connect(_, n) if n == "dave"))
    })
    .await;
    child.kill().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}
