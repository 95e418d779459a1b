//! Who is logged in and what is open, now: every session and tunnel with
//! the closer that ends it, every tunnel's live streams, and the names an
//! operator banned. [`Admin`](crate::Admin) reads and acts on it.
//!
//! Entries are held by guards owned by the session, tunnel and stream
//! tasks, so a listing never names something already closed and nothing
//! is left behind on any path. The locks are taken when a session, tunnel
//! or stream opens or closes, and by a listing; never per chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, StreamId, StreamInfo, TunnelId, TunnelInfo,
};
use reitunnel_transport::Closer;
use tokio::sync::mpsc;

use crate::bans::{BanFileError, Bans};

type Handle = Arc<Closer<CloseReason>>;

/// Tunnels an operator closed, for their session to tell its client.
pub(crate) type AdminCloses = mpsc::UnboundedReceiver<TunnelId>;

/// A listed session: its info, its closer, and where to send admin closes.
type ListedClient = (Arc<ClientInfo>, Handle, mpsc::UnboundedSender<TunnelId>);

/// The registry; the server holds one.
#[derive(Default)]
pub(crate) struct Roster {
    clients: Mutex<HashMap<ClientId, ListedClient>>,
    tunnels: Mutex<HashMap<TunnelId, Arc<ListedTunnel>>>,
    /// Banned client names, kept in the ban file if there is one.
    bans: Bans,
}

/// A visitor another node of the fleet relayed here: its stream on the
/// node link and its real address.
pub(crate) type Relayed = (reitunnel_transport::MuxStream, std::net::SocketAddr);

/// A tunnel in the roster, with its live streams.
pub(crate) struct ListedTunnel {
    pub(crate) info: Arc<TunnelInfo>,
    pub(crate) closer: Handle,
    /// Where a TCP tunnel takes visitors relayed by other nodes.
    pub(crate) relayed: Option<mpsc::Sender<Relayed>>,
    streams: Mutex<HashMap<StreamId, Arc<StreamInfo>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes of open streams, not yet in any tunnel's or client's meter.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OpenStreams {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) streams: usize,
}

impl ListedTunnel {
    /// What its open streams moved so far, and how many are open.
    pub(crate) fn open_streams(&self) -> OpenStreams {
        let streams = lock(&self.streams);
        streams.values().fold(
            OpenStreams {
                streams: streams.len(),
                ..OpenStreams::default()
            },
            |mut l, s| {
                let t = s.meter.totals(s.opened_at);
                l.bytes_in += t.bytes_in;
                l.bytes_out += t.bytes_out;
                l
            },
        )
    }

    /// Lists a stream of this tunnel while the guard lives.
    pub(crate) fn stream(self: &Arc<Self>, info: Arc<StreamInfo>) -> StreamListing {
        let id = info.id;
        lock(&self.streams).insert(id, info);
        StreamListing {
            tunnel: self.clone(),
            id,
        }
    }
}

/// Keeps a session listed; unlists it when dropped.
pub(crate) struct ClientListing {
    roster: Arc<Roster>,
    id: ClientId,
}

impl Drop for ClientListing {
    fn drop(&mut self) {
        lock(&self.roster.clients).remove(&self.id);
    }
}

/// Keeps a tunnel listed; unlists it when dropped.
pub(crate) struct TunnelListing {
    roster: Arc<Roster>,
    pub(crate) tunnel: Arc<ListedTunnel>,
}

impl Drop for TunnelListing {
    fn drop(&mut self) {
        lock(&self.roster.tunnels).remove(&self.tunnel.info.id);
    }
}

/// Keeps a stream counted in its tunnel's live bytes; dropped just before
/// the stream's close event adds its totals to the tunnel's meter, so a
/// listing may briefly miss a closing stream's bytes but never counts them twice.
pub(crate) struct StreamListing {
    tunnel: Arc<ListedTunnel>,
    id: StreamId,
}

impl Drop for StreamListing {
    fn drop(&mut self) {
        lock(&self.tunnel.streams).remove(&self.id);
    }
}

impl Roster {
    /// An empty roster with the bans in force.
    pub(crate) fn new(bans: Bans) -> Roster {
        Roster {
            bans,
            ..Roster::default()
        }
    }

    /// Lists a logged-in session until the guard drops; the receiver
    /// hears which of its tunnels an operator closed.
    pub(crate) fn client(
        self: &Arc<Self>,
        info: Arc<ClientInfo>,
        closer: Handle,
    ) -> (ClientListing, AdminCloses) {
        let id = info.id;
        let (tell, closes) = mpsc::unbounded_channel();
        lock(&self.clients).insert(id, (info, closer, tell));
        let listing = ClientListing {
            roster: self.clone(),
            id,
        };
        (listing, closes)
    }

    /// Tells `client`'s session that an operator closed its `tunnel`.
    pub(crate) fn tell_client(&self, client: ClientId, tunnel: TunnelId) {
        if let Some((_, _, tell)) = lock(&self.clients).get(&client) {
            let _ = tell.send(tunnel);
        }
    }

    /// Lists an open tunnel until the guard drops.
    pub(crate) fn tunnel(
        self: &Arc<Self>,
        info: Arc<TunnelInfo>,
        closer: Handle,
        relayed: Option<mpsc::Sender<Relayed>>,
    ) -> TunnelListing {
        let tunnel = Arc::new(ListedTunnel {
            info,
            closer,
            relayed,
            streams: Mutex::default(),
        });
        lock(&self.tunnels).insert(tunnel.info.id, tunnel.clone());
        TunnelListing {
            roster: self.clone(),
            tunnel,
        }
    }

    /// Every listed session, in login order.
    pub(crate) fn clients(&self) -> Vec<(Arc<ClientInfo>, Handle)> {
        let mut all: Vec<_> = lock(&self.clients)
            .values()
            .map(|(info, closer, _)| (info.clone(), closer.clone()))
            .collect();
        all.sort_by_key(|(c, _)| c.id);
        all
    }

    /// Every listed tunnel, in opening order.
    pub(crate) fn tunnels(&self) -> Vec<Arc<ListedTunnel>> {
        let mut all: Vec<_> = lock(&self.tunnels).values().cloned().collect();
        all.sort_by_key(|t| t.info.id);
        all
    }

    /// One listed session.
    pub(crate) fn find_client(&self, id: ClientId) -> Option<(Arc<ClientInfo>, Handle)> {
        lock(&self.clients)
            .get(&id)
            .map(|(info, closer, _)| (info.clone(), closer.clone()))
    }

    /// Where the tunnel on public port `port` takes visitors other nodes
    /// relay (only a fleet node's TCP tunnels take them).
    pub(crate) fn relay_target(&self, port: u16) -> Option<mpsc::Sender<Relayed>> {
        lock(&self.tunnels)
            .values()
            .filter(|t| t.info.bind.port() == port)
            .find_map(|t| t.relayed.clone())
    }

    /// One listed tunnel.
    pub(crate) fn find_tunnel(&self, id: TunnelId) -> Option<Arc<ListedTunnel>> {
        lock(&self.tunnels).get(&id).cloned()
    }

    /// Refuses `name`'s logins for `period`; see [`Bans::ban`].
    pub(crate) fn ban(&self, name: &str, period: Duration) -> Result<(), BanFileError> {
        self.bans.ban(name, period)
    }

    /// How long `name` stays banned, if it is.
    pub(crate) fn banned_for(&self, name: &str) -> Option<Duration> {
        self.bans.banned_for(name)
    }
}
