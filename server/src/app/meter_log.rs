//! The metering line the server logs every `stats_interval` seconds.

use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::Counters;

/// Logs the counters every `every`, with rates since the previous line.
pub(super) async fn log_counters(counters: Arc<Counters>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = counters.snapshot();
    loop {
        tick.tick().await;
        let now = counters.snapshot();
        let rate = |a: u64, b: u64| (a - b) as f64 / every.as_secs_f64() / 1e6;
        tracing::info!(
            clients = now.clients_active,
            tunnels = now.tunnels_active,
            streams = now.streams_active,
            streams_total = now.streams_total,
            bytes_in = now.bytes_in,
            bytes_out = now.bytes_out,
            in_mb_s = format!("{:.2}", rate(now.bytes_in, last.bytes_in)),
            out_mb_s = format!("{:.2}", rate(now.bytes_out, last.bytes_out)),
            rejections = now.rejections,
            errors = now.errors,
            "meter"
        );
        last = now;
    }
}
