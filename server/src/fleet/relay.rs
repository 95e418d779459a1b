//! Visitors on any node: every TCP public port another node's tunnel holds
//! is listened on here too (as behind an L4 balancer or DNS round robin,
//! visitors reach any node), and each visitor is relayed over the link to
//! the holding node, its real address in the header. That node's tunnel
//! runs its hooks (gates, meters, quotas) once; this node applies only its
//! connection-level limits (PROXY protocol, `max_visitors_per_ip`).
//!
//! Which ports to relay is learned from the commands channel as tunnels
//! open and close (`port_opened`, `port_closed`) and from a scan of the
//! port entries whenever the listener subscribes and on each renewal, which
//! also finds the entries of a node that died.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::link::write_header;
use super::registry::{port_of, PortEntry};
use super::{Fleet, CALL_TIMEOUT};
use crate::proxied::real_peer;
use crate::Admin;

/// The ports relayed from this node, by port number.
#[derive(Default)]
pub(super) struct Relays {
    ports: Mutex<HashMap<u16, Relayed>>,
}

/// A port relayed to `node`.
struct Relayed {
    node: Arc<str>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Relays {
    fn ports(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Relayed>> {
        self.ports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node port `port` is relayed to.
    fn node_of(&self, port: u16) -> Option<Arc<str>> {
        self.ports().get(&port).map(|r| r.node.clone())
    }
}

impl Fleet {
    /// Relays public port `port`, held by a tunnel on `node`: listens on it
    /// here (on the default bind address) unless it already does.
    pub(super) fn relay_port(self: &Arc<Self>, admin: &Admin, port: u16, node: &str) {
        if self.relay.is_none() || node == self.config.node {
            return;
        }
        let mut ports = self.relays.ports();
        if let Some(relayed) = ports.get_mut(&port) {
            relayed.node = node.into();
            return;
        }
        let addr = SocketAddr::new(admin.0.config.default_bind_ip, port);
        let listener = match reitunnel_transport::listen(addr) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(%addr, %node, error = %e, "cannot listen here for a port another node holds; its visitors must reach that node");
                return;
            }
        };
        tracing::info!(%addr, %node, "relaying a port another node holds");
        let stop = self.stop.child_token();
        let task =
            tokio::spawn(
                self.clone()
                    .accept_relayed(listener, port, admin.clone(), stop.clone()),
            );
        ports.insert(
            port,
            Relayed {
                node: node.into(),
                stop,
                task,
            },
        );
    }

    /// Stops relaying `port` (its tunnel closed, or this node takes it),
    /// once the listener is closed. `node`: only if it is relayed there.
    pub(crate) async fn unrelay_port(&self, port: u16, node: Option<&str>) {
        let relayed = {
            let mut ports = self.relays.ports();
            match ports.get(&port) {
                Some(r) if node.is_none_or(|n| *r.node == *n) => ports.remove(&port),
                _ => None,
            }
        };
        if let Some(relayed) = relayed {
            relayed.stop.cancel();
            let _ = relayed.task.await;
            tracing::info!(port, node = %relayed.node, "no longer relaying the port");
        }
    }

    /// Reads every TCP port entry and relays exactly those another node holds.
    pub(super) async fn sync_ports(self: &Arc<Self>, admin: &Admin) {
        if self.relay.is_none() {
            return;
        }
        let Ok(held) = self.port_entries().await else {
            return; // the store is away: keep relaying what was known
        };
        for (port, entry) in &held {
            self.relay_port(admin, *port, &entry.node);
        }
        let gone: Vec<u16> = self
            .relays
            .ports()
            .keys()
            .filter(|p| !held.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            self.unrelay_port(port, None).await;
        }
    }

    /// Every TCP port entry in the store, by port.
    async fn port_entries(&self) -> Result<HashMap<u16, PortEntry>, super::StoreError> {
        let entries = self.store.scan::<PortEntry>("port:tcp:*").await?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, entry)| Some((port_of(&key)?.1, entry)))
            .collect())
    }

    /// Accepts the visitors of a relayed port until told to stop.
    async fn accept_relayed(
        self: Arc<Self>,
        listener: TcpListener,
        port: u16,
        admin: Admin,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let relay = self.clone().relay_visitor(tcp, peer, port, admin.clone());
                        self.tasks.spawn(relay);
                    }
                    Err(e) => {
                        tracing::warn!(port, error = %e, "cannot accept a visitor to relay");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    /// One visitor to relay: this node's connection-level limits, then its
    /// bytes both ways over a link stream to the holding node.
    async fn relay_visitor(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer: SocketAddr,
        port: u16,
        admin: Admin,
    ) {
        let _ = reitunnel_transport::tune(&tcp);
        let shared = &admin.0;
        let trusted = &shared.config.proxy_protocol_from;
        let peer = match timeout(CALL_TIMEOUT, real_peer(&mut tcp, peer, trusted)).await {
            Ok(Ok(peer)) => peer,
            _ => return,
        };
        let Ok(_per_ip) = shared.admission.visitors_per_ip.take(peer.ip()) else {
            tracing::debug!(%peer, port, "relayed visitor turned away: max_visitors_per_ip");
            return;
        };
        let Some(node) = self.relays.node_of(port) else {
            return;
        };
        // A broken link is dialed again once; a visitor it cannot get is refused.
        let mut stream = match self.link_stream(&node).await {
            Ok(stream) => stream,
            Err(first) => match self.link_stream(&node).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, port, %node, first = %first, error = %e, "relayed visitor refused: no link to the node that holds the port");
                    return;
                }
            },
        };
        if write_header(&mut stream, port, peer).await.is_err() {
            return;
        }
        // Chunks as large as the tunnels' own, so the link carries few, full frames.
        let chunk = shared.config.relay.max_chunk;
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, chunk, chunk).await;
    }
}
