//! `HttpAuth`'s health and latency reach the `metrics` facade: each
//! question counted by outcome (allow, deny, cached, failed), its time in
//! the histogram, and the endpoint's health gauge going to 0 while it does
//! not answer. Its own test binary: it installs the global recorder.

mod common;

use std::time::Duration;

use common::tunnel_to;
use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_hooks::authorize::{Ask, Authorize};
use reitunnel_hooks::builtin::{HttpAuth, HttpAuthConfig};
use reitunnel_hooks::{Gate, TunnelInfo};
use reitunnel_testkit::{prometheus_value, HttpService, Reply};

/// What `gate` says about a tunnel to `t`.
async fn ask(gate: &HttpAuth, t: &TunnelInfo) -> Gate {
    gate.authorize(&Ask::Tunnel(t)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_latency_and_health_per_endpoint() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let service = HttpService::start(|body| {
        if body.contains("hang.invalid") {
            Reply::Hang
        } else if body.contains("deny.invalid") {
            Reply::Json(200, r#"{"allow":false,"reason":"no"}"#.to_owned())
        } else {
            Reply::Json(200, r#"{"allow":true,"ttl_secs":60}"#.to_owned())
        }
    });
    let mut config = HttpAuthConfig::new(format!("http://{}/", service.addr));
    config.timeout = Duration::from_millis(200);
    let gate = HttpAuth::new(config).unwrap();
    let (allowed, denied, hung) = (
        tunnel_to("ok.invalid:1"),
        tunnel_to("deny.invalid:1"),
        tunnel_to("hang.invalid:1"),
    );
    assert_eq!(ask(&gate, &allowed).await, Gate::Allow);
    assert_eq!(ask(&gate, &allowed).await, Gate::Allow, "from the cache");
    assert!(matches!(ask(&gate, &denied).await, Gate::Refuse(r) if r.message == "no"));
    let text = handle.render();
    let series = |outcome: &str| {
        format!(
            "reitunnel_http_auth_requests_total{{endpoint=\"{}\",outcome=\"{outcome}\"}}",
            service.addr
        )
    };
    let health = format!(
        "reitunnel_http_auth_healthy{{endpoint=\"{}\"}}",
        service.addr
    );
    assert_eq!(
        prometheus_value(&text, &series("allow")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, &series("cached")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, &series("deny")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(prometheus_value(&text, &health), Some(1.0), "{text}");
    let seconds = format!(
        "reitunnel_http_auth_seconds_count{{endpoint=\"{}\"}}",
        service.addr
    );
    assert_eq!(
        prometheus_value(&text, &seconds),
        Some(2.0),
        "asked twice: {text}"
    );

    assert!(
        matches!(ask(&gate, &hung).await, Gate::Refuse(_)),
        "fails closed"
    );
    let text = handle.render();
    assert_eq!(
        prometheus_value(&text, &series("failed")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(prometheus_value(&text, &health), Some(0.0), "{text}");
}
