//! Who may log in and what each client may do: per-client tokens, port
//! ranges, tunnel and concurrent-stream limits, and CIDR allow/deny lists
//! for visitors. Fails closed: an unknown client, a wrong token, a port or
//! address outside the rules is a `Refuse` that says which rule.
//!
//! Limits count with atomics taken in the gate (so concurrent opens cannot
//! overshoot) and released on close, or on a later hook's refusal
//! ([`Rejection::passed_gate`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use super::Secret;
use crate::hook::{Hook, HookResult};
use crate::info::{
    ClientId, ClientInfo, Login, Rejection, Scope, StreamEnd, StreamInfo, Totals, TunnelInfo,
};
use crate::ports::PortRanges;
use crate::verdict::{CloseReason, Gate, Reason};

/// What one client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRules {
    /// The client's own token. `None`: the client must instead log in with
    /// a client certificate the server verified (mTLS) for this name. With
    /// both a token and mTLS on the server, both are required.
    pub token: Option<Secret>,
    /// Public ports it may open (`None`: whatever the server allows).
    pub ports: Option<PortRanges>,
    /// Tunnels it may hold at once.
    pub max_tunnels: Option<u32>,
    /// Visitor streams it may carry at once.
    pub max_streams: Option<u32>,
}

/// Visitor addresses: `allow` (if not empty) must match, `deny` must not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisitorRules {
    /// Networks visitors may come from; empty = anywhere.
    pub allow: Vec<IpNet>,
    /// Networks visitors may not come from (checked after `allow`).
    pub deny: Vec<IpNet>,
}

