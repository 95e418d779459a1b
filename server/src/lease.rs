//! Port leases. When a client vanishes (connection lost, heartbeat
//! timeout) each of its public listeners is parked here for the lease
//! period instead of being closed, so the reconnecting client gets the same
//! ports back, and visitors that arrive meanwhile wait in the listen backlog
//! instead of finding the port closed or taken. Another client asking for
//! a leased port is told whose lease holds it.
//!
//! The tunnel stays open while its port is leased, and so does its client:
//! their close events fire when the lease ends, by expiry, by the client
//! claiming the port back (the old tunnel closes, the new session opens a
//! new one on the same listener), or at shutdown. The client's close comes
//! after its last leased tunnel's ([`ClientHold`]), so closes stay leaf first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::{ClientInfo, CloseReason, Open, Reason, RefuseCode, TunnelId, TunnelInfo};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::fleet::Claim;
use crate::LoginSettings;

/// A client's open handle, shared by its session and by every tunnel of it
/// that may still be leased: the close event fires when the last one lets
/// go, with the reason the session ended with ([`CloseReason::Aborted`] if
/// it never said).
pub(crate) struct ClientHold {
    open: Option<Open<ClientInfo>>,
    reason: Mutex<Option<CloseReason>>,
    /// The settings the client logged in with, let go after its close
    /// event (fields drop after `Drop::drop`): hooks a reload took out
    /// meanwhile stop only once nothing of the client is left.
    _settings: Arc<LoginSettings>,
}

impl ClientHold {
    pub(crate) fn new(open: Open<ClientInfo>, settings: Arc<LoginSettings>) -> Arc<ClientHold> {
        Arc::new(ClientHold {
            open: Some(open),
            reason: Mutex::default(),
            _settings: settings,
        })
    }

    /// Why the session ended: the reason of the close event, whenever it fires.
    pub(crate) fn ended(&self, reason: CloseReason) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            let reason = self
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            open.close(reason.unwrap_or(CloseReason::Aborted));
        }
    }
}

/// A vanished client's tunnel on lease. Dropping it frees the port (unless
/// the listener was claimed), then fires the tunnel's close event, then
/// lets go of the client.
pub(crate) struct Parked {
    listener: Option<TcpListener>,
    tunnel: Option<Open<TunnelInfo>>,
    reason: CloseReason,
    /// The port's fleet-wide entry, let go with the port.
    _claim: Option<Claim>,
    /// Dropped after the tunnel's close (fields drop after `Drop::drop`).
    _client: Arc<ClientHold>,
}

impl Parked {
    /// `tunnel`, whose streams are all closed, ended for `reason`; `listener` is its port.
    pub(crate) fn new(
        listener: TcpListener,
        tunnel: Open<TunnelInfo>,
        reason: CloseReason,
        client: Arc<ClientHold>,
        claim: Option<Claim>,
    ) -> Parked {
        Parked {
            listener: Some(listener),
            tunnel: Some(tunnel),
            reason,
            _claim: claim,
            _client: client,
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        drop(self.listener.take());
        if let Some(tunnel) = self.tunnel.take() {
            tunnel.close(self.reason.clone());
        }
    }
}

struct Lease {
    client: Arc<str>,
    parked: Parked,
    expires: Instant,
    generation: u64,
}

/// The parked tunnels, by bound address.
pub(crate) struct Leases {
    period: Duration,
    held: Mutex<(u64, HashMap<SocketAddr, Lease>)>,
}

impl Leases {
    pub(crate) fn new(period: Duration) -> Arc<Leases> {
        Arc::new(Leases {
            period,
            held: Mutex::default(),
        })
    }

