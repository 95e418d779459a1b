//! The alert hook, its time given by the test (each evaluation is told
//! what time it is, so nothing waits on a clock): a rule fires once when
//! its value stayed above the threshold long enough, stays quiet within
//! its cooldown, and resolves; Slack and Teams targets (webhooks over
//! HTTPS to local receivers) get their own body shapes; failed logins
//! are counted per source network within the rule's window; a client's
//! rate is measured from the meter.

mod common;
mod tls_receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, client_at, open_client_with_token, EventLog, Session};
use reitunnel_hooks::builtin::{
    AlertMetric, AlertRule, Alerts, BodyShape, Secret, TokenAuth, Turn, Webhook, WebhookConfig,
};
use reitunnel_hooks::events::{EventBus, EventSink};
use reitunnel_hooks::{Direction, HookChain};
use serde_json::Value;
use tls_receiver::{certs, receiver, trusting, Seen};

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(30);

fn rule(
    name: &str,
    metric: AlertMetric,
    above: f64,
    targets: Vec<Arc<dyn EventSink>>,
) -> AlertRule {
    AlertRule {
        name: name.to_owned(),
        metric,
        above,
        held: Duration::ZERO,
        window: Duration::ZERO,
        cooldown: Duration::from_secs(300),
        targets: targets
            .iter()
            .fold(EventBus::new().for_server("edge-1"), |bus, t| {
                bus.with(t.clone())
            }),
    }
}

/// A webhook to a local HTTPS receiver, its bodies shaped as `shape`.
async fn target(shape: BodyShape) -> (Arc<Webhook>, Seen) {
    let certs = certs("alert test CA");
    let (port, seen) = receiver(&certs, true).await;
    let config = WebhookConfig {
        url: format!("https://localhost:{port}/services/T000/B000/secret"),
        secret: Secret::new(""),
        events: Vec::new(),
        timeout: Duration::from_secs(5),
        retries: 2,
        queue: 64,
        tls: Some(trusting(&certs.ca)),
    };
    (Webhook::shaped(config, shape).unwrap(), seen)
}

