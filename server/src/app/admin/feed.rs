//! The live feed behind `GET /api/v1/events`: every operator event the
//! hooks emit (the feed is an event sink in the chain) and, each second
//! while anyone subscribes, the rate of every client and tunnel, as
//! server-sent events. Subscribers share a backlog bounded in bytes (see
//! `backlog.rs`); one that falls behind loses the oldest events and is
//! told how many (`feed.lagged`).
//!
//! With no subscriber nothing is measured each second: a `rates` reading
//! lists every client and tunnel, which on a busy server is real work.
//! The API then takes a reading when asked, giving the rates since the
//! reading before.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use reitunnel_hooks::events::{Event, EventSink};
use serde_json::json;
use tokio::time::Instant;

use super::backlog::{Backlog, Next};
use super::Body;
use crate::{Admin, ClientStatus, TunnelStatus};

/// Bytes of messages a subscriber may fall behind by before it loses some:
/// a few seconds of `rates` on a server with thousands of tunnels.
const BACKLOG_BYTES: usize = 4 << 20;

/// How often rates are measured and sent while anyone subscribes.
pub(super) const RATE_EVERY: Duration = Duration::from_secs(1);

/// The shortest interval a reading measures: the API's readings between
/// the stream's (or a burst of API calls) answer with the last rates.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// A comment line keeps idle streams open through proxies.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Bytes each way (or bytes/s), by client or tunnel id.
type ById = HashMap<u64, (u64, u64)>;

/// Bytes/s each way, by client or tunnel id, over the last interval.
#[derive(Debug, Default, Clone)]
pub(super) struct Rates {
    clients: ById,
    tunnels: ById,
}

impl Rates {
    pub(super) fn client(&self, id: u64) -> (u64, u64) {
        self.clients.get(&id).copied().unwrap_or_default()
    }
    pub(super) fn tunnel(&self, id: u64) -> (u64, u64) {
        self.tunnels.get(&id).copied().unwrap_or_default()
    }
}

/// Where readings come from: the server's sessions and tunnels (a
/// stand-in in tests, to count how often the server would be listed).
pub(in crate::app) trait Census: Send + Sync + 'static {
    fn clients(&self) -> Vec<ClientStatus>;
    fn tunnels(&self) -> Vec<TunnelStatus>;
}

impl Census for Admin {
    fn clients(&self) -> Vec<ClientStatus> {
        Admin::clients(self)
    }
    fn tunnels(&self) -> Vec<TunnelStatus> {
        Admin::tunnels(self)
    }
}

/// The last reading, the base of the next one, and the rates between the
/// two before it.
#[derive(Default)]
struct Meter {
    /// When the last reading was taken, and its bytes by client and by tunnel.
    base: Option<(Instant, ById, ById)>,
    rates: Rates,
}

impl Meter {
    /// Takes a reading of `clients` and `tunnels`: their rates since the
    /// last one (none for what is new since), or the last rates if that
    /// one is [`recent`](Meter::recent).
    fn read(&mut self, clients: &[ClientStatus], tunnels: &[TunnelStatus]) -> Rates {
        let now = Instant::now();
        if self.recent() {
            return self.rates.clone();
        }
        let (then, c_before, t_before) = self
            .base
            .take()
            .unwrap_or_else(|| (now, ById::new(), ById::new()));
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let c_bytes: ById = clients
            .iter()
            .map(|c| (c.id.0, (c.bytes_in, c.bytes_out)))
            .collect();
        let t_bytes: ById = tunnels
            .iter()
            .map(|t| (t.id.0, (t.bytes_in, t.bytes_out)))
            .collect();
        self.rates = Rates {
            clients: per_sec(&c_bytes, &c_before, secs),
            tunnels: per_sec(&t_bytes, &t_before, secs),
        };
        // Never a lower reading as the base: a closing stream's bytes
        // can be briefly in neither count, and must not come back as a spike.
        self.base = Some((
            now,
            at_least(c_bytes, &c_before),
            at_least(t_bytes, &t_before),
        ));
        self.rates.clone()
    }