    /// Leases `parked`'s port to its client; the lease ends (and the tunnel
    /// closes) when it runs out unless the client claims the port first.
    /// A zero period ends it now.
    pub(crate) fn park(self: &Arc<Self>, parked: Parked) {
        let Some(addr) = parked.listener.as_ref().and_then(|l| l.local_addr().ok()) else {
            return;
        };
        let Some(client) = parked.tunnel.as_ref().map(|t| t.info().client.name.clone()) else {
            return;
        };
        if self.period.is_zero() {
            return;
        }
        let generation = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.0 += 1;
            let generation = held.0;
            let lease = Lease {
                client: client.clone(),
                parked,
                expires: Instant::now() + self.period,
                generation,
            };
            held.1.insert(addr, lease);
            generation
        };
        tracing::info!(%client, %addr, period = ?self.period, "port leased until the client reconnects");
        let leases = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(leases.period).await;
            let expired = {
                let mut held = leases.held.lock().unwrap_or_else(PoisonError::into_inner);
                let current = held
                    .1
                    .get(&addr)
                    .is_some_and(|l| l.generation == generation);
                current.then(|| held.1.remove(&addr)).flatten()
            };
            if let Some(lease) = expired {
                tracing::info!(%client, %addr, "lease expired; port freed");
                // Outside the lock: the close events run the hooks.
                drop(lease);
            }
        });
    }

    /// The parked listener on `addr` if `client` holds its lease (the old
    /// tunnel closes now); an error naming the holder if another client
    /// does; `None` if none is leased.
    pub(crate) fn claim(
        &self,
        client: &str,
        addr: SocketAddr,
    ) -> Result<Option<TcpListener>, Reason> {
        let lease = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            match held.1.get(&addr) {
                None => return Ok(None),
                Some(lease) if *lease.client == *client => held.1.remove(&addr),
                Some(lease) => {
                    let left = lease.expires.saturating_duration_since(Instant::now());
                    return Err(Reason::new(
                        RefuseCode::Unavailable,
                        format!(
                            "port {} is leased to client '{}' for another {}s (it may reconnect)",
                            addr.port(),
                            lease.client,
                            left.as_secs() + u64::from(left.subsec_nanos() > 0)
                        ),
                    ));
                }
            }
        };
        // The old tunnel's close events fire here, outside the lock.
        Ok(lease.and_then(|mut l| l.parked.listener.take()))
    }

    /// Every lease: the client it is for and the reserved address.
    pub(crate) fn held(&self) -> Vec<(Arc<str>, SocketAddr)> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.1
            .iter()
            .map(|(addr, lease)| (lease.client.clone(), *addr))
            .collect()
    }

    /// Ends `client`'s leases now (a kick): ports freed, tunnels closed. Returns how many.
    pub(crate) fn release(&self, client: &str) -> usize {
        let ended: Vec<Lease> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let addrs: Vec<SocketAddr> = held
                .1
                .iter()
                .filter(|(_, l)| *l.client == *client)
                .map(|(a, _)| *a)
                .collect();
            addrs.iter().filter_map(|a| held.1.remove(a)).collect()
        };
        // The close events fire here, outside the lock.
        ended.len()
    }

    /// Ends the lease of tunnel `id`, if it is parked; true if it was.
    pub(crate) fn release_tunnel(&self, id: TunnelId) -> bool {
        let ended = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let addr = held
                .1
                .iter()
                .find(|(_, l)| l.parked.tunnel.as_ref().is_some_and(|t| t.info().id == id))
                .map(|(a, _)| *a);
            addr.and_then(|a| held.1.remove(&a))
        };
        // The close events fire here, outside the lock.
        ended.is_some()
    }

    /// Ends every lease (at shutdown): ports freed, tunnels and clients closed.
    pub(crate) fn end_all(&self) {
        let all = std::mem::take(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner).1);
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reitunnel_hooks::testing::{Recorded, Recorder};
    use reitunnel_hooks::{ClientId, HookChain, Login, TunnelId, TunnelKind};

    /// The closes a recorder heard, in order, taken a batch at a time.
    struct Order {
        rec: Arc<Recorder>,
        seen: Mutex<usize>,
    }

    impl Order {
        /// The closes since the last call: `close tunnel t1 REASON`, `close client c1 REASON`.
        fn take(&self) -> Vec<String> {
            let all = self.rec.events();
            let mut seen = self.seen.lock().unwrap();
            let new = all[*seen..]
                .iter()
                .filter_map(|e| match e {
                    Recorded::TunnelClose(id, reason, _) => {
                        Some(format!("close tunnel {id} {reason}"))
                    }
                    Recorded::Disconnect(id, reason, _) => {
                        Some(format!("close client {id} {reason}"))
                    }
                    _ => None,
                })
                .collect();
            *seen = all.len();
            new
        }
    }

    /// A vanished client `name` with `n` tunnels, each on a fresh listener,
    /// ready to park; the session's hold already let go.
    async fn vanished(
        chain: &HookChain,
        id: u64,
        name: &str,
        n: usize,
    ) -> Vec<(Parked, SocketAddr)> {
        let info = Arc::new(ClientInfo::new(
            ClientId(id),
            name,
            "127.0.0.1:1".parse().unwrap(),
        ));
        let nonce = [0u8; 32];
        let client = chain
            .open_client(
                info.clone(),
                &Login {
                    nonce: &nonce,
                    proof: &[0u8; 32],
                },
            )
            .unwrap();
        let hold = ClientHold::new(client, crate::LoginSettings::with_chain(chain.clone()));
        hold.ended(CloseReason::ConnectionLost);
        let mut parked = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tunnel = Arc::new(TunnelInfo::new(
                TunnelId(id * 10 + i as u64),
                info.clone(),
                TunnelKind::Reverse,
                addr,
                "127.0.0.1:9",
            ));
            let open = chain.open_tunnel(tunnel).unwrap();
            parked.push((
                Parked::new(
                    listener,
                    open,
                    CloseReason::ConnectionLost,
                    hold.clone(),
                    None,
                ),
                addr,
            ));
        }
        parked
    }

    /// Client `id` ("alice") vanished with two tunnels, both leased for 30 s;
    /// the recorder holds nothing yet.
    async fn two_leased(id: u64) -> (Arc<Order>, HookChain, Arc<Leases>, [SocketAddr; 2]) {
        let rec = Recorder::new();
        let chain = HookChain::builder().shared(rec.clone()).build();
        let order = Arc::new(Order {
            rec,
            seen: Mutex::new(0),
        });
        let leases = Leases::new(Duration::from_secs(30));
        let mut addrs = Vec::new();
        for (parked, addr) in vanished(&chain, id, "alice", 2).await {
            leases.park(parked);
            addrs.push(addr);
        }
        order.take();
        (order, chain, leases, [addrs[0], addrs[1]])
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_the_port_and_the_tunnel_until_it_expires() {
        let (order, _, leases, [addr, second_addr]) = two_leased(1).await;

        let e = leases.claim("bob", addr).unwrap_err();
        assert!(
            e.message
                .contains("leased to client 'alice' for another 30s"),
            "{e}"
        );
        assert!(std::net::TcpListener::bind(addr).is_err(), "still bound");
        assert_eq!(order.take(), Vec::<String>::new(), "nothing closed yet");

        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(leases.claim("bob", addr).unwrap().is_none(), "expired");
        std::net::TcpListener::bind(addr).expect("freed at expiry");
        std::net::TcpListener::bind(second_addr).expect("freed at expiry");
        // The client closes after its last tunnel, whichever expired first.
        let closes = order.take();
        assert_eq!(closes.len(), 3, "{closes:?}");
        assert!(
            closes[..2].iter().all(|c| c.starts_with("close tunnel t1")),
            "{closes:?}"
        );
        assert_eq!(closes[2], "close client c1 connection_lost");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_closes_the_old_tunnel_then_the_client_after_its_last() {
        let (order, chain, leases, [addr, second_addr]) = two_leased(2).await;

        tokio::time::sleep(Duration::from_secs(10)).await;
        let back = leases.claim("alice", addr).unwrap().expect("alice's port");
        assert_eq!(back.local_addr().unwrap(), addr);
        assert_eq!(order.take(), ["close tunnel t20 connection_lost"]);
        leases
            .claim("alice", second_addr)
            .unwrap()
            .expect("the other port");
        assert_eq!(
            order.take(),
            [
                "close tunnel t21 connection_lost",
                "close client c2 connection_lost"
            ]
        );

        // The old expiry timer must not touch a port claimed back and leased again.
        let mut again = vanished(&chain, 3, "alice", 1).await;
        let (mut parked, _) = again.pop().unwrap();
        drop(parked.listener.replace(back));
        leases.park(parked);
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(
            leases.claim("bob", addr).is_err(),
            "the second lease runs its own 30 s"
        );
        leases.end_all();
        std::net::TcpListener::bind(addr).expect("freed at shutdown");
        let closes = order.take();
        assert_eq!(
            closes[closes.len() - 2..],
            [
                "close tunnel t30 connection_lost",
                "close client c3 connection_lost"
            ]
        );
    }
}
