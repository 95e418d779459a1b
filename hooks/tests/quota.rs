//! The built-in `Quota`: bytes per client name per period, the crossing
//! chunk closes its stream, later streams are refused, and one
//! `quota.exceeded` event per client and period.

mod common;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{addr, client_at, stream_of, tunnel_of, EventLog};
use reitunnel_hooks::builtin::{Quota, Sampler, Sampling};
use reitunnel_hooks::{
    ClientInfo, CloseReason, Direction, Hook, HookChain, Open, Reason, Refusal, RefuseCode,
    StreamInfo, Verdict,
};
use serde_json::json;

const LIMIT: u64 = 1000;
/// Long enough that no period boundary falls inside a test (the next is in 2106).
const LONG: Duration = Duration::from_secs(1 << 32);

/// A quota of `LIMIT` bytes per `period`, alone in a chain, with the events it emits.
fn quota(period: Duration) -> (Arc<Quota>, HookChain, Arc<EventLog>) {
    let (events, bus) = EventLog::bus();
    let quota = Arc::new(Quota::new(LIMIT, period, bus));
    let chain = HookChain::builder().shared(quota.clone()).build();
    (quota, chain, events)
}

fn alice() -> Arc<ClientInfo> {
    client_at(1, "alice", addr(50_001))
}

fn bob() -> Arc<ClientInfo> {
    client_at(2, "bob", addr(50_002))
}

/// Opens stream `id` of a tunnel of `client` (tunnel id = client id).
fn try_open(
    chain: &HookChain,
    client: &Arc<ClientInfo>,
    id: u64,
) -> Result<Open<StreamInfo>, Refusal> {
    chain.open_stream(stream_of(&tunnel_of(client, client.id.0), id))
}

fn open(chain: &HookChain, client: &Arc<ClientInfo>, id: u64) -> Open<StreamInfo> {
    try_open(chain, client, id).expect("stream gate")
}

fn offer(open: &Open<StreamInfo>, dir: Direction, n: usize) -> Verdict {
    open.on_data(dir, &vec![0u8; n])
}

/// Asserts that offering `n` bytes moving `dir` closes the stream.
fn assert_closes(open: &Open<StreamInfo>, dir: Direction, n: usize) {
    let verdict = offer(open, dir, n);
    assert!(matches!(verdict, Verdict::Close(_)), "{verdict:?}");
}

/// The refusal or close reason for `name` past the quota.
fn exceeded(name: &str, period: Duration) -> Reason {
    Reason::limit_reached(format!(
        "client '{name}' used its quota of {LIMIT} bytes per {}s",
        period.as_secs()
    ))
}

#[test]
fn chunks_pass_until_the_one_crossing_the_limit_which_closes() {
    let (quota, chain, _) = quota(LONG);
    assert_eq!(quota.name(), "quota");
    let c = alice();
    let s = open(&chain, &c, 1);
    for (n, used) in [(300, 300), (300, 600), (0, 600), (300, 900)] {
        assert_eq!(offer(&s, Direction::Ingress, n), Verdict::Continue);
        assert_eq!(quota.used("alice"), used);
    }
    let verdict = offer(&s, Direction::Egress, 200);
    assert_eq!(verdict, Verdict::Close(exceeded("alice", LONG)));
    let Verdict::Close(reason) = verdict else {
        unreachable!()
    };
    assert_eq!(reason.code, RefuseCode::LimitReached);
    assert!(reason.message.contains("alice") && reason.message.contains("quota"));
    let used = quota.used("alice");
    assert!((900..=LIMIT).contains(&used), "used {used}");

    // Still closed for any further byte; usage never passes the limit.
    assert_closes(&s, Direction::Ingress, 1);
    assert_closes(&s, Direction::Ingress, 5000);
    assert!(quota.used("alice") <= LIMIT);
    assert_eq!(quota.used("bob"), 0);
}

#[test]
fn a_chunk_reaching_the_limit_exactly_passes() {
    let (quota, chain, events) = quota(LONG);
    let s = open(&chain, &alice(), 1);
    assert_eq!(offer(&s, Direction::Ingress, 600), Verdict::Continue);
    assert_eq!(offer(&s, Direction::Egress, 400), Verdict::Continue);
    assert_eq!(quota.used("alice"), LIMIT);
    assert!(events.all().is_empty());
    assert_eq!(
        offer(&s, Direction::Egress, 1),
        Verdict::Close(exceeded("alice", LONG))
    );
    assert_eq!(quota.used("alice"), LIMIT);
}

