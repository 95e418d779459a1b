//! The built-in hooks: `Counters`, `TokenAuth` / `Secret`, `TracingHook`.

mod common;

use std::sync::Arc;

use common::{
    client, counters_behind, counters_then, data, open_client, open_client_with_token, stream,
    stream_of, tunnel_of, Act, Creds, Log, Rec,
};
use reitunnel_hooks::builtin::{Counters, CountersSnapshot, Secret, TokenAuth, TracingHook};
use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, Direction, Hook, HookChain, Login, Reason, RefuseCode,
    Scope, Verdict,
};

/// A chain of shared `Counters` alone; returns the counters to read.
fn counted() -> (Arc<Counters>, HookChain) {
    let counters = Arc::new(Counters::new());
    let chain = HookChain::builder().shared(counters.clone()).build();
    (counters, chain)
}

/// A `Rec` named "deny" whose gates all reject.
fn deny() -> Arc<Rec> {
    Arc::new(Rec::new("deny", &Log::new()).gate(Act::Reject("no")))
}

/// The snapshot of counters that saw nothing but `n` rejections.
fn only_rejections(n: u64) -> CountersSnapshot {
    CountersSnapshot {
        rejections: n,
        ..Default::default()
    }
}

#[test]
fn counters_start_at_zero() {
    assert_eq!(Counters::new().snapshot(), CountersSnapshot::default());
    assert_eq!(Counters::new().name(), "counters");
}

#[test]
fn counters_track_active_and_total_through_open_and_close() {
    let (counters, chain) = counted();
    let c = client();

    let client_open = open_client(&chain, c.clone()).expect("client");
    let tunnel_open = chain.open_tunnel(tunnel_of(&c, 1)).expect("tunnel");
    let s1 = chain
        .open_stream(stream_of(tunnel_open.info(), 1))
        .expect("s1");
    let s2 = chain
        .open_stream(stream_of(tunnel_open.info(), 2))
        .expect("s2");
    assert_eq!(
        counters.snapshot(),
        CountersSnapshot {
            clients_active: 1,
            clients_total: 1,
            tunnels_active: 1,
            tunnels_total: 1,
            streams_active: 2,
            streams_total: 2,
            ..Default::default()
        }
    );

    s1.close(CloseReason::Finished);
    drop(s2); // Aborted counts as closed too
    let snap = counters.snapshot();
    assert_eq!((snap.streams_active, snap.streams_total), (0, 2));
    assert_eq!((snap.tunnels_active, snap.clients_active), (1, 1));

    let s3 = chain
        .open_stream(stream_of(tunnel_open.info(), 3))
        .expect("s3");
    assert_eq!(counters.snapshot().streams_active, 1);
    s3.close(CloseReason::Finished);
    tunnel_open.close(CloseReason::Finished);
    client_open.close(CloseReason::ConnectionLost);
    assert_eq!(
        counters.snapshot(),
        CountersSnapshot {
            clients_active: 0,
            clients_total: 1,
            tunnels_active: 0,
            tunnels_total: 1,
            streams_active: 0,
            streams_total: 3,
            ..Default::default()
        }
    );
}

#[test]
fn counters_undo_their_count_when_a_later_gate_rejects() {
    let (counters, chain) = counters_then(deny());

    let c = client();
    open_client(&chain, c.clone()).expect_err("deny");
    chain.open_tunnel(tunnel_of(&c, 1)).expect_err("deny");
    chain.open_stream(stream()).expect_err("deny");
    chain.open_stream(stream()).expect_err("deny");

    // Counters' gate ran and counted each one; on_rejected with
    // passed_gate undid it, since no close event will ever follow.
    assert_eq!(counters.snapshot(), only_rejections(4));
}

#[test]
fn counters_do_not_undo_what_they_never_counted() {
    let (counters, chain) = counters_behind(deny());
    chain.open_stream(stream()).expect_err("deny");
    let t = common::tunnel();
    let _ = chain.refuse(Scope::Tunnel(&t), Reason::limit_reached("server policy"));
    let _ = chain.refuse(Scope::Server, Reason::forbidden("handshake"));
    // A wrong decrement would wrap the u64 counters around.
    assert_eq!(counters.snapshot(), only_rejections(3));
}

#[test]
fn counters_count_bytes_from_on_data() {
    let (counters, chain) = counted();
    let s = stream();
    for (dir, len) in [
        (Direction::Ingress, 100),
        (Direction::Egress, 7),
        (Direction::Ingress, 1),
        (Direction::Egress, 0),
        (Direction::Egress, 65_536),
    ] {
        let chunk = vec![0xAB; len];
        assert_eq!(
            chain.on_data(&data(&s, dir, &chunk), &[]),
            Verdict::Continue
        );
    }
    let snap = counters.snapshot();
    assert_eq!((snap.bytes_in, snap.bytes_out), (101, 65_543));
    assert!(chain.wants_data());
}

