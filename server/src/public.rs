//! A reverse tunnel's public socket, bound within the server's allowed
//! ports (a free one when the client asks for port 0), or a TCP port its
//! client held on a lease taken back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reitunnel_hooks::ports::PortRanges;
use reitunnel_hooks::{Reason, RefuseCode, Transport, TunnelInfo};
use reitunnel_transport::Bound;

use crate::fleet::{Claim, Fleet, NotTaken};
use crate::ServerState;

/// Free local ports a fleet node tries for a tunnel that asked for port 0
/// before it gives up: each one another node's tunnel holds costs one.
const FLEET_PORT_TRIES: usize = 16;

impl ServerState {
    /// Binds `client`'s public socket at `addr` within `ports`; port 0
    /// picks a free allowed port. A TCP port the client holds on a lease is
    /// taken back instead of bound anew.
    pub(crate) fn bind_public(
        &self,
        ports: &PortRanges,
        client: &str,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<Bound, Reason> {
        let unavailable = |msg: String| Reason::new(RefuseCode::Unavailable, msg);
        if addr.port() != 0 || ports.is_unrestricted() {
            allowed(ports, addr.port())?;
            if transport == Transport::Tcp {
                if let Some(leased) = self.leases.claim(client, addr)? {
                    tracing::info!(%client, %addr, "leased port reclaimed");
                    return Ok(Bound::Tcp(leased));
                }
            }
            return Bound::bind(addr, transport)
                .map_err(|e| unavailable(format!("cannot listen on {addr} ({transport}): {e}")));
        }
        let hint = self.port_hint.fetch_add(1, Ordering::Relaxed);
        ports
            .candidates(hint)
            .find_map(|port| Bound::bind(SocketAddr::new(addr.ip(), port), transport).ok())
            .ok_or_else(|| unavailable(format!("no free port left in the allowed ports ({ports})")))
    }

    /// A fleet node's [`ServerState::bind_public`] for `tunnel`: its port
    /// taken fleet-wide too. A port asked for is claimed before it is
    /// bound; for port 0, free local ports are bound and claimed until one
    /// is not another node's (those tried stay bound meanwhile, so the
    /// next pick differs), up to [`FLEET_PORT_TRIES`].
    pub(crate) async fn bind_claimed(
        &self,
        fleet: &Arc<Fleet>,
        ports: &PortRanges,
        tunnel: &TunnelInfo,
    ) -> Result<(Bound, Claim), Reason> {
        let (addr, transport, client) = (tunnel.bind, tunnel.transport, &*tunnel.client.name);
        if addr.port() != 0 {
            allowed(ports, addr.port())?;
            let claim = fleet
                .claim_port(transport, addr.port(), tunnel)
                .await
                .map_err(NotTaken::into_reason)?;
            // Relayed here for another node until now: this node holds it.
            fleet.unrelay_port(addr.port(), None).await;
            let bound = self.bind_public(ports, client, addr, transport)?;
            return Ok((bound, claim));
        }
        let mut tried = Vec::new();
        let mut last = None;
        for _ in 0..FLEET_PORT_TRIES {
            let bound = match self.bind_public(ports, client, addr, transport) {
                Ok(bound) => bound,
                Err(_) if last.is_some() => break, // the rest are taken here
                Err(reason) => return Err(reason),
            };
            let port = bound.local_addr().map_or(0, |a| a.port());
            match fleet.claim_port(transport, port, tunnel).await {
                Ok(claim) => return Ok((bound, claim)),
                Err(NotTaken::Store(reason)) => return Err(reason),
                Err(NotTaken::Held(reason)) => last = Some(reason),
            }
            tried.push(bound);
        }
        let why = last.map_or_else(String::new, |r| format!(" (the last: {})", r.message));
        Err(Reason::new(
            RefuseCode::Unavailable,
            format!(
                "no port free fleet-wide among the {} tried{why}",
                tried.len()
            ),
        ))
    }
}

/// Refuses a port outside the allowed ones (port 0 asks for any).
fn allowed(ports: &PortRanges, port: u16) -> Result<(), Reason> {
    if port != 0 && !ports.contains(port) {
        return Err(Reason::forbidden(format!(
            "port {port} is outside the server's allowed ports ({ports})"
        )));
    }
    Ok(())
}
