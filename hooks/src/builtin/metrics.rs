//! Counters and gauges through the `metrics` crate, for whatever recorder
//! the program installs (the server installs a Prometheus exporter).
//!
//! Names: `reitunnel_{clients,tunnels,streams}_total` (counters) and
//! `…_active` (gauges), `reitunnel_bytes_total{direction, client}`,
//! `reitunnel_rejections_total{scope, by}`, `reitunnel_errors_total{scope}`,
//! `reitunnel_hook_errors_total{hook}`, the heartbeat round trip as
//! `reitunnel_rtt_seconds` (a summary over all clients) and
//! `reitunnel_client_rtt_seconds{client}` (the last one measured);
//! [`RateLimit`](super::RateLimit) adds `reitunnel_throttles_total`.
//! The per-client label is capped: the first `max_client_labels` names get
//! their own series, later ones share `client="other"`, so a flood of names
//! cannot blow up the time-series database. Byte counter handles are
//! resolved once per stream (its state), so a chunk costs one atomic add.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};

use super::{MeterReport, MeterSink};
use crate::error::HookError;
use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{
    ClientInfo, DataEvent, Direction, ErrorEvent, Rejection, Scope, StreamEnd, StreamInfo, Totals,
    TunnelInfo,
};
use crate::verdict::{CloseReason, Verdict};

/// The metrics hook. See the module docs.
///
/// # Example
///
/// With a Prometheus recorder (the server installs one globally; here a
/// local one, for the example only):
///
/// ```
/// use std::sync::Arc;
/// use metrics_exporter_prometheus::PrometheusBuilder;
/// use reitunnel_hooks::builtin::MetricsHook;
/// use reitunnel_hooks::{Direction, HookChain, Login};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// let recorder = PrometheusBuilder::new().build_recorder();
/// let scrape = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     let chain = HookChain::builder().hook(MetricsHook::new(100)).build();
/// #   let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse().unwrap()));
/// #   let nonce = [0u8; 32];
/// #   let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// #   let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice.clone(), TunnelKind::Reverse,
/// #       "0.0.0.0:8080".parse().unwrap(), "127.0.0.1:3000"));
/// #   let stream = Arc::new(StreamInfo::new(StreamId(1), tunnel.clone(), "127.0.0.1:40000".parse().unwrap()));
///     let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap();
///     let tunnel = chain.open_tunnel(tunnel).unwrap();
///     let stream = chain.open_stream(stream).unwrap();
///     let _ = stream.on_data(Direction::Ingress, &[0u8; 100]);
///     drop((stream, tunnel, client));
/// });
///
/// let text = scrape.render();
/// assert!(text.lines().any(|l| l == "reitunnel_streams_total 1"), "{text}");
/// assert!(text.lines().any(|l| l == "reitunnel_streams_active 0"), "{text}");
/// assert!(text.lines().any(|l| l.starts_with("reitunnel_bytes_total{")
///     && l.contains(r#"direction="in""#) && l.contains(r#"client="alice""#)
///     && l.ends_with(" 100")), "{text}");
/// ```
#[derive(Debug)]
pub struct MetricsHook {
    max_client_labels: usize,
    labelled: Mutex<HashSet<Arc<str>>>,
}

/// A stream's byte counters, resolved once at open.
struct ByteCounters {
    ingress: Counter,
    egress: Counter,
}

impl MetricsHook {
    /// Labels bytes with at most `max_client_labels` distinct client names.
    pub fn new(max_client_labels: usize) -> Self {
        MetricsHook {
            max_client_labels,
            labelled: Mutex::default(),
        }
    }

    /// The label value for `client`: its name while under the cap, else `other`.
    fn client_label(&self, client: &Arc<str>) -> Arc<str> {
        let mut labelled = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        if labelled.contains(client) || labelled.len() < self.max_client_labels {
            labelled.insert(client.clone());
            client.clone()
        } else {
            Arc::from("other")
        }
    }
}

impl Hook for MetricsHook {
    fn name(&self) -> &str {
        "metrics"
    }

    fn on_open(&self, scope: Scope<'_>) {
        let (total, active) = match scope {
            Scope::Client(_) => ("reitunnel_clients_total", "reitunnel_clients_active"),
            Scope::Tunnel(_) => ("reitunnel_tunnels_total", "reitunnel_tunnels_active"),
            Scope::Stream(_) => ("reitunnel_streams_total", "reitunnel_streams_active"),
            Scope::Server => return,
        };
        counter!(total).increment(1);
        gauge!(active).increment(1.0);
    }

    fn on_client_disconnect(&self, _: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        gauge!("reitunnel_clients_active").decrement(1.0);
        Ok(())
    }

    fn on_tunnel_close(&self, _: &TunnelInfo, _: &CloseReason, _: &Totals) -> HookResult {
        gauge!("reitunnel_tunnels_active").decrement(1.0);
        Ok(())
    }

    fn on_stream_close(&self, _: &StreamEnd<'_>) -> HookResult {
        gauge!("reitunnel_streams_active").decrement(1.0);
        Ok(())
    }

    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        let client = self.client_label(&stream.tunnel.client.name).to_string();
        Some(Box::new(ByteCounters {
            ingress: counter!("reitunnel_bytes_total", "direction" => "in", "client" => client.clone()),
            egress: counter!("reitunnel_bytes_total", "direction" => "out", "client" => client),
        }))
    }

    #[inline]
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        if let Some(c) = ev.state::<ByteCounters>() {
            match ev.direction {
                Direction::Ingress => c.ingress.increment(ev.bytes()),
                Direction::Egress => c.egress.increment(ev.bytes()),
            }
        }
        Verdict::Continue
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        counter!("reitunnel_rejections_total", "scope" => r.scope.kind(), "by" => r.by.to_owned())
            .increment(1);
    }

    fn on_heartbeat(&self, client: &ClientInfo, rtt: Duration) {
        let secs = rtt.as_secs_f64();
        histogram!("reitunnel_rtt_seconds").record(secs);
        let label = self.client_label(&client.name).to_string();
        gauge!("reitunnel_client_rtt_seconds", "client" => label).set(secs);
    }

    fn on_error(&self, e: &ErrorEvent<'_>) {
        counter!("reitunnel_errors_total", "scope" => e.scope.kind()).increment(1);
        if let Some(failure) = e.error.downcast_ref::<HookError>() {
            counter!("reitunnel_hook_errors_total", "hook" => failure.hook.clone()).increment(1);
        }
    }
}

/// The meter's reports as `reitunnel_metered_bytes_total{direction, client}`
/// (same label cap), for deployments that want the meter's aggregation in
/// Prometheus rather than per-chunk counting.
impl MeterSink for MetricsHook {
    fn report(&self, report: &MeterReport) {
        for u in &report.clients {
            let client = self.client_label(&u.client).to_string();
            counter!("reitunnel_metered_bytes_total", "direction" => "in", "client" => client.clone())
                .increment(u.bytes_in);
            counter!("reitunnel_metered_bytes_total", "direction" => "out", "client" => client)
                .increment(u.bytes_out);
        }
    }
}
