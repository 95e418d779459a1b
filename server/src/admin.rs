//! Reading and acting on a running server from outside it: what an admin
//! API lists (sessions, tunnels, bytes, round trips, leases) and what it
//! does (kick a client, with a ban if asked; close a tunnel). Every action
//! reaches the hooks as `on_admin` once it has taken effect, so an audit
//! log records who did what to whom.
//!
//! ```no_run
//! # async fn demo(server: reitunnel_server::Server) {
//! use std::time::Duration;
//! let admin = server.admin();
//! tokio::spawn(server.run(std::future::pending()));
//! for c in admin.clients() {
//!     println!("{} from {}: {} bytes in", c.name, c.peer, c.bytes_in);
//! }
//! admin.kick("mallory", Some(Duration::from_secs(600)), "ops console");
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use reitunnel_hooks::{AdminAction, ClientId, CloseReason, Scope, Transport, TunnelId, TunnelKind};

use reitunnel_transport::MuxStream;

use crate::roster::{ListedTunnel, OpenStreams};
use crate::{NodeClient, NodeStatus, NodeTunnel, ServerState, StoreError};

/// A handle on a server's live state and admin actions, from
/// [`Server::admin`](crate::Server::admin). Cheap to clone.
#[derive(Clone)]
pub struct Admin(pub(crate) Arc<ServerState>);

/// A logged-in session as an operator sees it.
#[derive(Debug, Clone)]
pub struct ClientStatus {
    /// The session's id (a reconnect gets a new one).
    pub id: ClientId,
    /// The client's name.
    pub name: Arc<str>,
    /// Where it connected from.
    pub peer: SocketAddr,
    /// How long ago it logged in.
    pub connected_for: Duration,
    /// The last heartbeat round trip, once one was measured.
    pub rtt: Option<Duration>,
    /// Whether it logged in with a verified client certificate.
    pub certified: bool,
    /// The TCP (or TLS) connections its session runs over.
    pub connections: usize,
    /// Its open tunnels.
    pub tunnels: Vec<TunnelId>,
    /// Its open streams, over all its tunnels.
    pub streams: usize,
    /// Visitor → service bytes so far, open streams included.
    pub bytes_in: u64,
    /// Service → visitor bytes so far, open streams included.
    pub bytes_out: u64,
    /// Public addresses still reserved for this name from an earlier session.
    pub leases: Vec<SocketAddr>,
}

/// An open tunnel as an operator sees it.
#[derive(Debug, Clone)]
pub struct TunnelStatus {
    /// The tunnel's id.
    pub id: TunnelId,
    /// Its client's name.
    pub client: Arc<str>,
    /// Its client's session.
    pub client_id: ClientId,
    /// `-R` (the server listens) or `-L` (the server dials).
    pub kind: TunnelKind,
    /// TCP connections or UDP flows.
    pub transport: Transport,
    /// The public address of a reverse tunnel (`0.0.0.0:0` for a forward one).
    pub bind: SocketAddr,
    /// Where its streams go.
    pub target: Arc<str>,
    /// How long it has been open.
    pub open_for: Duration,
    /// Its open streams.
    pub streams: usize,
    /// Visitor → service bytes so far, open streams included.
    pub bytes_in: u64,
    /// Service → visitor bytes so far, open streams included.
    pub bytes_out: u64,
}

/// What a kick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kicked {
    /// Sessions of that name closed.
    pub sessions: usize,
    /// Leased ports of that name freed.
    pub leases: usize,
}

/// An admin action that found nothing to act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    /// No session has that name (and no ban was asked for).
    #[error("no client named '{0}' is logged in")]
    NoSuchClient(String),
    /// No open tunnel has that id.
    #[error("no open tunnel has id {0}")]
    NoSuchTunnel(TunnelId),
}

impl TunnelStatus {
    fn of(t: &ListedTunnel) -> TunnelStatus {
        let info = &t.info;
        let closed = info.meter.totals(info.opened_at);
        let live = t.open_streams();
        TunnelStatus {
            id: info.id,
            client: info.client.name.clone(),
            client_id: info.client.id,
            kind: info.kind,
            transport: info.transport,
            bind: info.bind,
            target: info.target.clone(),
            open_for: info.opened_at.elapsed(),
            streams: live.streams,
            bytes_in: closed.bytes_in + live.bytes_in,
            bytes_out: closed.bytes_out + live.bytes_out,
        }
    }
}

