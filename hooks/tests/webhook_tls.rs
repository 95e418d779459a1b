//! The webhook over HTTPS to a real TLS receiver on 127.0.0.1 (certificate
//! from rcgen, under a CA of the test's own): every event arrives, signed,
//! over one kept connection; a receiver that closes each connection still
//! gets every event without a failed attempt; a receiver whose
//! certificate the webhook does not trust is never sent an event, and the
//! error says why.

use std::sync::Arc;
use std::time::Duration;

mod tls_receiver;

use reitunnel_hooks::builtin::{Secret, Webhook, WebhookConfig};
use reitunnel_hooks::events::{Event, EventSink};
use tls_receiver::{certs, receiver, trusting};

const PATIENCE: Duration = Duration::from_secs(30);

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
