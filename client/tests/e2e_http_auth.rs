//! The `http_auth` gate against a real HTTP service written here: logins,
//! tunnels and (opt-in) visitors are asked about; the service's reason
//! reaches the refused client; a service that hangs past the deadline, or
//! is down, refuses (fail closed) unless `on_failure` allows; an answer with
//! a `ttl_secs` is reused; the login question carries what lets the service
//! check the client's token itself.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reitunnel_client::{Client, RemoteSpec};
use reitunnel_hooks::builtin::{HttpAuth, HttpAuthConfig, OnFailure};
use reitunnel_hooks::HookChain;
use reitunnel_testkit::{echo_service, free_port, within, HttpService, Reply};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The service's policy: alice may do anything but open a tunnel to
/// `forbidden.invalid`; mallory is refused; slowpoke's question hangs; a
/// visitor (when asked) is refused. Tunnel answers are kept for a minute.
fn policy(body: &str) -> Reply {
    let ask: Value = serde_json::from_str(body).unwrap();
    let allow = |ttl: u64| Reply::Json(200, format!(r#"{{"allow":true,"ttl_secs":{ttl}}}"#));
    let deny = |why: &str| Reply::Json(200, format!(r#"{{"allow":false,"reason":"{why}"}}"#));
    match (
        ask["ask"].as_str().unwrap(),
        ask["client"].as_str().unwrap(),
    ) {
        ("login", "mallory") => deny("mallory is on the deny list"),
        ("login", "slowpoke") => Reply::Hang,
        ("login", _) => allow(0),
        ("tunnel", _) if ask["target"].as_str().unwrap().starts_with("forbidden.") => {
            deny("tunnels to forbidden.invalid need a ticket")
        }
        ("tunnel", _) => allow(60),
        ("stream", _) => deny("no visitors today"),
        _ => Reply::Json(500, "{}".to_owned()),
    }
}

fn gate(service: &str, tweak: impl FnOnce(&mut HttpAuthConfig)) -> Arc<HttpAuth> {
    let mut config = HttpAuthConfig::new(format!("http://{service}/authorize"));
    config.timeout = Duration::from_millis(300);
    tweak(&mut config);
    Arc::new(HttpAuth::new(config).unwrap())
}

async fn server_asking(gate: Arc<HttpAuth>) -> (TestServer, Arc<Recorder>) {
    let rec = Recorder::new();
    let chain = HookChain::builder()
        .shared(rec.clone())
        .authorizer(gate)
        .build();
    (TestServer::start(chain, |_| {}).await, rec)
}

async fn login(server: &TestServer, name: &str) -> Result<Client, String> {
    Client::connect(client_config(server.addr, name), HookChain::default())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_decides_logins_and_tunnels_and_its_reasons_reach_the_client() {
    let service = HttpService::start(policy);
    let (server, rec) = server_asking(gate(&service.addr.to_string(), |_| {})).await;

    let alice = login(&server, "alice").await.expect("alice may log in");
    let e = login(&server, "mallory").await.err().unwrap();
    assert!(e.contains("mallory is on the deny list"), "{e}");
    let e = login(&server, "slowpoke").await.err().unwrap();
    assert!(
        e.contains("the authorization service failed (no answer within 300ms), so the login is refused (on_failure = \"deny\")"),
        "{e}"
    );

    // The login question lets the service check alice's token itself.
    let first: Value = serde_json::from_str(&service.bodies()[0]).unwrap();
    assert_eq!(first["client"], "alice");
    assert!(first["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    let bytes = |key: &str| -> Vec<u8> {
        let hex = first[key].as_str().unwrap();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    let nonce: [u8; 32] = bytes("nonce").try_into().unwrap();
    let proof: [u8; 32] = bytes("proof").try_into().unwrap();
    assert!(reitunnel_proto::auth::verify(
        TOKEN.as_bytes(),
        &nonce,
        "alice",
        &proof
    ));

    // Tunnels: one refused with the service's reason; one allowed, and the
    // same question again answered from the cache (the service asked once).
    let spec: RemoteSpec = "0:forbidden.invalid:80".parse().unwrap();
    let e = alice.open_reverse(spec).await.unwrap_err().to_string();
    assert!(
        e.contains("tunnels to forbidden.invalid need a ticket"),
        "{e}"
    );
    let echo = echo_service().await;
    let port = free_port().port();
    let spec: RemoteSpec = format!("127.0.0.1:{port}:{echo}").parse().unwrap();
    let tunnel = alice.open_reverse(spec.clone()).await.unwrap();
    echo_check(tunnel.public_addr, 1 << 16, 1).await;
    let asked = |service: &HttpService, what: &str| {
        service
            .bodies()
            .iter()
            .filter(|b| b.contains(&format!("\"ask\":\"{what}\"")))
            .count()
    };
    assert_eq!(asked(&service, "tunnel"), 2);
    alice.close_tunnel(tunnel.id).await.unwrap();
    // Its port is free once its close event fired.
    rec.wait_for("the tunnel's close", |events| {
        events
            .iter()
            .any(|e| matches!(e, Ev::TunnelClose(id, ..) if *id == tunnel.id))
    })
    .await;
    alice.open_reverse(spec).await.unwrap();
    assert_eq!(asked(&service, "tunnel"), 2, "the kept answer was used");
    // Visitors are not asked about unless the gate says so.
    assert_eq!(asked(&service, "stream"), 0);

    let rejected = rec
        .events()
        .into_iter()
        .filter(|e| matches!(e, Ev::Rejected { by, .. } if by == "http_auth"));
    assert_eq!(
        rejected.count(),
        3,
        "mallory, slowpoke, the forbidden tunnel"
    );
    alice.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_are_asked_when_opted_in_and_a_down_service_fails_closed_or_open() {
    let service = HttpService::start(policy);
    let (server, rec) = server_asking(gate(&service.addr.to_string(), |c| c.streams = true)).await;
    let alice = login(&server, "alice").await.unwrap();
    let echo = echo_service().await;
    let tunnel = reverse(&alice, echo).await;
    let mut visitor = TcpStream::connect(tunnel.public_addr).await.unwrap();
    assert_eq!(
        visitor.read(&mut [0u8; 8]).await.unwrap_or(0),
        0,
        "the visitor is closed"
    );
    rec.wait_for("the visitor's refusal", |events| {
        events.iter().any(|e| {
            matches!(e, Ev::Rejected { by, reason } if by == "http_auth" && reason.contains("no visitors today"))
        })
    })
    .await;
    let stream_ask: Value = service
        .bodies()
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap())
        .find(|b| b["ask"] == "stream")
        .unwrap();
    assert!(stream_ask["visitor"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(stream_ask["bind"], tunnel.public_addr.to_string());
    alice.shutdown().await.unwrap();
    server.stop().await;

    // Nobody listens there: refused by default, let in with on_failure = allow.
    let down = free_port().to_string();
    let (server, _) = server_asking(gate(&down, |_| {})).await;
    let e = login(&server, "alice").await.err().unwrap();
    assert!(
        e.contains("the authorization service failed (connect:"),
        "{e}"
    );
    server.stop().await;
    let (server, _) = server_asking(gate(&down, |c| c.on_failure = OnFailure::Allow)).await;
    login(&server, "alice")
        .await
        .expect("let in when the service is down")
        .shutdown()
        .await
        .unwrap();
    server.stop().await;
}

/// A tunnel request waits for the service off the session's control loop:
/// while a question about it hangs, an operator's kick still ends the
/// session at once (it once waited for the question's deadline), and a
/// second tunnel the service need not be asked about long opens meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_question_holds_up_nothing_else_of_the_session() {
    let service = HttpService::start(|body| {
        let ask: Value = serde_json::from_str(body).unwrap();
        match ask["ask"].as_str().unwrap() {
            "tunnel" if ask["target"].as_str().unwrap().starts_with("slow.") => Reply::Hang,
            _ => Reply::Json(200, r#"{"allow":true}"#.to_owned()),
        }
    });
    // Far longer than the test may take: only the kick can end the wait.
    let gate = gate(&service.addr.to_string(), |c| {
        c.timeout = Duration::from_secs(3600)
    });
    let rec = Recorder::new();
    let chain = HookChain::builder()
        .shared(rec.clone())
        .authorizer(gate)
        .build();
    let server =
        TestServer::start(chain, |c| c.handshake_timeout = Duration::from_secs(3600)).await;
    let client = Arc::new(login(&server, "patient").await.unwrap());
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            let spec: RemoteSpec = "0:slow.invalid:80".parse().unwrap();
            client.open_reverse(spec).await
        })
    };
    // The slow question is out (the service has its body) ...
    within(PATIENCE, "the slow question", async {
        while !service.bodies().iter().any(|b| b.contains("slow.invalid")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // ... and another tunnel of the same session opens meanwhile.
    let echo = echo_service().await;
    let fast = reverse(&client, echo).await;
    assert_eq!(echo_check(fast.public_addr, 10_000, 1).await, 10_000);
    server.admin.kick("patient", None, "test").unwrap();
    within(PATIENCE, "the kicked session's end", client.ended()).await;
    let answer = within(PATIENCE, "the slow request's end", slow)
        .await
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    server.stop().await;
    assert_balanced(&rec.events());
}
