//! Step 2 hooks through a real tunnel: a byte-rate limit holds its rate,
//! a quota closes the stream at the limit and refuses new ones, and the
//! meter's reports add up to exactly the bytes moved.

mod common;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use reitunnel_hooks::builtin::{
    BandwidthMeter, ByteRate, MeterReport, MeterSink, Quota, RateLimit, RateLimitConfig,
};
use reitunnel_hooks::events::{Event, EventBus, EventSink};
use reitunnel_hooks::HookChain;
use reitunnel_testkit::echo_service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_per_second_limit_holds_a_bulk_transfer() {
    let limit = RateLimit::new(RateLimitConfig {
        per_client: Some(ByteRate {
            bytes_per_sec: NonZeroU32::new(MIB as u32).unwrap(),
            burst: NonZeroU32::new(64 * 1024).unwrap(),
        }),
        ..RateLimitConfig::default()
    });
    let (server, rec) = TestServer::with_hook(limit).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "limited").await;
    let tunnel = reverse(&client, echo).await;

    // 3 MiB each way; each direction has its own 1 MiB/s bucket.
    let len = 3 * MIB;
    let started = Instant::now();
    assert_eq!(echo_check(tunnel.public_addr, len, 11).await, len);
    let secs = started.elapsed().as_secs_f64();
    // The burst (64 KiB) passes at once, the rest at the rate.
    let expected = (len - 64 * 1024) as f64 / MIB as f64;
    let rate = (len as f64 / MIB as f64) / secs;
    assert!(
        secs >= expected * 0.9 && secs <= expected * 1.1 + 0.5,
        "3 MiB took {secs:.2}s ({rate:.2} MiB/s); the limit allows {expected:.2}s"
    );
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Keeps every event emitted to it.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_closes_the_stream_at_the_limit_and_refuses_new_ones() {
    let events = Arc::new(Collect::default());
    let quota_bytes = MIB as u64;
    let quota = Quota::new(
        quota_bytes,
        std::time::Duration::from_secs(86_400),
        EventBus::new().with(events.clone()),
    );
    let (server, rec) = TestServer::with_hook(quota).await;
    let echo = echo_service().await;
    let client = connect(server.addr, "metered").await;
    let tunnel = reverse(&client, echo).await;

    // Push 4 MiB; the echo is cut off at the quota (both directions count).
    let v = TcpStream::connect(tunnel.public_addr).await.unwrap();
    let (mut r, mut w) = v.into_split();
    let writer = tokio::spawn(async move {
        let buf = vec![3u8; 64 * 1024];
        for _ in 0..64 {
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut echoed = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        echoed += n as u64;
    }
    writer.abort();
    let events_seen = rec
        .wait_for("the stream's close", |e| {
            e.iter().any(|e| matches!(e, Ev::StreamClose(..)))
        })
        .await;
    let (reason, totals) = events_seen
        .iter()
        .find_map(|e| match e {
            Ev::StreamClose(_, r, t) => Some((r.clone(), *t)),
            _ => None,
        })
        .unwrap();
    assert_eq!(reason, "hook");
    assert!(
        totals.bytes_in + totals.bytes_out <= quota_bytes,
        "{totals:?}"
    );
    assert!(echoed <= quota_bytes);

    // A new visitor is refused at once, with the quota as the reason.
    let mut again = TcpStream::connect(tunnel.public_addr).await.unwrap();
    assert_eq!(again.read(&mut [0u8; 8]).await.unwrap_or(0), 0);
    rec.wait_for("the refusal", |e| {
        e.iter().any(|e| {
            matches!(e, Ev::Rejected { by, reason } if by == "quota"
                && reason.contains("client 'metered' used its quota of 1048576 bytes"))
        })
    })
    .await;
    let exceeded: Vec<_> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.event == "quota.exceeded")
        .cloned()
        .collect();
    assert_eq!(
        exceeded.len(),
        1,
        "one quota.exceeded per client and period"
    );
    assert_eq!(exceeded[0].fields["client"], "metered");
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}

/// Adds up every report it gets, per client.
#[derive(Default)]
struct Sum(Mutex<(u64, u64, usize)>);

impl MeterSink for Sum {
    fn report(&self, r: &MeterReport) {
        let mut s = self.0.lock().unwrap();
        for u in &r.clients {
            s.0 += u.bytes_in;
            s.1 += u.bytes_out;
        }
        s.2 += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_reports_add_up_to_exactly_the_bytes_moved() {
    let sum = Arc::new(Sum::default());
    let meter = BandwidthMeter::new(vec![sum.clone()]);
    let rec = Recorder::new();
    let server = TestServer::start(
        HookChain::builder()
            .shared(meter.clone())
            .shared(rec.clone())
            .build(),
        |_| {},
    )
    .await;
    let echo = echo_service().await;
    let client = connect(server.addr, "metered").await;
    let tunnel = reverse(&client, echo).await;

    // Report on a short interval while eight visitors move odd amounts.
    let reporter = meter.spawn_reporter(std::time::Duration::from_millis(5));
    let mut visitors = tokio::task::JoinSet::new();
    let mut total = 0u64;
    for i in 0..8 {
        let len = 3 * MIB + i * 4099;
        total += len as u64;
        visitors.spawn(echo_check(tunnel.public_addr, len, i as u64 + 100));
    }
    while let Some(r) = visitors.join_next().await {
        r.unwrap();
    }
    rec.wait_for("all stream closes", |e| {
        e.iter()
            .filter(|e| matches!(e, Ev::StreamClose(..)))
            .count()
            == 8
    })
    .await;
    reporter.abort();
    let (bytes_in, bytes_out, reports) = *sum.0.lock().unwrap();
    assert_eq!(
        (bytes_in, bytes_out),
        (total, total),
        "sum of {reports} reports"
    );
    assert!(reports >= 8, "each close reports its remainder at least");
    assert_eq!(meter.unreported(), (0, 0));
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rates_refuse_the_excess_with_a_reason() {
    use reitunnel_hooks::builtin::EventRate;
    let one = EventRate {
        per_sec: NonZeroU32::new(1).unwrap(),
        burst: NonZeroU32::new(1).unwrap(),
    };
    let limit = RateLimit::new(RateLimitConfig {
        visitors_per_ip: Some(one),
        logins_per_ip: Some(one),
        ..RateLimitConfig::default()
    });
    let (server, rec) = TestServer::with_hook(limit).await;
    let echo = echo_service().await;
    // One login per second from 127.0.0.1: the second, right after, is refused.
    let client = connect(server.addr, "first").await;
    let err = reitunnel_client::Client::connect(
        client_config(server.addr, "second"),
        HookChain::default(),
    )
    .await
    .err()
    .expect("second login refused");
    assert_eq!(
        err.to_string(),
        "server refused login: too many logins from 127.0.0.1; try again later"
    );

    // One visitor per second from 127.0.0.1: served, then refused.
    let tunnel = reverse(&client, echo).await;
    assert_eq!(echo_check(tunnel.public_addr, 1000, 1).await, 1000);
    let mut v = TcpStream::connect(tunnel.public_addr).await.unwrap();
    assert_eq!(
        v.read(&mut [0u8; 8]).await.unwrap_or(0),
        0,
        "refused visitor is closed"
    );
    rec.wait_for("the visitor refusal", |e| {
        e.iter().any(|e| matches!(e, Ev::Rejected { by, reason } if by == "rate_limit" && reason == "too many connections from 127.0.0.1"))
    })
    .await;
    client.shutdown().await.unwrap();
    server.stop().await;
    assert_balanced(&rec.events());
}