/// The bodies `seen` got, once `hook` delivered everything queued.
async fn bodies(hook: &Webhook, seen: &mut Seen) -> Vec<Value> {
    assert!(hook.drain(PATIENCE).await, "messages still pending");
    let mut bodies = Vec::new();
    while let Ok((_, _, body)) = seen.try_recv() {
        bodies.push(serde_json::from_str(&body).unwrap());
    }
    bodies
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn turns(notices: &[reitunnel_hooks::builtin::Notice]) -> Vec<(Turn, &str)> {
    notices
        .iter()
        .map(|n| (n.turn, n.subject.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_fires_once_stays_quiet_in_its_cooldown_and_resolves_to_slack_and_teams() {
    let (slack, mut to_slack) = target(BodyShape::Slack).await;
    let (teams, mut to_teams) = target(BodyShape::Teams).await;
    let mut busy = rule(
        "busy",
        AlertMetric::OpenStreams,
        0.0,
        vec![slack.clone(), teams.clone()],
    );
    busy.held = Duration::from_secs(30);
    let alerts = Alerts::new(vec![busy]);
    let chain = HookChain::builder().shared(alerts.clone()).build();
    let session = Session::open(&chain, client_at(1, "alice", addr(50_000)), 1);
    let t0 = Instant::now();

    assert!(alerts.evaluate(at(t0, 0)).is_empty());
    let stream = session.stream(1);
    assert!(alerts.evaluate(at(t0, 1)).is_empty(), "over since 1 s");
    assert!(alerts.evaluate(at(t0, 30)).is_empty(), "29 s is not 30");
    assert_eq!(
        turns(&alerts.evaluate(at(t0, 31))),
        [(Turn::Firing, "server")]
    );
    for s in 32..40 {
        assert!(
            alerts.evaluate(at(t0, s)).is_empty(),
            "fires once, at {s} s"
        );
    }
    drop(stream);
    assert_eq!(
        turns(&alerts.evaluate(at(t0, 41))),
        [(Turn::Resolved, "server")]
    );

    // Over again, long enough, within the cooldown (300 s from 31 s): quiet.
    let again = session.stream(2);
    for s in [50, 81, 200] {
        assert!(
            alerts.evaluate(at(t0, s)).is_empty(),
            "in the cooldown at {s} s"
        );
    }
    drop(again);
    assert!(
        alerts.evaluate(at(t0, 210)).is_empty(),
        "an untold firing's end is not told"
    );

    let slack_got = bodies(&slack, &mut to_slack).await;
    assert_eq!(slack_got.len(), 2, "{slack_got:#?}");
    for (body, tag) in slack_got.iter().zip(["[FIRING] busy", "[RESOLVED] busy"]) {
        assert!(body["text"].as_str().unwrap().starts_with(tag), "{body}");
        assert_eq!(body["blocks"][0]["type"], "section", "{body}");
        assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn", "{body}");
        let text = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.contains("*metric*: open_streams"), "{text}");
    }
    let teams_got = bodies(&teams, &mut to_teams).await;
    assert_eq!(teams_got.len(), 2, "{teams_got:#?}");
    for (body, colour) in teams_got.iter().zip(["D70000", "2EB886"]) {
        assert_eq!(body["@type"], "MessageCard", "{body}");
        assert_eq!(body["themeColor"], colour, "{body}");
        let facts = body["sections"][0]["facts"].as_array().unwrap();
        assert!(
            facts
                .iter()
                .any(|f| f["name"] == "rule" && f["value"] == "busy"),
            "{body}"
        );
    }
    drop(session);
}

#[test]
fn failed_logins_count_per_network_within_the_window() {
    let log = Arc::new(EventLog::default());
    let mut brute = rule("brute", AlertMetric::FailedLogins, 2.0, vec![log.clone()]);
    brute.window = Duration::from_secs(60);
    let alerts = Alerts::new(vec![brute]);
    let chain = HookChain::builder()
        .hook(TokenAuth::new(Secret::new("right")))
        .shared(alerts.clone())
        .build();
    let from = |id: u64, ip: &str| client_at(id, "mallory", format!("{ip}:40000").parse().unwrap());
    for (id, ip) in [
        (1, "203.0.113.1"),
        (2, "203.0.113.2"),
        (3, "203.0.113.99"),
        (4, "198.51.100.7"),
    ] {
        assert!(open_client_with_token(&chain, from(id, ip), "wrong").is_err());
    }
    let t0 = Instant::now();
    assert_eq!(
        turns(&alerts.evaluate(at(t0, 0))),
        [(Turn::Firing, "203.0.113.0/24")],
        "three from one /24, one from another"
    );
    assert!(alerts.evaluate(at(t0, 59)).is_empty(), "still within 60 s");
    assert_eq!(
        turns(&alerts.evaluate(at(t0, 60))),
        [(Turn::Resolved, "203.0.113.0/24")]
    );
    let sent: Vec<Value> = log
        .all()
        .iter()
        .map(|e| serde_json::from_str(&e.to_json()).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["event"], "alert.firing");
    assert_eq!(sent[0]["value"], 3.0);
    assert_eq!(sent[0]["subject"], "203.0.113.0/24");
    assert_eq!(sent[1]["event"], "alert.resolved");
    assert_eq!(sent[1]["server"], "edge-1", "the bus names the server");
}

#[test]
fn a_clients_rate_is_its_metered_bytes_over_the_time_between_evaluations() {
    let log = Arc::new(EventLog::default());
    let fast = rule("fast", AlertMetric::ClientRateUp, 1000.0, vec![log.clone()]);
    let alerts = Alerts::new(vec![fast]);
    let chain = HookChain::builder().shared(alerts.clone()).build();
    let session = Session::open(&chain, client_at(1, "alice", addr(50_000)), 1);
    let stream = session.stream(1);
    let t0 = Instant::now();
    assert!(
        alerts.evaluate(at(t0, 0)).is_empty(),
        "no rate before a second evaluation"
    );
    let _ = stream.on_data(Direction::Egress, &[0u8; 1500]);
    let _ = stream.on_data(Direction::Ingress, &[0u8; 9000]);
    assert!(
        alerts.evaluate(at(t0, 2)).is_empty(),
        "750 B/s up (the 9000 went down)"
    );
    let _ = stream.on_data(Direction::Egress, &[0u8; 4000]);
    let fired = alerts.evaluate(at(t0, 4));
    assert_eq!(turns(&fired), [(Turn::Firing, "alice")]);
    assert_eq!(fired[0].value, 2000.0);
    assert_eq!(
        turns(&alerts.evaluate(at(t0, 5))),
        [(Turn::Resolved, "alice")]
    );
    assert_eq!(log.all().len(), 2);
    drop(stream);
}