impl Admin {
    /// Every logged-in session, in login order. The tunnels are grouped by
    /// client once, so a listing costs clients plus tunnels, not their product.
    pub fn clients(&self) -> Vec<ClientStatus> {
        let tunnels = self.0.roster.tunnels();
        let mut by_client: HashMap<ClientId, Vec<&ListedTunnel>> = HashMap::new();
        for t in &tunnels {
            by_client.entry(t.info.client.id).or_default().push(t);
        }
        let leases = self.0.leases.held();
        self.0
            .roster
            .clients()
            .into_iter()
            .map(|(c, _)| {
                // Closed streams are in the client's meter; open ones only in their own.
                let closed = c.meter.totals(c.opened_at);
                let own = by_client.remove(&c.id).unwrap_or_default();
                let live =
                    own.iter()
                        .map(|t| t.open_streams())
                        .fold(OpenStreams::default(), |a, l| OpenStreams {
                            bytes_in: a.bytes_in + l.bytes_in,
                            bytes_out: a.bytes_out + l.bytes_out,
                            streams: a.streams + l.streams,
                        });
                ClientStatus {
                    id: c.id,
                    name: c.name.clone(),
                    peer: c.peer,
                    connected_for: c.opened_at.elapsed(),
                    rtt: c.rtt(),
                    certified: c.certified,
                    connections: self.0.joins.connections(c.id),
                    tunnels: own.iter().map(|t| t.info.id).collect(),
                    streams: live.streams,
                    bytes_in: closed.bytes_in + live.bytes_in,
                    bytes_out: closed.bytes_out + live.bytes_out,
                    leases: leases
                        .iter()
                        .filter(|(name, _)| **name == *c.name)
                        .map(|(_, addr)| *addr)
                        .collect(),
                }
            })
            .collect()
    }

    /// Every open tunnel, in opening order.
    pub fn tunnels(&self) -> Vec<TunnelStatus> {
        self.0
            .roster
            .tunnels()
            .iter()
            .map(|t| TunnelStatus::of(t))
            .collect()
    }

    /// Closes every session of `name` (reason `admin`) and frees the ports
    /// leased to it; with `ban`, refuses its logins for that long, saying
    /// so. `by` names who asked, for the hooks' `on_admin`. In a fleet every
    /// node is told too, and does the same to the sessions it holds; then
    /// a name with no session here is no error (it may have one elsewhere).
    pub fn kick(&self, name: &str, ban: Option<Duration>, by: &str) -> Result<Kicked, AdminError> {
        let kicked = self.kick_here(name, ban, by);
        if let Some(fleet) = &self.0.fleet {
            fleet.kicked(name, ban, by);
            return Ok(kicked);
        }
        if kicked.sessions == 0 && kicked.leases == 0 && ban.is_none() {
            return Err(AdminError::NoSuchClient(name.to_owned()));
        }
        Ok(kicked)
    }

    /// [`Admin::kick`] on this server alone; announced to the hooks if it
    /// did anything.
    pub(crate) fn kick_here(&self, name: &str, ban: Option<Duration>, by: &str) -> Kicked {
        if let Some(period) = ban {
            self.ban_here(name, period);
        }
        let why = match ban {
            Some(period) => format!("kicked by {by}, banned for {}s", period.as_secs()),
            None => format!("kicked by {by}"),
        };
        let mut sessions = 0;
        for (client, closer) in self.0.roster.clients() {
            if *client.name == *name {
                closer.close(CloseReason::Admin(why.clone()));
                sessions += 1;
            }
        }
        let leases = self.0.leases.release(name);
        if sessions > 0 || leases > 0 || ban.is_some() {
            let outcome = format!("{sessions} session(s) closed, {leases} lease(s) freed; {why}");
            self.announce("kick", name, by, &outcome);
        }
        Kicked { sessions, leases }
    }

    /// Refuses `name`'s logins here for `period`.
    pub(crate) fn ban_here(&self, name: &str, period: Duration) {
        if let Err(e) = self.0.roster.ban(name, period) {
            // In force all the same, but a restart would lift it: say so
            // wherever errors go (the log, the audit log, webhooks).
            self.0.report(Scope::Server, &e);
        }
    }