#[test]
fn past_the_quota_new_streams_are_refused_and_other_clients_go_on() {
    let (quota, chain, _) = quota(LONG);
    let (a, b) = (alice(), bob());
    let s = open(&chain, &a, 1);
    assert_closes(&s, Direction::Ingress, 1001);
    s.close(CloseReason::Finished);

    let refusal = try_open(&chain, &a, 2).expect_err("alice is out of quota");
    assert_eq!(
        refusal,
        Refusal {
            reason: exceeded("alice", LONG),
            by: "quota".to_owned(),
        }
    );

    let sb = open(&chain, &b, 3);
    assert_eq!(offer(&sb, Direction::Ingress, 999), Verdict::Continue);
    assert_eq!(quota.used("bob"), 999);
}

#[test]
fn one_event_per_client_per_period_however_often_it_is_exceeded() {
    let (_, chain, events) = quota(LONG);
    let (a, b) = (alice(), bob());
    let early = open(&chain, &a, 1); // opened before the quota ran out
    let s = open(&chain, &a, 2);
    assert_closes(&s, Direction::Ingress, 1500);
    assert_closes(&early, Direction::Egress, 10);
    for id in 3..6 {
        assert!(try_open(&chain, &a, id).is_err());
    }
    assert_eq!(events.named("quota.exceeded").len(), 1);

    let sb = open(&chain, &b, 10);
    assert_closes(&sb, Direction::Ingress, 2000);
    assert!(try_open(&chain, &b, 11).is_err());

    let exceeded = events.named("quota.exceeded");
    assert_eq!(events.all().len(), 2);
    let fields: Vec<_> = exceeded.iter().map(|e| &e.fields).collect();
    for (f, name) in fields.iter().zip(["alice", "bob"]) {
        assert_eq!(f["client"], json!(name));
        assert_eq!(f["limit_bytes"], json!(LIMIT));
        assert_eq!(f["period_secs"], json!(LONG.as_secs()));
    }
}

#[test]
fn usage_is_shared_by_every_session_of_one_client_name() {
    let (quota, chain, _) = quota(LONG);
    let first = alice();
    let again = client_at(7, "alice", addr(50_007)); // reconnected: new id, same name
    let s1 = open(&chain, &first, 1);
    let s2 = open(&chain, &again, 2);
    assert_eq!(offer(&s1, Direction::Ingress, 600), Verdict::Continue);
    assert_eq!(offer(&s2, Direction::Egress, 300), Verdict::Continue);
    assert_eq!(quota.used("alice"), 900);
    assert_eq!(
        offer(&s2, Direction::Ingress, 101),
        Verdict::Close(exceeded("alice", LONG))
    );
    assert!(try_open(&chain, &client_at(8, "alice", addr(50_008)), 3).is_err());
    assert!(try_open(&chain, &client_at(9, "alicia", addr(50_009)), 4).is_ok());
}

#[test]
fn sampled_quota_counts_the_skipped_bytes() {
    let (_, bus) = EventLog::bus();
    let chain = HookChain::builder()
        .hook(Sampler::new(
            Quota::new(LIMIT, LONG, bus),
            Sampling::OneIn(NonZeroU64::new(2).expect("2")),
        ))
        .build();
    let s = open(&chain, &alice(), 1);
    assert_eq!(offer(&s, Direction::Ingress, 400), Verdict::Continue); // forwarded
    assert_eq!(offer(&s, Direction::Ingress, 400), Verdict::Continue); // skipped
                                                                       // Forwarded with the 400 skipped: 400 + 400 + 300 > 1000.
    assert_eq!(
        offer(&s, Direction::Ingress, 300),
        Verdict::Close(exceeded("alice", LONG))
    );
}

/// Seconds since the Unix epoch.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn a_new_period_resets_usage_and_reports_again() {
    // Inherently time-based: a 1 s period rolls at the next whole second.
    let second = Duration::from_secs(1);
    let (quota, chain, events, period) = loop {
        let (quota, chain, events) = quota(second);
        let period = unix_secs();
        let s = open(&chain, &alice(), 1);
        let closed = matches!(offer(&s, Direction::Ingress, 1001), Verdict::Close(_));
        let refused = try_open(&chain, &alice(), 2).is_err();
        // Retry in the rare case that a second boundary fell inside the setup.
        if unix_secs() == period {
            assert!(closed && refused);
            assert_eq!(quota.used("alice"), LIMIT);
            break (quota, chain, events, period);
        }
    };
    assert_eq!(events.named("quota.exceeded").len(), 1);

    let next = UNIX_EPOCH + Duration::from_secs(period + 1);
    if let Ok(wait) = next.duration_since(SystemTime::now()) {
        std::thread::sleep(wait + Duration::from_millis(20));
    }
    assert!(unix_secs() > period);

    assert_eq!(quota.used("alice"), 0);
    let s = open(&chain, &alice(), 3);
    assert_eq!(offer(&s, Direction::Ingress, 1000), Verdict::Continue);
    assert_closes(&s, Direction::Ingress, 1);
    assert_eq!(events.named("quota.exceeded").len(), 2, "one per period");
}