#[test]
fn counters_see_bytes_behind_a_throttle() {
    let throttle = Act::Throttle(std::time::Duration::from_millis(10));
    let (counters, chain) =
        counters_behind(Arc::new(Rec::new("limit", &Log::new()).data(throttle)));
    let s = stream();
    let v = chain.on_data(&data(&s, Direction::Ingress, b"abc"), &[]);
    assert_eq!(v, Verdict::Throttle(std::time::Duration::from_millis(10)));
    assert_eq!(counters.snapshot().bytes_in, 3);
}

#[test]
fn counters_count_errors() {
    let (counters, chain) = counted();
    let err = std::io::Error::other("boom");
    chain.error(Scope::Server, &err);
    let s = stream();
    chain.error(Scope::Stream(&s), &err);
    assert_eq!(counters.snapshot().errors, 2);
}

// ---------------------------------------------------------------------------
// TokenAuth and Secret

fn auth_chain(token: &str) -> HookChain {
    HookChain::builder()
        .hook(TokenAuth::new(Secret::new(token)))
        .build()
}

#[test]
fn token_auth_accepts_the_right_token() {
    let chain = auth_chain("s3cret");
    open_client_with_token(&chain, client(), "s3cret")
        .expect("right token")
        .close(CloseReason::Finished);
}

#[test]
fn token_auth_rejects_a_wrong_token() {
    let chain = auth_chain("s3cret");
    let refusal = open_client_with_token(&chain, client(), "guess").expect_err("wrong token");
    assert_eq!(refusal.by, "token_auth");
    assert_eq!(refusal.reason.code, RefuseCode::AuthFailed);
    assert!(!refusal.reason.message.contains("s3cret"));
}

#[test]
fn token_auth_binds_the_proof_to_name_and_nonce() {
    let chain = auth_chain("s3cret");

    // A proof made for another client name does not work for this one.
    let creds = Creds::new("s3cret", "mallory");
    let refusal = chain
        .open_client(client(), &creds.login())
        .expect_err("proof for another name");
    assert_eq!(refusal.reason.code, RefuseCode::AuthFailed);

    // A proof replayed against a fresh nonce does not work either.
    let c = client();
    let creds = Creds::new("s3cret", &c.name);
    let fresh = reitunnel_proto::auth::new_nonce();
    assert_ne!(fresh, creds.nonce);
    let replay = Login {
        nonce: &fresh,
        proof: &creds.proof,
    };
    let refusal = chain.open_client(c, &replay).expect_err("replayed proof");
    assert_eq!(refusal.reason.code, RefuseCode::AuthFailed);
}

#[test]
fn token_auth_checks_the_client_name_it_is_given() {
    let chain = auth_chain("s3cret");
    let bob = Arc::new(ClientInfo::new(ClientId(2), "bob", common::addr(1)));
    open_client_with_token(&chain, bob, "s3cret")
        .expect("bob's proof for bob")
        .close(CloseReason::Finished);
}

#[test]
fn token_auth_wants_no_data() {
    assert!(!TokenAuth::new(Secret::new("x")).wants_data());
    assert!(!auth_chain("x").wants_data());
}

#[test]
fn secret_never_prints_its_value() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "Secret(MASKED)");
    assert_eq!(format!("{secret}"), "MASKED");
    assert_eq!(secret.expose(), "hunter2");
    let auth = TokenAuth::new(secret.clone());
    let debug = format!("{auth:?}");
    assert!(debug.contains("MASKED"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert_eq!(secret, Secret::new("hunter2"));
}

// ---------------------------------------------------------------------------
// TracingHook

#[test]
fn tracing_hook_samples_data_only_when_asked() {
    assert!(!TracingHook::new(0).wants_data());
    assert!(TracingHook::new(1).wants_data());
    assert!(TracingHook::default().wants_data());
    assert_eq!(TracingHook::default().name(), "log");

    // A chain with sample_every = 0 never calls its on_data (which would
    // divide by zero).
    let chain = HookChain::builder().hook(TracingHook::new(0)).build();
    assert!(!chain.wants_data());
    let s = stream();
    assert_eq!(
        chain.on_data(&data(&s, Direction::Ingress, b"x"), &[]),
        Verdict::Continue
    );

    let chain = HookChain::builder().hook(TracingHook::new(3)).build();
    for _ in 0..10 {
        assert_eq!(
            chain.on_data(&data(&s, Direction::Egress, b"x"), &[]),
            Verdict::Continue
        );
    }
}

#[test]
fn tracing_hook_never_refuses() {
    let chain = HookChain::builder().hook(TracingHook::default()).build();
    let c = client();
    let co = open_client(&chain, c.clone()).expect("client");
    let to = chain.open_tunnel(tunnel_of(&c, 1)).expect("tunnel");
    let so = chain.open_stream(stream_of(to.info(), 1)).expect("stream");
    so.close(CloseReason::Finished);
    to.close(CloseReason::Finished);
    co.close(CloseReason::Finished);
    chain.server_start(&common::server_info()).expect("start");
    chain.server_stop(&common::server_info()).expect("stop");
}
