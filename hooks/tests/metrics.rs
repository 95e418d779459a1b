//! The metrics hook against a real Prometheus recorder (installed locally,
//! not globally): series names, labels, the client-label cap, and gauges
//! returning to zero when everything closed.

mod common;

use std::sync::Arc;

use common::{client_at, open_client, stream_of, tunnel_of};
use metrics_exporter_prometheus::PrometheusBuilder;
use reitunnel_hooks::builtin::MetricsHook;
use reitunnel_hooks::testing::StreamGate;
use reitunnel_hooks::{CloseReason, Direction, HookChain, Scope, Verdict};
use reitunnel_testkit::prometheus_value;

#[test]
fn series_labels_cap_and_balance() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let hook = Arc::new(MetricsHook::new(1));
        let chain = HookChain::builder().shared(hook.clone()).build();
        for (i, name) in ["alice", "bob"].into_iter().enumerate() {
            let c = client_at(i as u64 + 1, name, "127.0.0.1:1".parse().unwrap());
            let copen = open_client(&chain, c.clone()).unwrap();
            let t = chain.open_tunnel(tunnel_of(&c, i as u64 + 1)).unwrap();
            let s = chain
                .open_stream(stream_of(t.info(), i as u64 + 1))
                .unwrap();
            assert_eq!(
                s.on_data(Direction::Ingress, &[0u8; 100]),
                Verdict::Continue
            );
            assert_eq!(s.on_data(Direction::Egress, &[0u8; 7]), Verdict::Continue);
            let mid = handle.render();
            assert_eq!(
                prometheus_value(&mid, "reitunnel_streams_active"),
                Some(1.0),
                "{mid}"
            );
            s.close(CloseReason::Finished);
            t.close(CloseReason::Finished);
            copen.close(CloseReason::Finished);
        }
        // A refused stream and an error.
        let refusing = HookChain::builder()
            .shared(hook.clone())
            .hook(StreamGate::Refuse {
                name: "no_streams",
                reason: "no",
            })
            .build();
        let c = client_at(9, "carol", "127.0.0.1:1".parse().unwrap());
        let copen = open_client(&refusing, c.clone()).unwrap();
        let t = refusing.open_tunnel(tunnel_of(&c, 9)).unwrap();
        refusing
            .open_stream(stream_of(t.info(), 9))
            .expect_err("refused");
        refusing.error(Scope::Server, &std::io::Error::other("boom"));
        drop((t, copen));
    });
    let text = handle.render();
    assert_eq!(
        prometheus_value(&text, "reitunnel_clients_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, "reitunnel_streams_total"),
        Some(2.0),
        "{text}"
    );
    for g in [
        "reitunnel_clients_active",
        "reitunnel_tunnels_active",
        "reitunnel_streams_active",
    ] {
        assert_eq!(
            prometheus_value(&text, g),
            Some(0.0),
            "{g} back to 0: {text}"
        );
    }
    // The cap: alice has her own series, bob is "other".
    assert_eq!(
        prometheus_value(
            &text,
            "reitunnel_bytes_total{direction=\"in\",client=\"alice\"}"
        ),
        Some(100.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(
            &text,
            "reitunnel_bytes_total{direction=\"out\",client=\"alice\"}"
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(
            &text,
            "reitunnel_bytes_total{direction=\"in\",client=\"other\"}"
        ),
        Some(100.0),
        "{text}"
    );
    assert!(!text.contains("client=\"bob\""), "{text}");
    assert_eq!(
        prometheus_value(
            &text,
            "reitunnel_rejections_total{scope=\"stream\",by=\"no_streams\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, "reitunnel_errors_total{scope=\"server\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn hook_errors_throttles_and_meter_reports_are_counted() {
    use reitunnel_hooks::builtin::{BandwidthMeter, ByteRate, RateLimit, RateLimitConfig};
    use reitunnel_hooks::ErrorStrategy;
    use std::num::NonZeroU32;

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let hook = Arc::new(MetricsHook::new(10));
        let meter = BandwidthMeter::new(vec![hook.clone()]);
        let limit = RateLimit::new(RateLimitConfig {
            per_client: Some(ByteRate {
                bytes_per_sec: NonZeroU32::new(1000).unwrap(),
                burst: NonZeroU32::new(1000).unwrap(),
            }),
            ..RateLimitConfig::default()
        });
        let chain = HookChain::builder()
            .strategy(ErrorStrategy::CollectAndContinue)
            .shared(hook.clone())
            .shared(meter.clone())
            .hook(limit)
            .hook(StreamGate::Panic {
                name: "boom",
                message: "boom",
            })
            .build();
        let c = client_at(1, "alice", "127.0.0.1:1".parse().unwrap());
        let _c = open_client(&chain, c.clone()).unwrap();
        let t = chain.open_tunnel(tunnel_of(&c, 1)).unwrap();
        // Boom panics (counted per hook); CollectAndContinue lets the stream open.
        let s = chain.open_stream(stream_of(t.info(), 1)).unwrap();
        assert_eq!(
            s.on_data(Direction::Ingress, &[0u8; 1000]),
            Verdict::Continue
        );
        assert!(matches!(
            s.on_data(Direction::Ingress, &[0u8; 500]),
            Verdict::Throttle(_)
        ));
        meter.report_now();
    });
    let text = handle.render();
    assert_eq!(
        prometheus_value(&text, "reitunnel_hook_errors_total{hook=\"boom\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(&text, "reitunnel_throttles_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(
            &text,
            "reitunnel_metered_bytes_total{direction=\"in\",client=\"alice\"}"
        ),
        Some(1500.0),
        "{text}"
    );
}