    /// Lets go of tunnel `id`'s port, whose fleet-wide entry another node
    /// took: its lease ends, or the tunnel closes for `reason` (and keeps
    /// no lease, its claim being gone).
    pub(crate) fn close_port(&self, id: TunnelId, reason: CloseReason) {
        if self.0.leases.release_tunnel(id) {
            return;
        }
        if let Some(tunnel) = self.0.roster.find_tunnel(id) {
            tracing::info!(client = %tunnel.info.client.name, tunnel = %id, %reason, "closing the tunnel");
            tunnel.closer.close(reason);
            self.0.roster.tell_client(tunnel.info.client.id, id);
        }
    }

    /// Hands a visitor another node relayed here to the TCP tunnel on
    /// public port `port`; with none here (any more), or its queue full,
    /// the stream is dropped and the visitor sees its connection close.
    pub(crate) fn relayed_visitor(&self, port: u16, peer: SocketAddr, stream: MuxStream) {
        match self.0.roster.relay_target(port) {
            Some(relayed) => {
                if relayed.try_send((stream, peer)).is_err() {
                    tracing::warn!(port, %peer, "relayed visitor turned away: its tunnel's queue is full");
                }
            }
            None => tracing::debug!(port, %peer, "relayed visitor for a port no tunnel here holds"),
        }
    }

    /// Closes the session `id` for `reason`, if it is still here.
    pub(crate) fn close_session(&self, id: ClientId, reason: CloseReason) {
        if let Some((client, closer)) = self.0.roster.find_client(id) {
            tracing::info!(client = %client.name, %id, %reason, "closing the session");
            closer.close(reason);
        }
    }

    /// Closes one tunnel (reason `admin`) and tells its client, which
    /// sees the tunnel closed by the server.
    pub fn close_tunnel(&self, id: TunnelId, by: &str) -> Result<(), AdminError> {
        let tunnel = self
            .0
            .roster
            .find_tunnel(id)
            .ok_or(AdminError::NoSuchTunnel(id))?;
        tunnel
            .closer
            .close(CloseReason::Admin(format!("closed by {by}")));
        self.0.roster.tell_client(tunnel.info.client.id, id);
        let outcome = format!("tunnel of '{}' closed", tunnel.info.client.name);
        self.announce("close_tunnel", &id.0.to_string(), by, &outcome);
        Ok(())
    }

    /// Counts `quotas` (the quota hooks in force; again after each reload)
    /// fleet-wide, in a fleet; does nothing for a server on its own.
    pub fn share_quotas(&self, quotas: &[Arc<reitunnel_hooks::builtin::Quota>]) {
        if let Some(fleet) = &self.0.fleet {
            fleet.share_quotas(quotas);
        }
    }

    /// This node's name in its fleet; `None` for a server on its own.
    pub fn node(&self) -> Option<&str> {
        self.0.fleet.as_ref().map(|f| f.node())
    }

    /// The sessions other nodes of the fleet hold (none outside a fleet).
    pub async fn clients_elsewhere(&self) -> Result<Vec<NodeClient>, StoreError> {
        match &self.0.fleet {
            Some(fleet) => fleet.clients_elsewhere().await,
            None => Ok(Vec::new()),
        }
    }

    /// The public ports other nodes' tunnels hold (none outside a fleet).
    pub async fn tunnels_elsewhere(&self) -> Result<Vec<NodeTunnel>, StoreError> {
        match &self.0.fleet {
            Some(fleet) => fleet.tunnels_elsewhere().await,
            None => Ok(Vec::new()),
        }
    }

    /// The fleet's live nodes, this one included (none outside a fleet).
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, StoreError> {
        match &self.0.fleet {
            Some(fleet) => fleet.nodes().await,
            None => Ok(Vec::new()),
        }
    }

    /// How much longer `name`'s logins are refused, if they are.
    pub fn banned_for(&self, name: &str) -> Option<Duration> {
        self.0.roster.banned_for(name)
    }

    /// True while the server serves: its hooks started and no drain began.
    pub fn ready(&self) -> bool {
        let started = *self
            .0
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        started && !self.0.draining.is_cancelled()
    }

    fn announce(&self, action: &str, target: &str, by: &str, outcome: &str) {
        tracing::warn!(action, target, by, outcome, "admin action");
        self.0.live().chain.admin(&AdminAction {
            action,
            target,
            by,
            outcome,
        });
    }
}
