//! The metric lines, written by `cadence` and sent in UDP packets of at
//! most `max_packet_bytes` ([`cadence::BufferedUdpMetricSink`]). The two
//! flavors differ only in where a metric's dimensions go: DogStatsD puts
//! them in tags (`reitunnel.bytes_in:42|c|#client:alice,tunnel:t1`), plain
//! StatsD, which has no tags, in the name (`reitunnel.bytes_in.alice.t1:42|c`).

use std::borrow::Cow;
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cadence::prelude::*;
use cadence::{BufferedUdpMetricSink, Metric, MetricBuilder, MetricSink, SinkStats, StatsdClient};

use super::{Flavor, StatsdConfig};

/// One metric's value and type.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    /// A count since the last emission (`|c`).
    Count(u64),
    /// A level now (`|g`).
    Gauge(u64),
    /// A fraction now (`|g`).
    Ratio(f64),
    /// A duration in milliseconds (`|ms`).
    Millis(u64),
}

/// Why the sink could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StatsdError {
    /// No local UDP socket.
    #[error("statsd: cannot open a UDP socket: {0}")]
    Socket(io::Error),
    /// `addr` is not `host:port`, or the host does not resolve.
    #[error("statsd: addr '{addr}': {problem}")]
    Addr {
        /// The address as configured.
        addr: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// What the sink sent and dropped, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsdHealth {
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets the socket refused to send (an error, a full buffer).
    pub packets_dropped: u64,
    /// Lines longer than a packet, dropped (a very long prefix or tag).
    pub oversized: u64,
}

/// The UDP sink, refusing any line that would not fit a packet: cadence
/// would send such a line alone, in a packet past `max_packet_bytes`.
struct Bounded {
    inner: Arc<BufferedUdpMetricSink>,
    max_line: usize,
    oversized: Arc<AtomicU64>,
}

impl MetricSink for Bounded {
    fn emit(&self, line: &str) -> io::Result<usize> {
        if line.len() > self.max_line {
            self.oversized.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "metric line longer than max_packet_bytes",
            ));
        }
        self.inner.emit(line)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn stats(&self) -> SinkStats {
        self.inner.stats()
    }
}

/// Writes metric lines of one flavor to one address.
pub(super) struct Lines {
    /// The address as configured, for metric labels.
    target: String,
    client: StatsdClient,
    /// The sink inside `client`, for its packet counts.
    udp: Arc<BufferedUdpMetricSink>,
    flavor: Flavor,
    oversized: Arc<AtomicU64>,
}

impl Lines {
    /// Resolves `config.addr` and binds a local UDP socket.
    pub(super) fn open(config: &StatsdConfig) -> Result<Lines, StatsdError> {
        let bad = |problem: String| StatsdError::Addr {
            addr: config.addr.clone(),
            problem,
        };
        let to = std::net::ToSocketAddrs::to_socket_addrs(config.addr.as_str())
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("resolves to no address".to_owned()))?;
        let local: std::net::SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(StatsdError::Socket)?;
        // Sent from a timer task: a full socket buffer drops the packet
        // (counted) rather than stalling the runtime.
        socket.set_nonblocking(true).map_err(StatsdError::Socket)?;
        let udp = BufferedUdpMetricSink::with_capacity(to, socket, config.max_packet_bytes)
            .map_err(|e| bad(e.to_string()))?;
        let udp = Arc::new(udp);
        let oversized = Arc::new(AtomicU64::new(0));
        let sink = Bounded {
            inner: udp.clone(),
            // Each line is followed by a newline in the packet.
            max_line: config.max_packet_bytes.saturating_sub(1),
            oversized: oversized.clone(),
        };
        let mut builder = StatsdClient::builder(&config.prefix, sink).with_error_handler(|e| {
            tracing::debug!(target: "reitunnel::statsd", error = %e, "statsd line not sent");
        });
        if config.flavor == Flavor::Dogstatsd {
            for (key, value) in &config.tags {
                builder = builder.with_tag(clean(key), clean(value));
            }
        }
        Ok(Lines {
            target: config.addr.clone(),
            client: builder.build(),
            udp,
            flavor: config.flavor,
            oversized,
        })
    }

    /// Writes one metric; `dims` are its dimensions (tags, or name segments).
    pub(super) fn send(&self, name: &str, value: Value, dims: &[(&str, &str)]) {
        let (key, tags): (Cow<'_, str>, Vec<(&str, Cow<'_, str>)>) = match self.flavor {
            Flavor::Dogstatsd => (
                Cow::Borrowed(name),
                dims.iter().map(|(k, v)| (*k, clean(v))).collect(),
            ),
            Flavor::Statsd => (
                dims.iter().fold(Cow::Borrowed(name), |key, (_, v)| {
                    Cow::Owned(format!("{key}.{}", segment(v)))
                }),
                Vec::new(),
            ),
        };
        let c = &self.client;
        match value {
            Value::Count(n) => send_tagged(c.count_with_tags(&key, n), &tags),
            Value::Gauge(n) => send_tagged(c.gauge_with_tags(&key, n), &tags),
            Value::Ratio(r) => send_tagged(c.gauge_with_tags(&key, r), &tags),
            Value::Millis(ms) => send_tagged(c.time_with_tags(&key, ms), &tags),
        }
    }

    /// Sends what is buffered (a last, partly filled packet).
    pub(super) fn flush(&self) {
        if let Err(e) = self.client.flush() {
            tracing::debug!(target: "reitunnel::statsd", error = %e, "statsd flush failed");
        }
    }

    /// Where it sends, as configured.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// Packets sent and dropped so far.
    pub(super) fn health(&self) -> StatsdHealth {
        let stats = self.udp.stats();
        StatsdHealth {
            packets_sent: stats.packets_sent,
            packets_dropped: stats.packets_dropped,
            oversized: self.oversized.load(Ordering::Relaxed),
        }
    }
}

/// Sends `metric` with `tags` added.
fn send_tagged<'a, T: Metric + From<String>>(
    mut metric: MetricBuilder<'a, 'a, T>,
    tags: &'a [(&'a str, Cow<'a, str>)],
) {
    for (k, v) in tags {
        metric = metric.with_tag(k, v);
    }
    metric.send();
}

/// A DogStatsD tag key or value: the characters that delimit tags and
/// lines (`,` `|` `#` `@` and whitespace) become `_`.
fn clean(s: &str) -> Cow<'_, str> {
    let bad = |c: char| matches!(c, ',' | '|' | '#' | '@') || c.is_whitespace();
    if s.contains(bad) {
        Cow::Owned(s.replace(bad, "_"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A StatsD name segment: anything but letters, digits, `-` and `_`
/// becomes `_` (a `.` would split the name, a `:` end it).
fn segment(s: &str) -> Cow<'_, str> {
    let bad = |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if s.contains(bad) {
        Cow::Owned(s.replace(bad, "_"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_lose_their_delimiters() {
        assert_eq!(segment("alice.eu:1"), "alice_eu_1");
        assert_eq!(segment("t-1_a"), "t-1_a");
        assert_eq!(clean("a,b|c#d e"), "a_b_c_d_e");
        assert_eq!(clean("host:port"), "host:port");
    }
}
