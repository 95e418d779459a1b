//! The metrics hook on a real tunnel, read the way Prometheus reads it.
//! Alone in its test binary: it installs the process-wide recorder.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_hooks::builtin::MetricsHook;
use reitunnel_hooks::{ClientInfo, Hook, HookChain};
use reitunnel_testkit::echo_service;
use reitunnel_testkit::prometheus_value;
use tokio::sync::Notify;

/// Wakes the test at each heartbeat the server measures.
#[derive(Default)]
struct Heartbeats(Notify);

impl Hook for Heartbeats {
    fn name(&self) -> &str {
        "heartbeats"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_heartbeat(&self, _: &ClientInfo, _: Duration) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_traffic() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder in this binary");

    let rec = Recorder::new();
    let beats = Arc::new(Heartbeats::default());
    let chain = HookChain::builder()
        .hook(MetricsHook::new(10))
        .shared(rec.clone())
        .shared(beats.clone())
        .build();
    let server = TestServer::start(chain, |c| {
        c.limits.heartbeat_interval = Duration::from_millis(20);
    })
    .await;
    let echo = echo_service().await;
    let client = connect(server.addr, "alice").await;
    let tunnel = reverse(&client, echo).await;
    for i in 0..3 {
        echo_check(tunnel.public_addr, 100_000, i + 1).await;
    }
    rec.wait_for("three stream closes", |e| {
        e.iter()
            .filter(|e| matches!(e, Ev::StreamClose(..)))
            .count()
            == 3
    })
    .await;
    let live = handle.render();
    assert_eq!(
        prometheus_value(&live, "reitunnel_streams_total"),
        Some(3.0),
        "{live}"
    );
    assert_eq!(
        prometheus_value(&live, "reitunnel_streams_active"),
        Some(0.0),
        "{live}"
    );
    assert_eq!(
        prometheus_value(&live, "reitunnel_tunnels_active"),
        Some(1.0),
        "{live}"
    );
    assert_eq!(
        prometheus_value(
            &live,
            "reitunnel_bytes_total{direction=\"in\",client=\"alice\"}"
        ),
        Some(300_000.0),
        "{live}"
    );
    assert_eq!(
        prometheus_value(
            &live,
            "reitunnel_bytes_total{direction=\"out\",client=\"alice\"}"
        ),
        Some(300_000.0),
        "{live}"
    );

    // The heartbeat's round trip, measured by the server (the metrics hook
    // runs before the notifier, so the series exist once it wakes us).
    tokio::time::timeout(PATIENCE, beats.0.notified())
        .await
        .expect("a heartbeat");
    let live = handle.render();
    let rtt =
        prometheus_value(&live, "reitunnel_client_rtt_seconds{client=\"alice\"}").expect(&live);
    assert!(rtt > 0.0 && rtt < PATIENCE.as_secs_f64(), "{live}");
    assert!(
        prometheus_value(&live, "reitunnel_rtt_seconds_count").is_some_and(|n| n >= 1.0),
        "{live}"
    );

    client.shutdown().await.unwrap();
    server.stop().await;
    let done = handle.render();
    assert_eq!(
        prometheus_value(&done, "reitunnel_clients_active"),
        Some(0.0),
        "{done}"
    );
    assert_eq!(
        prometheus_value(&done, "reitunnel_tunnels_active"),
        Some(0.0),
        "{done}"
    );
}
