//! The live feed behind `GET /api/v1/events`: every operator event the
//! hooks emit (the feed is an event sink in the chain) and, each second,
//! the rate of every client and tunnel, as server-sent events. Each
//! subscriber has a bounded backlog; one that falls behind loses the
//! oldest events and is told how many (`feed.lagged`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use reitunnel_hooks::events::{Event, EventSink};
use serde_json::json;
use tokio::sync::broadcast;

use super::Body;
use crate::Admin;

/// Events a subscriber may fall behind by before it loses some.
const BACKLOG: usize = 1024;

/// How often rates are measured and sent.
pub(super) const RATE_EVERY: Duration = Duration::from_secs(1);

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

/// The feed: a broadcast of ready-made SSE messages, and the last rates.
pub(in crate::app) struct Feed {
    tx: broadcast::Sender<Bytes>,
    rates: Mutex<Rates>,
}

impl Feed {
    pub(in crate::app) fn new() -> Arc<Feed> {
        Arc::new(Feed {
            tx: broadcast::channel(BACKLOG).0,
            rates: Mutex::default(),
        })
    }

    pub(super) fn rates(&self) -> Rates {
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn send(&self, json: &str) {
        // No subscriber is not an error: the event simply goes nowhere.
        let _ = self.tx.send(Bytes::from(format!("data: {json}\n\n")));
    }

    /// Measures rates every [`RATE_EVERY`] and sends them, until aborted.
    pub(in crate::app) fn measure(self: Arc<Self>, admin: Admin) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RATE_EVERY);
            // After a stall, one reading over the whole gap, not a burst over none.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // When the last reading was taken, and its bytes by client and by tunnel.
            let mut last: (Instant, ById, ById) = (Instant::now(), ById::new(), ById::new());
            loop {
                tick.tick().await;
                let now = Instant::now();
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let tunnels = admin.tunnels();
                let clients = admin.clients();
                let t_bytes: ById = tunnels
                    .iter()
                    .map(|t| (t.id.0, (t.bytes_in, t.bytes_out)))
                    .collect();
                let c_bytes: ById = clients
                    .iter()
                    .map(|c| (c.id.0, (c.bytes_in, c.bytes_out)))
                    .collect();
                let rates = Rates {
                    clients: per_sec(&c_bytes, &last.1, secs),
                    tunnels: per_sec(&t_bytes, &last.2, secs),
                };
                // Never a lower reading as the base: a closing stream's bytes
                // can be briefly in neither count, and must not come back as a spike.
                last = (now, at_least(c_bytes, &last.1), at_least(t_bytes, &last.2));
                *self.rates.lock().unwrap_or_else(PoisonError::into_inner) = rates.clone();
                if self.tx.receiver_count() > 0 {
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
            }
        })
    }

    /// A subscriber's event stream, as an HTTP response.
    pub(super) fn subscribe(&self) -> Response<Body> {
        let rx = self.tx.subscribe();
        let keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let hello = Some(Bytes::from_static(b": reitunnel event stream\n\n"));
        let stream = futures::stream::unfold(
            (rx, keepalive, hello),
            |(mut rx, mut keepalive, hello)| async move {
                if let Some(hello) = hello {
                    return Some((Ok(Frame::data(hello)), (rx, keepalive, None)));
                }
                let msg = tokio::select! {
                    _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                    got = rx.recv() => match got {
                        Ok(msg) => msg,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let json = json!({ "event": "feed.lagged", "missed": missed });
                            Bytes::from(format!("data: {json}\n\n"))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                };
                Some((Ok::<_, Infallible>(Frame::data(msg)), (rx, keepalive, None)))
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

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_much_it_lost() {
        let feed = Feed::new();
        let mut body = feed.subscribe().into_body();
        assert_eq!(next(&mut body).await, ": reitunnel event stream\n\n");
        for n in 0..BACKLOG + 10 {
            feed.send(&json!({ "event": "test", "n": n }).to_string());
        }
        assert_eq!(
            next(&mut body).await,
            "data: {\"event\":\"feed.lagged\",\"missed\":10}\n\n"
        );
        // Then the oldest it still has, in order.
        assert_eq!(
            next(&mut body).await,
            "data: {\"event\":\"test\",\"n\":10}\n\n"
        );
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
