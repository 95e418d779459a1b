//! The policy hook on its own: per-client tokens, ports, tunnel and stream
//! limits (released on close and on a later hook's refusal), visitor networks.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{addr, client_at, open_client_with_token, stream_from};
use reitunnel_hooks::builtin::{ClientRules, Policy, Secret, VisitorRules};
use reitunnel_hooks::{CloseReason, HookChain, RefuseCode, TunnelId, TunnelInfo, TunnelKind};

fn rules(
    token: &str,
    ports: Option<&str>,
    max_tunnels: Option<u32>,
    max_streams: Option<u32>,
) -> ClientRules {
    ClientRules {
        token: Some(Secret::new(token)),
        ports: ports.map(|p| p.parse().unwrap()),
        max_tunnels,
        max_streams,
    }
}

fn policy(visitors: VisitorRules) -> Policy {
    let mut clients = HashMap::new();
    clients.insert(
        "alice".to_owned(),
        rules("a-token", Some("9000-9001"), Some(2), Some(1)),
    );
    clients.insert("bob".to_owned(), rules("b-token", None, None, None));
    Policy::new(clients, visitors)
}

fn tunnel_at(client: &Arc<reitunnel_hooks::ClientInfo>, id: u64, port: u16) -> Arc<TunnelInfo> {
    Arc::new(TunnelInfo::new(
        TunnelId(id),
        client.clone(),
        TunnelKind::Reverse,
        addr(port),
        "127.0.0.1:3000",
    ))
}

#[test]
fn logins_need_the_clients_own_token() {
    let chain = HookChain::builder()
        .hook(policy(VisitorRules::default()))
        .build();
    let alice = client_at(1, "alice", addr(1));
    let r = open_client_with_token(&chain, alice.clone(), "b-token").unwrap_err();
    assert_eq!(
        (r.reason.code, r.reason.message.as_ref()),
        (
            RefuseCode::AuthFailed,
            "client 'alice' is unknown, or its token or certificate is not the one configured"
        )
    );
    // An unknown name hears the same words: names cannot be enumerated.
    let r =
        open_client_with_token(&chain, client_at(2, "mallory", addr(1)), "a-token").unwrap_err();
    assert_eq!(
        r.reason.message,
        "client 'mallory' is unknown, or its token or certificate is not the one configured"
    );
    assert_eq!(r.by, "policy");
    let _alice = open_client_with_token(&chain, alice, "a-token").expect("her own token");
}

#[test]
fn ports_and_tunnel_limits_are_per_client_and_released_on_close() {
    let chain = HookChain::builder()
        .hook(policy(VisitorRules::default()))
        .build();
    let alice = client_at(1, "alice", addr(1));
    let _a = open_client_with_token(&chain, alice.clone(), "a-token").unwrap();
    let r = chain.open_tunnel(tunnel_at(&alice, 1, 8080)).unwrap_err();
    assert_eq!(
        r.reason.message,
        "client 'alice' may not open port 8080 (allowed: 9000-9001)"
    );
    let t1 = chain.open_tunnel(tunnel_at(&alice, 2, 9000)).unwrap();
    let _t2 = chain.open_tunnel(tunnel_at(&alice, 3, 9001)).unwrap();
    let r = chain.open_tunnel(tunnel_at(&alice, 4, 9000)).unwrap_err();
    assert_eq!(
        (r.reason.code, r.reason.message.as_ref()),
        (
            RefuseCode::LimitReached,
            "client 'alice' already has its maximum of 2 tunnels"
        )
    );
    t1.close(CloseReason::Finished);
    let _t3 = chain
        .open_tunnel(tunnel_at(&alice, 5, 9000))
        .expect("a slot after a close");
    // A refused port did not use up a slot (the limit is checked first, then given back).
    let bob = client_at(2, "bob", addr(1));
    let _b = open_client_with_token(&chain, bob.clone(), "b-token").unwrap();
    let held: Vec<_> = (10..20)
        .map(|id| {
            chain
                .open_tunnel(tunnel_at(&bob, id, 8000 + id as u16))
                .expect("bob has no limits")
        })
        .collect();
    assert_eq!(held.len(), 10);
}

/// Refuses the first stream it is asked about, lets the rest through.
struct RefuseFirstStream(std::sync::atomic::AtomicBool);
impl reitunnel_hooks::Hook for RefuseFirstStream {
    fn name(&self) -> &str {
        "refuse_first"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_stream_open(&self, _: &reitunnel_hooks::StreamInfo) -> reitunnel_hooks::Gate {
        if self.0.swap(false, std::sync::atomic::Ordering::Relaxed) {
            reitunnel_hooks::Gate::Refuse(reitunnel_hooks::Reason::forbidden("first"))
        } else {
            reitunnel_hooks::Gate::Allow
        }
    }
}

#[test]
fn stream_slots_come_back_on_close_and_on_a_later_refusal() {
    // Policy first (its gate takes alice's only stream slot), then a hook refusing once.
    let chain = HookChain::builder()
        .hook(policy(VisitorRules::default()))
        .hook(RefuseFirstStream(true.into()))
        .build();
    let alice = client_at(1, "alice", addr(1));
    let _a = open_client_with_token(&chain, alice.clone(), "a-token").unwrap();
    let t = chain.open_tunnel(tunnel_at(&alice, 1, 9000)).unwrap();
    let r = chain
        .open_stream(stream_from(t.info(), 1, addr(2)))
        .unwrap_err();
    assert_eq!(r.by, "refuse_first");
    // The slot taken by the policy's gate was given back (passed_gate).
    let s = chain
        .open_stream(stream_from(t.info(), 2, addr(2)))
        .expect("slot free");
    let r = chain
        .open_stream(stream_from(t.info(), 3, addr(2)))
        .unwrap_err();
    assert_eq!(
        r.reason.message,
        "client 'alice' already carries its maximum of 1 streams"
    );
    s.close(CloseReason::Finished);
    let _s2 = chain
        .open_stream(stream_from(t.info(), 4, addr(2)))
        .expect("a slot after a close");
}

#[test]
fn visitor_networks_allow_then_deny() {
    let visitors = VisitorRules {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        deny: vec!["10.9.0.0/16".parse().unwrap()],
    };
    let chain = HookChain::builder().hook(policy(visitors)).build();
    let bob = client_at(1, "bob", addr(1));
    let _b = open_client_with_token(&chain, bob.clone(), "b-token").unwrap();
    let t = chain.open_tunnel(tunnel_at(&bob, 1, 7000)).unwrap();
    let from = |ip: &str| std::net::SocketAddr::new(ip.parse().unwrap(), 5555);
    let _s = chain
        .open_stream(stream_from(t.info(), 1, from("10.1.2.3")))
        .expect("allowed");
    let r = chain
        .open_stream(stream_from(t.info(), 2, from("192.168.1.1")))
        .unwrap_err();
    assert_eq!(
        r.reason.message,
        "visitor 192.168.1.1 is not in the allowed networks"
    );
    let r = chain
        .open_stream(stream_from(t.info(), 3, from("10.9.8.7")))
        .unwrap_err();
    assert_eq!(
        r.reason.message,
        "visitor 10.9.8.7 is in the denied network 10.9.0.0/16"
    );
}
