//! The built-in `BandwidthMeter`: reports are per-client and per-tunnel
//! deltas, a closing stream publishes its remainder, and all reports
//! together add up to exactly the bytes offered.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{addr, client_at, stream_of, tunnel_of, EventLog};
use reitunnel_hooks::builtin::{BandwidthMeter, MeterReport, MeterSink, Usage};
use reitunnel_hooks::{
    ClientInfo, CloseReason, DataEvent, Direction, Hook, HookChain, Open, StreamInfo, TunnelId,
    TunnelInfo, Verdict,
};
use serde_json::json;

/// A sink that keeps every report, with its lines sorted (the meter's order is a map's).
#[derive(Default)]
struct Reports(Mutex<Vec<MeterReport>>);

impl MeterSink for Reports {
    fn report(&self, r: &MeterReport) {
        let mut r = r.clone();
        r.clients.sort_by_key(|u| u.client_id);
        r.tunnels.sort_by_key(|u| u.tunnel);
        self.0.lock().unwrap().push(r);
    }
}

impl Reports {
    fn take(&self) -> Vec<MeterReport> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// (in, out) per client name and per tunnel id.
type Sums = (BTreeMap<String, (u64, u64)>, BTreeMap<u64, (u64, u64)>);

fn add_to<K: Ord>(map: &mut BTreeMap<K, (u64, u64)>, key: K, (i, o): (u64, u64)) {
    let e = map.entry(key).or_default();
    e.0 += i;
    e.1 += o;
}

/// Sums every line of `reports`.
fn sum_reports(reports: &[MeterReport]) -> Sums {
    let mut sums = Sums::default();
    for r in reports {
        for u in &r.clients {
            assert_eq!(u.tunnel, None, "client lines name no tunnel");
            add_to(&mut sums.0, u.client.to_string(), (u.bytes_in, u.bytes_out));
        }
        for u in &r.tunnels {
            let t = u.tunnel.expect("tunnel lines name their tunnel");
            add_to(&mut sums.1, t.0, (u.bytes_in, u.bytes_out));
        }
    }
    sums
}

/// A meter reporting into `Reports`, alone in a chain, with what was
/// offered through it, and tunnels 1 and 2 of alice (client 1) and 3 of bob (client 2).
struct Rig {
    meter: Arc<BandwidthMeter>,
    reports: Arc<Reports>,
    chain: HookChain,
    offered: Sums,
    tunnels: [Arc<TunnelInfo>; 3],
}

impl Rig {
    fn new() -> Self {
        let reports = Arc::new(Reports::default());
        let meter = BandwidthMeter::new(vec![reports.clone()]);
        let chain = HookChain::builder().shared(meter.clone()).build();
        Rig {
            meter,
            reports,
            chain,
            offered: Sums::default(),
            tunnels: two_clients(),
        }
    }

    /// Opens stream `id` through tunnel `tunnel` (1 to 3).
    fn open(&self, tunnel: usize, id: u64) -> Open<StreamInfo> {
        self.chain
            .open_stream(stream_of(&self.tunnels[tunnel - 1], id))
            .expect("stream")
    }

