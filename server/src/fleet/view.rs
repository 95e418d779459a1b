//! The fleet as the store sees it, for the admin API: the sessions and
//! ports other nodes hold, and the nodes themselves. Read on demand (a
//! `SCAN` per listing), never cached: an operator sees what is.

use std::net::SocketAddr;
use std::time::Duration;

use super::registry::{now_ms, port_of, Entry, NodeEntry, PortEntry};
use super::{Fleet, StoreError};

/// A session another node of the fleet holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClient {
    /// The client's name.
    pub name: String,
    /// The node that holds its session.
    pub node: String,
    /// Where it connected from.
    pub peer: String,
    /// How long ago it logged in.
    pub connected_for: Duration,
}

/// A public port another node's tunnel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTunnel {
    /// Its client's name.
    pub client: String,
    /// The node that holds it.
    pub node: String,
    /// `tcp` or `udp`.
    pub transport: String,
    /// The public port.
    pub port: u16,
    /// How long it has been open.
    pub open_for: Duration,
}

/// A node of the fleet, this one included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its name.
    pub node: String,
    /// How long it has been running.
    pub up_for: Duration,
    /// Where other nodes dial it for relayed visitors, if it takes links.
    pub links: Option<SocketAddr>,
}

/// How long ago `since` (milliseconds since the Unix epoch) was.
fn ago(since: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(since))
}

impl Fleet {
    /// The sessions other nodes hold.
    pub(crate) async fn clients_elsewhere(&self) -> Result<Vec<NodeClient>, StoreError> {
        let prefix = self.store.key("client:");
        let mut all: Vec<NodeClient> = self
            .store
            .scan::<Entry>("client:*")
            .await?
            .into_iter()
            .filter(|(_, e)| e.node != self.config.node)
            .map(|(key, e)| NodeClient {
                name: key.strip_prefix(&prefix).unwrap_or(&key).to_owned(),
                connected_for: ago(e.since),
                node: e.node,
                peer: e.peer,
            })
            .collect();
        all.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
        Ok(all)
    }

    /// The public ports other nodes' tunnels hold.
    pub(crate) async fn tunnels_elsewhere(&self) -> Result<Vec<NodeTunnel>, StoreError> {
        let mut all: Vec<NodeTunnel> = self
            .store
            .scan::<PortEntry>("port:*")
            .await?
            .into_iter()
            .filter(|(_, e)| e.node != self.config.node)
            .filter_map(|(key, e)| {
                let (transport, port) = port_of(&key)?;
                Some(NodeTunnel {
                    transport: transport.to_owned(),
                    port,
                    client: e.client,
                    node: e.node,
                    open_for: ago(e.since),
                })
            })
            .collect();
        all.sort_by(|a, b| (&a.node, a.port).cmp(&(&b.node, b.port)));
        Ok(all)
    }

    /// Every node whose entry is alive.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeStatus>, StoreError> {
        let prefix = self.store.key("node:");
        let mut all: Vec<NodeStatus> = self
            .store
            .scan::<NodeEntry>("node:*")
            .await?
            .into_iter()
            .map(|(key, e)| NodeStatus {
                node: key.strip_prefix(&prefix).unwrap_or(&key).to_owned(),
                up_for: ago(e.since),
                links: e.relay,
            })
            .collect();
        all.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(all)
    }
}
