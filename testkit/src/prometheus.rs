//! Reading Prometheus' text format in tests.

/// The value of `series` (a metric name with its labels, exactly as
/// rendered, e.g. `reitunnel_errors_total{scope="server"}`) in `text`, the
/// recorder's rendered output; `None` if it is not there.
pub fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
