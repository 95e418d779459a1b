//! A reverse tunnel's public socket, bound within the server's allowed
//! ports (a free one when the client asks for port 0), or a TCP port its
//! client held on a lease taken back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use reitunnel_hooks::{Reason, RefuseCode, Transport};
use reitunnel_transport::Bound;

use crate::ServerState;

impl ServerState {
    /// Binds `client`'s public socket at `addr` within `ports`; port 0
    /// picks a free allowed port. A TCP port the client holds on a lease is
    /// taken back instead of bound anew.
    pub(crate) fn bind_public(
        &self,
        ports: &reitunnel_hooks::ports::PortRanges,
        client: &str,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<Bound, Reason> {
        let unavailable = |msg: String| Reason::new(RefuseCode::Unavailable, msg);
        if addr.port() != 0 || ports.is_unrestricted() {
            if addr.port() != 0 && !ports.contains(addr.port()) {
                return Err(Reason::forbidden(format!(
                    "port {} is outside the server's allowed ports ({ports})",
                    addr.port()
                )));
            }
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
}
