//! Port leases. When a client vanishes (connection lost, heartbeat
//! timeout) its public listeners are parked here for the lease period
//! instead of being closed, so the reconnecting client gets the same ports
//! back, and visitors that arrive meanwhile wait in the listen backlog
//! instead of finding the port closed or taken. Another client asking for
//! a leased port is told whose lease holds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reitunnel_hooks::{Reason, RefuseCode};
use tokio::net::TcpListener;
use tokio::time::Instant;

struct Lease {
    client: Arc<str>,
    listener: TcpListener,
    expires: Instant,
    generation: u64,
}

/// The parked listeners, by bound address.
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

    /// Parks `listener` for `client`; it is closed when the lease runs out
    /// unless the client claims it first. A zero period closes it now.
    pub(crate) fn park(self: &Arc<Self>, client: Arc<str>, listener: TcpListener) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        if self.period.is_zero() {
            return;
        }
        let generation = {
            let mut held = self.held.lock().expect("leases");
            held.0 += 1;
            let generation = held.0;
            let lease = Lease {
                client: client.clone(),
                listener,
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
            let mut held = leases.held.lock().expect("leases");
            if held
                .1
                .get(&addr)
                .is_some_and(|l| l.generation == generation)
            {
                held.1.remove(&addr);
                tracing::info!(%client, %addr, "lease expired; port freed");
            }
        });
    }

    /// The parked listener on `addr` if `client` holds its lease; an error
    /// naming the holder if another client does; `None` if none is leased.
    pub(crate) fn claim(
        &self,
        client: &str,
        addr: SocketAddr,
    ) -> Result<Option<TcpListener>, Reason> {
        let mut held = self.held.lock().expect("leases");
        match held.1.get(&addr) {
            None => Ok(None),
            Some(lease) if *lease.client == *client => Ok(held.1.remove(&addr).map(|l| l.listener)),
            Some(lease) => {
                let left = lease.expires.saturating_duration_since(Instant::now());
                Err(Reason::new(
                    RefuseCode::Unavailable,
                    format!(
                        "port {} is leased to client '{}' for another {}s (it may reconnect)",
                        addr.port(),
                        lease.client,
                        left.as_secs() + u64::from(left.subsec_nanos() > 0)
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_the_port_for_its_client_until_it_expires() {
        let leases = Leases::new(Duration::from_secs(30));
        let (l, addr) = listener().await;
        leases.park("alice".into(), l);
        let e = leases.claim("bob", addr).unwrap_err();
        assert!(
            e.message
                .contains("leased to client 'alice' for another 30s"),
            "{e}"
        );
        assert!(std::net::TcpListener::bind(addr).is_err(), "still bound");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(leases.claim("bob", addr).unwrap().is_none(), "expired");
        std::net::TcpListener::bind(addr).expect("freed at expiry");

        let (l, addr) = listener().await;
        leases.park("alice".into(), l);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let back = leases.claim("alice", addr).unwrap().expect("alice's port");
        assert_eq!(back.local_addr().unwrap(), addr);
        // The old expiry timer must not touch a port claimed back and parked again.
        leases.park("alice".into(), back);
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(
            leases.claim("bob", addr).is_err(),
            "the second lease runs its own 30 s"
        );
    }
}