    /// Whether the last reading is under [`MIN_INTERVAL`] old: a new one
    /// would measure noise, and the last rates stand.
    fn recent(&self) -> bool {
        self.base
            .as_ref()
            .is_some_and(|(at, ..)| at.elapsed() < MIN_INTERVAL)
    }
}

/// The feed: ready-made SSE messages for every subscriber, and the meter.
pub(in crate::app) struct Feed {
    backlog: Backlog,
    meter: Mutex<Meter>,
}

impl Feed {
    pub(in crate::app) fn new() -> Arc<Feed> {
        Arc::new(Feed {
            backlog: Backlog::new(BACKLOG_BYTES),
            meter: Mutex::default(),
        })
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rates over the last interval: the stream's last reading while
    /// it is measured, else one taken now, over the time since the last.
    pub(super) fn rates(&self, census: &impl Census) -> Rates {
        let mut meter = self.meter();
        if meter.recent() {
            return meter.rates.clone();
        }
        meter.read(&census.clients(), &census.tunnels())
    }

    fn send(&self, json: &str) {
        // No subscriber is not an error: the event simply goes nowhere.
        self.backlog.send(Bytes::from(format!("data: {json}\n\n")));
    }

    /// Each [`RATE_EVERY`] while anyone subscribes, measures the rates and
    /// sends them, until aborted. Without a subscriber a tick costs a look
    /// at the subscriber count, no listing of the server.
    pub(in crate::app) fn measure(
        self: Arc<Self>,
        census: impl Census,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RATE_EVERY);
            // After a stall, one reading over the whole gap, not a burst over none.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.backlog.subscribers() == 0 {
                    continue;
                }
                let tunnels = census.tunnels();
                let clients = census.clients();
                let rates = self.meter().read(&clients, &tunnels);
                let tunnels: Vec<_> = tunnels
                    .iter()
                    .map(|t| super::api::tunnel(t, rates.tunnel(t.id.0)))
                    .collect();
                let clients: Vec<_> = clients
                    .iter()
                    .map(|c| {
                        let (rate_in, rate_out) = rates.client(c.id.0);
                        json!({ "id": c.id.0, "name": &*c.name, "rate_in": rate_in,
                            "rate_out": rate_out, "bytes_in": c.bytes_in,
                            "bytes_out": c.bytes_out, "streams": c.streams,
                            "rtt_ms": c.rtt.map(|r| r.as_secs_f64() * 1e3) })
                    })
                    .collect();
                let msg = json!({ "event": "rates", "clients": clients, "tunnels": tunnels });
                self.send(&msg.to_string());
            }
        })
    }

    /// A subscriber's event stream, as an HTTP response.
    pub(super) fn subscribe(self: &Arc<Self>) -> Response<Body> {
        let sub = self.backlog.subscribe();
        let keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let hello = Some(Bytes::from_static(b": reitunnel event stream\n\n"));
        let stream = futures::stream::unfold(
            (self.clone(), sub, keepalive, hello),
            |(feed, mut sub, mut keepalive, hello)| async move {
                if let Some(hello) = hello {
                    return Some((Ok(Frame::data(hello)), (feed, sub, keepalive, None)));
                }
                let msg = tokio::select! {
                    _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                    next = feed.backlog.next(&mut sub) => match next {
                        Next::Message(msg) => msg,
                        Next::Lost(missed) => {
                            let json = json!({ "event": "feed.lagged", "missed": missed });
                            Bytes::from(format!("data: {json}\n\n"))
                        }
                    },
                };
                Some((
                    Ok::<_, Infallible>(Frame::data(msg)),
                    (feed, sub, keepalive, None),
                ))
            },
        );
        let mut res = Response::new(StreamBody::new(stream).boxed());
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    }
}

/// Bytes/s between two readings; a counter that went back (a stream's
/// bytes moving from its own meter to its tunnel's) counts as no change.
fn per_sec(now: &ById, before: &ById, secs: f64) -> ById {
    now.iter()
        .map(|(id, &(i, o))| {
            let (bi, bo) = before.get(id).copied().unwrap_or((i, o));
            let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs) as u64;
            (*id, (rate(i, bi), rate(o, bo)))
        })
        .collect()
}