impl VisitorRules {
    fn check(&self, ip: IpAddr) -> Result<(), String> {
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(format!("visitor {ip} is not in the allowed networks"));
        }
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(format!("visitor {ip} is in the denied network {net}"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct InUse {
    tunnels: AtomicU32,
    streams: AtomicU32,
}

/// The policy hook. See the module docs.
///
/// # Example
///
/// One known client with its own token and a one-tunnel limit; visitors
/// only from `10.0.0.0/8`.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use reitunnel_hooks::builtin::{ClientRules, Policy, Secret, VisitorRules};
/// use reitunnel_hooks::{ClientId, ClientInfo, HookChain, Login, RefuseCode};
/// # use reitunnel_hooks::{StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// let alice = ClientRules {
///     token: Some(Secret::new("alice-token")),
///     ports: None,
///     max_tunnels: Some(1),
///     max_streams: None,
/// };
/// let visitors = VisitorRules { allow: vec!["10.0.0.0/8".parse()?], deny: vec![] };
/// let policy = Policy::new(HashMap::from([("alice".to_owned(), alice)]), visitors);
/// let chain = HookChain::builder().hook(policy).build();
///
/// let login_as = |id, name: &str, token: &[u8]| {
///     let nonce = [0u8; 32];
///     let proof = reitunnel_proto::auth::proof(token, &nonce, name);
///     let client = Arc::new(ClientInfo::new(ClientId(id), name, "127.0.0.1:50000".parse().unwrap()));
///     chain.open_client(client, &Login { nonce: &nonce, proof: &proof })
/// };
///
/// // Unknown clients are refused, whatever their token, in the same words
/// // as a wrong token (the server's log says which it was).
/// let refusal = login_as(1, "mallory", b"alice-token").unwrap_err();
/// assert_eq!(refusal.reason.code, RefuseCode::AuthFailed);
/// assert_eq!(
///     refusal.reason.message,
///     "client 'mallory' is unknown, or its token or certificate is not the one configured"
/// );
///
/// let client = login_as(2, "alice", b"alice-token").unwrap();
/// # let tunnel_info = |id| Arc::new(TunnelInfo::new(TunnelId(id), client.info().clone(),
/// #     TunnelKind::Reverse, "0.0.0.0:8080".parse().unwrap(), "127.0.0.1:3000"));
/// let tunnel = chain.open_tunnel(tunnel_info(1)).unwrap();
/// let second = chain.open_tunnel(tunnel_info(2)).unwrap_err();
/// assert_eq!(second.reason.code, RefuseCode::LimitReached);
///
/// # let stream_from = |peer: &str| Arc::new(StreamInfo::new(StreamId(1), tunnel.info().clone(), peer.parse().unwrap()));
/// let outsider = chain.open_stream(stream_from("192.0.2.7:40000")).unwrap_err();
/// assert_eq!(outsider.reason.code, RefuseCode::Forbidden);
/// let visitor = chain.open_stream(stream_from("10.1.2.3:40000")).unwrap();
/// # drop((visitor, tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Policy {
    clients: HashMap<String, ClientRules>,
    visitors: VisitorRules,
    in_use: Mutex<HashMap<ClientId, Arc<InUse>>>,
}

/// Refuses a login with the same words whatever went wrong, so a peer
/// cannot find out which client names exist; `why` goes to the server's
/// log only.
fn refuse_login(client: &ClientInfo, why: &'static str) -> Gate {
    tracing::info!(target: "reitunnel::policy", client = %client.name, peer = %client.peer, why, "login refused");
    Gate::Refuse(Reason::auth_failed(format!(
        "client '{}' is unknown, or its token or certificate is not the one configured",
        client.name
    )))
}

/// Takes one unit of `counter` if it stays within `max`.
fn take(counter: &AtomicU32, max: Option<u32>) -> bool {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if max.is_some_and(|m| n >= m) {
        counter.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

fn release(counter: &AtomicU32) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

impl Policy {
    /// Rules per client name, and for visitors.
    pub fn new(clients: HashMap<String, ClientRules>, visitors: VisitorRules) -> Self {
        Policy {
            clients,
            visitors,
            in_use: Mutex::default(),
        }
    }

    fn in_use(&self, id: ClientId) -> Option<Arc<InUse>> {
        self.in_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn rules(&self, client: &ClientInfo) -> Option<&ClientRules> {
        self.clients.get(&*client.name)
    }
}

impl Hook for Policy {
    fn name(&self) -> &str {
        "policy"
    }

    fn wants_data(&self) -> bool {
        false
    }

    fn on_client_connect(&self, client: &ClientInfo, login: &Login<'_>) -> Gate {
        let Some(rules) = self.rules(client) else {
            return refuse_login(client, "unknown client");
        };
        match &rules.token {
            Some(token) if !login.proves(&client.name, token.expose().as_bytes()) => {
                return refuse_login(client, "wrong token");
            }
            None if !client.certified => {
                return refuse_login(client, "no client certificate (required for this client)");
            }
            _ => {}
        }
        self.in_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client.id, Arc::default());
        Gate::Allow
    }

    fn on_tunnel_open(&self, tunnel: &TunnelInfo) -> Gate {
        let client = &tunnel.client;
        let Some(rules) = self.rules(client) else {
            return Gate::Refuse(Reason::forbidden(format!(
                "unknown client '{}'",
                client.name
            )));
        };
        let in_use = self.in_use(client.id);
        if let Some(u) = &in_use {
            if !take(&u.tunnels, rules.max_tunnels) {
                return Gate::Refuse(Reason::limit_reached(format!(
                    "client '{}' already has its maximum of {} tunnels",
                    client.name,
                    rules.max_tunnels.unwrap_or_default()
                )));
            }
        }
        let port = tunnel.bind.port();
        if let Some(ports) = rules.ports.as_ref().filter(|p| !p.contains(port)) {
            in_use.iter().for_each(|u| release(&u.tunnels));
            return Gate::Refuse(Reason::forbidden(format!(
                "client '{}' may not open port {port} (allowed: {ports})",
                client.name
            )));
        }
        Gate::Allow
    }

    fn on_stream_open(&self, stream: &StreamInfo) -> Gate {
        if let Err(why) = self.visitors.check(stream.peer.ip()) {
            return Gate::Refuse(Reason::forbidden(why));
        }
        let client = &stream.tunnel.client;
        let max = self.rules(client).and_then(|r| r.max_streams);
        if let Some(in_use) = self.in_use(client.id) {
            if !take(&in_use.streams, max) {
                return Gate::Refuse(Reason::limit_reached(format!(
                    "client '{}' already carries its maximum of {} streams",
                    client.name,
                    max.unwrap_or_default()
                )));
            }
        }
        Gate::Allow
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        if !r.passed_gate {
            return;
        }
        match r.scope {
            Scope::Client(c) => drop(
                self.in_use
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&c.id),
            ),
            Scope::Tunnel(t) => self
                .in_use(t.client.id)
                .iter()
                .for_each(|u| release(&u.tunnels)),
            Scope::Stream(s) => self
                .in_use(s.tunnel.client.id)
                .iter()
                .for_each(|u| release(&u.streams)),
            Scope::Server => {}
        }
    }

    fn on_tunnel_close(&self, t: &TunnelInfo, _: &CloseReason, _: &Totals) -> HookResult {
        if let Some(u) = self.in_use(t.client.id) {
            release(&u.tunnels);
        }
        Ok(())
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        if let Some(u) = self.in_use(end.stream.tunnel.client.id) {
            release(&u.streams);
        }
        Ok(())
    }

    fn on_client_disconnect(&self, c: &ClientInfo, _: &CloseReason, _: &Totals) -> HookResult {
        self.in_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&c.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::Secret;
    use crate::info::{TunnelId, TunnelKind};

    /// A panic while the policy's lock is held (here: forced on another
    /// thread) must not turn every later login away.
    #[test]
    fn a_panic_under_the_lock_does_not_refuse_later_logins() {
        let rules = ClientRules {
            token: Some(Secret::new("t")),
            ports: None,
            max_tunnels: Some(1),
            max_streams: None,
        };
        let policy = Arc::new(Policy::new(
            HashMap::from([("alice".to_owned(), rules)]),
            VisitorRules::default(),
        ));
        let poisoner = policy.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.in_use.lock().unwrap();
            panic!("a hook panicked while holding the policy's lock");
        })
        .join();
        assert!(policy.in_use.is_poisoned());

        let alice = ClientInfo::new(ClientId(1), "alice", "127.0.0.1:1".parse().unwrap());
        let nonce = [0u8; 32];
        let proof = reitunnel_proto::auth::proof(b"t", &nonce, "alice");
        let login = Login {
            nonce: &nonce,
            proof: &proof,
        };
        assert_eq!(policy.on_client_connect(&alice, &login), Gate::Allow);
        // Its per-client state works too: the tunnel limit still counts.
        let alice = Arc::new(alice);
        let tunnel = |id| {
            TunnelInfo::new(
                TunnelId(id),
                alice.clone(),
                TunnelKind::Reverse,
                "127.0.0.1:9000".parse().unwrap(),
                "127.0.0.1:3000",
            )
        };
        assert_eq!(policy.on_tunnel_open(&tunnel(1)), Gate::Allow);
        assert!(matches!(policy.on_tunnel_open(&tunnel(2)), Gate::Refuse(_)));
    }
}