    /// Offers `n` bytes on `open` moving `dir`, and books them as offered.
    fn offer(&mut self, open: &Open<StreamInfo>, dir: Direction, n: usize) {
        assert_eq!(open.on_data(dir, &vec![1u8; n]), Verdict::Continue);
        let io = match dir {
            Direction::Ingress => (n as u64, 0),
            Direction::Egress => (0, n as u64),
        };
        let tunnel = &open.info().tunnel;
        add_to(&mut self.offered.0, tunnel.client.name.to_string(), io);
        add_to(&mut self.offered.1, tunnel.id.0, io);
    }
}

/// alice (client 1) with tunnels 1 and 2, bob (client 2) with tunnel 3.
fn two_clients() -> [Arc<TunnelInfo>; 3] {
    let alice = client_at(1, "alice", addr(50_001));
    let bob = client_at(2, "bob", addr(50_002));
    [
        tunnel_of(&alice, 1),
        tunnel_of(&alice, 2),
        tunnel_of(&bob, 3),
    ]
}

/// A usage line of `client` (in `tunnel`, if any).
fn usage(client: &ClientInfo, tunnel: Option<u64>, bytes_in: u64, bytes_out: u64) -> Usage {
    Usage {
        client: client.name.clone(),
        client_id: client.id,
        tunnel: tunnel.map(TunnelId),
        bytes_in,
        bytes_out,
    }
}

#[test]
fn reports_are_deltas_and_all_of_them_sum_to_the_bytes_offered() {
    let mut rig = Rig::new();
    let alice = rig.tunnels[0].client.clone();
    let bob = rig.tunnels[2].client.clone();
    let a1 = rig.open(1, 1);
    let a2 = rig.open(1, 2);
    let a3 = rig.open(2, 3);
    let b1 = rig.open(3, 4);

    rig.offer(&a1, Direction::Ingress, 100);
    rig.offer(&b1, Direction::Egress, 7);
    rig.offer(&a2, Direction::Egress, 30);
    rig.offer(&a3, Direction::Ingress, 5);
    rig.meter.report_now();
    let mut all = rig.reports.take();
    assert_eq!(
        all,
        [MeterReport {
            clients: vec![usage(&alice, None, 105, 30), usage(&bob, None, 0, 7)],
            tunnels: vec![
                usage(&alice, Some(1), 100, 30),
                usage(&alice, Some(2), 5, 0),
                usage(&bob, Some(3), 0, 7),
            ],
        }]
    );

    // Only what moved since: bob and tunnel 2 are quiet now.
    rig.offer(&a1, Direction::Egress, 11);
    rig.offer(&a2, Direction::Ingress, 22);
    rig.offer(&a1, Direction::Ingress, 1);
    rig.meter.report_now();
    let second = rig.reports.take();
    assert_eq!(
        second,
        [MeterReport {
            clients: vec![usage(&alice, None, 23, 11)],
            tunnels: vec![usage(&alice, Some(1), 23, 11)],
        }]
    );
    all.extend(second);

    // More traffic, closes and reports interleaved.
    rig.offer(&b1, Direction::Ingress, 1000);
    rig.offer(&a3, Direction::Egress, 64);
    a3.close(CloseReason::Finished);
    rig.offer(&a1, Direction::Ingress, 9);
    rig.meter.report_now();
    rig.offer(&b1, Direction::Egress, 3);
    rig.offer(&a2, Direction::Egress, 4);
    for open in [a1, a2, b1] {
        open.close(CloseReason::Finished);
    }
    rig.meter.report_now();
    assert_eq!(rig.meter.unreported(), (0, 0));

    let rest = rig.reports.take();
    // a3's close, a report, the closes of a2 and b1; a1's close and the
    // last report had nothing new.
    assert_eq!(rest.len(), 4);
    all.extend(rest);
    assert_eq!(sum_reports(&all), rig.offered);
    assert_eq!(rig.offered.0["alice"], (137, 109));
    assert_eq!(rig.offered.0["bob"], (1000, 10));
}

#[test]
fn a_closing_stream_publishes_its_remainder_only() {
    let mut rig = Rig::new();
    let a1 = rig.open(1, 1);
    let a2 = rig.open(1, 2);
    let b1 = rig.open(3, 3);
    rig.offer(&a1, Direction::Ingress, 40);
    rig.meter.report_now();
    rig.reports.take();

    rig.offer(&a1, Direction::Ingress, 2);
    rig.offer(&a1, Direction::Egress, 3);
    rig.offer(&a2, Direction::Ingress, 50);
    rig.offer(&b1, Direction::Egress, 60);
    a1.close(CloseReason::Finished);
    let alice = rig.tunnels[0].client.clone();
    assert_eq!(
        rig.reports.take(),
        [MeterReport {
            clients: vec![usage(&alice, None, 2, 3)],
            tunnels: vec![usage(&alice, Some(1), 2, 3)],
        }],
        "the remainder since the last report, of the closing stream alone"
    );
    assert_eq!(rig.meter.unreported(), (50, 60));
    drop((a2, b1));
}

#[test]
fn nothing_new_publishes_nothing() {
    let mut rig = Rig::new();
    rig.meter.report_now();
    let idle = rig.open(1, 1);
    let busy = rig.open(1, 2);
    rig.meter.report_now();
    rig.offer(&busy, Direction::Egress, 0);
    rig.meter.report_now();
    assert!(rig.reports.take().is_empty(), "no bytes, no report");

    rig.offer(&busy, Direction::Egress, 8);
    rig.meter.report_now();
    assert_eq!(rig.reports.take().len(), 1);
    rig.meter.report_now();
    busy.close(CloseReason::Finished);
    idle.close(CloseReason::Finished);
    assert!(
        rig.reports.take().is_empty(),
        "everything was reported already"
    );
}

#[test]
fn unreported_counts_live_bytes_since_the_last_report() {
    let mut rig = Rig::new();
    let a1 = rig.open(1, 1);
    let b1 = rig.open(3, 2);
    assert_eq!(rig.meter.unreported(), (0, 0));
    rig.offer(&a1, Direction::Ingress, 10);
    rig.offer(&b1, Direction::Ingress, 5);
    rig.offer(&b1, Direction::Egress, 7);
    assert_eq!(rig.meter.unreported(), (15, 7));
    rig.meter.report_now();
    assert_eq!(rig.meter.unreported(), (0, 0));
    rig.offer(&a1, Direction::Egress, 1);
    assert_eq!(rig.meter.unreported(), (0, 1));
    a1.close(CloseReason::Finished); // published, and no longer live
    assert_eq!(rig.meter.unreported(), (0, 0));
    rig.offer(&b1, Direction::Ingress, 2);
    assert_eq!(rig.meter.unreported(), (2, 0));
    drop(b1);
}

#[test]
fn meter_counts_the_bytes_a_sampler_skipped() {
    let rig = Rig::new();
    let s = stream_of(&rig.tunnels[0], 1);
    let states = rig.chain.stream_states(&s);
    let ev = DataEvent {
        skipped: 90,
        ..DataEvent::new(&s, Direction::Ingress, &[0; 10])
    };
    assert_eq!(rig.chain.on_data(&ev, &states), Verdict::Continue);
    assert_eq!(rig.meter.unreported(), (100, 0));
}

#[test]
fn meter_is_named_and_sees_data() {
    let meter = BandwidthMeter::new(Vec::new());
    assert_eq!(meter.name(), "meter");
    assert!(meter.wants_data());
}

#[test]
fn event_bus_sink_emits_one_bandwidth_report_per_line() {
    let (events, bus) = EventLog::bus();
    let meter = BandwidthMeter::new(vec![Arc::new(bus)]);
    let chain = HookChain::builder().shared(meter.clone()).build();
    let s = chain
        .open_stream(stream_of(&two_clients()[0], 1))
        .expect("stream");
    assert_eq!(s.on_data(Direction::Ingress, &[0; 12]), Verdict::Continue);
    assert_eq!(s.on_data(Direction::Egress, &[0; 34]), Verdict::Continue);
    meter.report_now();

    let reports = events.named("bandwidth.report");
    assert_eq!(reports.len(), 2, "one client line, one tunnel line");
    assert_eq!(events.all().len(), 2);
    let client_line = &reports[0].fields;
    assert_eq!(client_line["client"], json!("alice"));
    assert_eq!(client_line["client_id"], json!(1));
    assert_eq!(client_line["bytes_in"], json!(12));
    assert_eq!(client_line["bytes_out"], json!(34));
    assert!(!client_line.contains_key("tunnel_id"));
    let tunnel_line = &reports[1].fields;
    assert_eq!(tunnel_line["tunnel_id"], json!(1));
    assert_eq!(tunnel_line["client"], json!("alice"));
    assert_eq!(tunnel_line["bytes_in"], json!(12));
    assert_eq!(tunnel_line["bytes_out"], json!(34));
    assert!(reports[0]
        .to_json()
        .starts_with(r#"{"event":"bandwidth.report","timestamp":""#));

    s.close(CloseReason::Finished);
    assert_eq!(events.all().len(), 2, "nothing left to report at close");
}

#[test]
fn concurrent_reports_never_underflow_and_stay_exact() {
    // Several reporters (say the interval task and an operator's report_now)
    // race a stream that keeps moving bytes.
    let mut rig = Rig::new();
    let s = rig.open(1, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let reporters: Vec<_> = (0..4)
        .map(|_| {
            let (meter, stop) = (rig.meter.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    meter.report_now();
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        rig.offer(&s, Direction::Ingress, 1);
    }
    stop.store(true, Ordering::Relaxed);
    let panicked = reporters.into_iter().filter_map(|r| r.join().err()).count();
    s.close(CloseReason::Finished);
    assert_eq!(panicked, 0, "a reporter panicked");
    assert_eq!(sum_reports(&rig.reports.take()), rig.offered);
}