/// `now`, each count raised to what `before` had for that id.
fn at_least(mut now: ById, before: &ById) -> ById {
    for (id, (i, o)) in now.iter_mut() {
        if let Some(&(bi, bo)) = before.get(id) {
            *i = (*i).max(bi);
            *o = (*o).max(bo);
        }
    }
    now
}

/// The hooks' operator events, to every subscriber.
impl EventSink for Feed {
    fn emit(&self, event: &Event) {
        self.send(&event.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's next message, as text.
    async fn next(body: &mut Body) -> String {
        let frame = body.frame().await.expect("a message").unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    }

    /// The `data:` line of a test event padded to `pad` bytes.
    fn event(n: usize, pad: usize) -> String {
        json!({ "event": "test", "n": n, "pad": ".".repeat(pad) }).to_string()
    }

    #[tokio::test]
    async fn the_backlog_is_bounded_by_bytes_and_a_laggard_told_what_it_lost() {
        let feed = Feed::new();
        let mut body = feed.subscribe().into_body();
        assert_eq!(next(&mut body).await, ": reitunnel event stream\n\n");
        // Thousands of small events fit: a bound in messages (1,024) lost most.
        for n in 0..4096 {
            feed.send(&event(n, 0));
        }
        for n in 0..4096 {
            assert_eq!(next(&mut body).await, format!("data: {}\n\n", event(n, 0)));
        }
        // Events of a third of the bound each: only the last two are kept.
        let pad = BACKLOG_BYTES / 3;
        for n in 0..5 {
            feed.send(&event(n, pad));
        }
        assert_eq!(
            next(&mut body).await,
            "data: {\"event\":\"feed.lagged\",\"missed\":3}\n\n"
        );
        // Then the oldest it still has, in order.
        for n in 3..5 {
            assert_eq!(
                next(&mut body).await,
                format!("data: {}\n\n", event(n, pad))
            );
        }
    }

    /// A server stand-in with no one on it, counting how often it is listed.
    #[derive(Clone, Default)]
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Counted {
        fn listings(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn count(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Census for Counted {
        fn clients(&self) -> Vec<ClientStatus> {
            self.count();
            Vec::new()
        }
        fn tunnels(&self) -> Vec<TunnelStatus> {
            self.count();
            Vec::new()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rates_are_measured_only_while_someone_subscribes() {
        let feed = Feed::new();
        let census = Counted::default();
        let _measuring =
            tokio_util::task::AbortOnDropHandle::new(feed.clone().measure(census.clone()));
        // The paused clock runs ahead through ten ticks: no real time passes.
        tokio::time::sleep(RATE_EVERY * 10).await;
        assert_eq!(census.listings(), 0, "measured with nobody subscribed");

        let mut body = feed.subscribe().into_body();
        assert_eq!(next(&mut body).await, ": reitunnel event stream\n\n");
        let rates = next(&mut body).await;
        let rates: serde_json::Value =
            serde_json::from_str(rates.strip_prefix("data: ").expect("an event")).unwrap();
        assert_eq!(rates["event"], "rates");
        assert!(census.listings() > 0);

        drop(body);
        let listed = census.listings();
        tokio::time::sleep(RATE_EVERY * 10).await;
        assert_eq!(
            census.listings(),
            listed,
            "measured after the last subscriber left"
        );
        // The API still gets rates: one reading, taken when it asks.
        feed.rates(&census);
        assert_eq!(census.listings(), listed + 2);
    }

    #[test]
    fn rates_are_bytes_per_second_and_never_negative() {
        let before = ById::from([(1, (1000, 0)), (2, (500, 500))]);
        let now = ById::from([(1, (3000, 100)), (2, (400, 500)), (3, (9, 9))]);
        let rates = per_sec(&now, &before, 2.0);
        assert_eq!(rates[&1], (1000, 50));
        assert_eq!(rates[&2], (0, 0), "a count that went back is no change");
        assert_eq!(rates[&3], (0, 0), "new: no rate before a second reading");
        // The dip is not kept as the base, so it does not come back as a spike.
        let base = at_least(now, &before);
        assert_eq!(base[&2], (500, 500));
    }
}
