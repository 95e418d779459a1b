//! The webhook over HTTPS to a real TLS receiver on 127.0.0.1 (certificate
//! from rcgen, under a CA of the test's own): every event arrives, signed,
//! over one kept connection; a receiver that closes each connection still
//! gets every event without a failed attempt; a receiver whose
//! certificate the webhook does not trust is never sent an event, and the
//! error says why.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reitunnel_hooks::builtin::{Secret, Webhook, WebhookConfig};
use reitunnel_hooks::events::{Event, EventSink};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

const PATIENCE: Duration = Duration::from_secs(30);

/// A CA and a leaf for `localhost` it signed.
struct Certs {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn certs(ca_name: &str) -> Certs {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Certs {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client settings trusting only `ca`.
fn trusting(ca: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What the receiver saw: each connection's number with each request's
/// event id header and body.
type Seen = mpsc::UnboundedReceiver<(usize, String, String)>;

/// A TLS receiver answering 204 to every request; with `keep_alive` off
/// it closes the connection after each answer.
async fn receiver(certs: &Certs, keep_alive: bool) -> (u16, Seen) {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certs.leaf.clone()], certs.key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connections += 1;
            let (acceptor, tx, n) = (acceptor.clone(), tx.clone(), connections);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut tls = BufReader::new(tls);
                loop {
                    let (mut id, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if tls.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if lower.starts_with("x-reitunnel-event-id:") {
                            id = line.split_once(':').unwrap().1.trim().to_owned();
                        }
                    }
                    let mut body = vec![0u8; len];
                    tls.read_exact(&mut body).await.unwrap();
                    let _ = tx.send((n, id, String::from_utf8(body).unwrap()));
                    let close = if keep_alive {
                        ""
                    } else {
                        "connection: close\r\n"
                    };
                    let answer = format!("HTTP/1.1 204 No Content\r\n{close}\r\n");
                    tls.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    if !keep_alive {
                        let _ = tls.get_mut().shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

fn webhook(port: u16, tls: Arc<rustls::ClientConfig>) -> Arc<Webhook> {
    Webhook::new(WebhookConfig {
        url: format!("https://localhost:{port}/hooks"),
        secret: Secret::new("s"),
        events: Vec::new(),
        timeout: Duration::from_secs(5),
        retries: 2,
        queue: 64,
        tls: Some(tls),
    })
    .unwrap()
}

fn event(n: u64) -> Event {
    Event::now("tunnel.opened").with("tunnel_id", n)
}

async fn delivered_all(hook: &Webhook) {
    assert!(hook.drain(PATIENCE).await, "events still pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_over_one_kept_tls_connection() {
    let certs = certs("webhook test CA");
    let (port, mut seen) = receiver(&certs, true).await;
    let hook = webhook(port, trusting(&certs.ca));
    for n in 0..5 {
        hook.emit(&event(n));
    }
    delivered_all(&hook).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (connection, id, body) = seen.try_recv().expect("every event arrived");
        assert_eq!(connection, 1, "event {n} came over a new connection");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (body["event"].as_str(), body["tunnel_id"].as_u64()),
            (Some("tunnel.opened"), Some(n))
        );
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 5, "one id per event: {ids:?}");
    let h = hook.health();
    assert_eq!(
        (h.delivered, h.failed_attempts, h.pending),
        (5, 0, 0),
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_closes_each_connection_loses_nothing() {
    let certs = certs("webhook test CA");
    let (port, mut seen) = receiver(&certs, false).await;
    let hook = webhook(port, trusting(&certs.ca));
    for n in 0..4 {
        hook.emit(&event(n));
        // One at a time, so each answer's close reaches the kept connection.
        let (connection, _, _) = tokio::time::timeout(PATIENCE, seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connection, n as usize + 1);
    }
    delivered_all(&hook).await;
    let h = hook.health();
    assert_eq!((h.delivered, h.failed_attempts), (4, 0), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_gets_no_event_and_is_named() {
    let (theirs, ours) = (certs("their CA"), certs("our CA"));
    let (port, mut seen) = receiver(&theirs, true).await;
    let hook = webhook(port, trusting(&ours.ca));
    hook.emit(&event(1));
    delivered_all(&hook).await;
    let h = hook.health();
    assert_eq!((h.delivered, h.failed_attempts), (0, 3), "{h:?}");
    let error = h.last_error.unwrap();
    assert!(
        error.contains("TLS") && error.contains("UnknownIssuer"),
        "names the certificate problem: {error}"
    );
    assert!(
        seen.try_recv().is_err(),
        "an event reached the untrusted receiver"
    );
}
