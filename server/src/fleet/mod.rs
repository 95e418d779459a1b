//! Several servers as one fleet, sharing what must be shared through
//! Redis (docs/CLUSTER.md). Without a [`FleetConfig`] none of this runs and
//! a server is the whole world, as before.
//!
//! What a node shares so far:
//! - **Client names** ([`registry`]): a name is logged in once fleet-wide.
//!   Each session holds an entry `<prefix>client:<name>` naming its node;
//!   a login elsewhere replaces it (the old session is closed with reason
//!   `replaced`) or is refused, per [`OnDuplicateLogin`]. The node renews
//!   its entries in one script call per tick, so a dead node's expire.
//! - **Public ports** ([`registry`]): a port belongs to one tunnel
//!   fleet-wide (`<prefix>port:<tcp|udp>:<port>`); a client back on another
//!   node takes its own port over, and the old node lets its lease go.
//! - **Visitors on any node** ([`relay`], [`link`]): with `cluster_secret`
//!   and `relay_listen` set, every node listens on the TCP ports other
//!   nodes' tunnels hold and relays their visitors there over node links.
//! - **Quotas** ([`quota`]): counted fleet-wide, each node adding its
//!   bytes to a shared total at most [`quota::FLUSH_BYTES`] late.
//! - **Failed logins** ([`logins`]): counted fleet-wide per address.
//! - **Admin actions** ([`commands`]): a kick or a ban on any node reaches
//!   every node over a pub/sub channel, and bans are kept in a hash that a
//!   node reads when it (re)subscribes.
//!
//! Redis is never on the data path: a chunk of a stream never waits on it.

mod commands;
mod link;
mod logins;
mod quota;
mod registry;
mod relay;
mod store;
mod view;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reitunnel_hooks::builtin::redact_url;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use link::LinkConfig;
pub use quota::FLUSH_BYTES as QUOTA_FLUSH_BYTES;
pub use store::StoreError;
pub use view::{NodeClient, NodeStatus, NodeTunnel};

use link::Links;
use quota::Quotas;
use registry::Registry;
pub(crate) use registry::{Claim, NotTaken};
use reitunnel_transport::tls::{server_acceptor, Fingerprint, ServerTls, TlsAcceptor};
use relay::Relays;
use store::Store;
use tokio::net::TcpListener;

/// How long a call to Redis may take before the store counts as away.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node does with a login or tunnel while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Decide on what this node knows, log it once, and put the claims in
    /// the store when it is back (a conflict found then is resolved there).
    #[default]
    Local,
    /// Refuse, with a reason that names the store.
    Refuse,
}

/// What a login does when its name is logged in already, on any node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicateLogin {
    /// The new session takes the name; the old one is closed, reason `replaced`.
    #[default]
    Replace,
    /// The new login is refused for now (the client retries) while the old session lives.
    Refuse,
}

/// This server as a node of a fleet (`[cluster]` in the config file).
#[derive(Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…`.
    pub redis: String,
    /// This node's name, unique in the fleet.
    pub node: String,
    /// Every key and channel the fleet uses starts with it.
    pub key_prefix: String,
    /// See [`StoreFailure`].
    pub store_failure: StoreFailure,
    /// See [`OnDuplicateLogin`].
    pub on_duplicate_login: OnDuplicateLogin,
    /// How long a node's entries outlive it: they are renewed every third
    /// of it, so a node killed outright is forgotten within this long.
    pub entry_ttl: Duration,
    /// Node links, for visitors on any node; `None`: each node serves only
    /// the visitors of the tunnels it holds.
    pub links: Option<LinkConfig>,
}

impl FleetConfig {
    /// A node `node` of the fleet kept in `redis`, with the defaults.
    pub fn new(redis: impl Into<String>, node: impl Into<String>) -> FleetConfig {
        FleetConfig {
            redis: redis.into(),
            node: node.into(),
            key_prefix: "reitunnel:".to_owned(),
            store_failure: StoreFailure::default(),
            on_duplicate_login: OnDuplicateLogin::default(),
            entry_ttl: Duration::from_secs(10),
            links: None,
        }
    }
}

/// The URL may hold a password: shown as `scheme://host:port` only.
impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis", &redact_url(&self.redis))
            .field("node", &self.node)
            .field("key_prefix", &self.key_prefix)
            .field("store_failure", &self.store_failure)
            .field("on_duplicate_login", &self.on_duplicate_login)
            .field("entry_ttl", &self.entry_ttl)
            .field("relay_listen", &self.links.as_ref().map(|r| r.listen))
            .finish()
    }
}

/// This node's part of the fleet.
pub(crate) struct Fleet {
    pub(crate) config: FleetConfig,
    store: Store,
    registry: Registry,
    /// Node links, as configured.
    relay: Option<LinkConfig>,
    /// The link listener until the node runs, and where other nodes dial
    /// this one (`relay_advertise`, or the address bound).
    link_listener: Mutex<Option<TcpListener>>,
    advertised: Option<SocketAddr>,
    /// When the control port has TLS, links have it too: the acceptor (the
    /// same certificate, no client certificates asked) and the
    /// certificate's fingerprint, which this node's entry names for dialers.
    link_tls: Option<TlsAcceptor>,
    fingerprint: Option<Fingerprint>,
    links: Links,
    relays: Relays,
    quotas: Quotas,
    /// Calls made on behalf of something already gone (a release, a
    /// published command), waited for at shutdown.
    tasks: TaskTracker,
    /// Stops the renewal and the command listener.
    stop: CancellationToken,
    /// When this node started, milliseconds since the Unix epoch.
    since: u64,
}

impl Fleet {
    /// Prepares the node; nothing reaches Redis until the server runs.
    /// Binds the link listener, if the node takes links; with `tls` (the
    /// control port's), links take TLS with the same certificate.
    pub(crate) fn new(
        config: FleetConfig,
        tls: Option<&ServerTls>,
    ) -> Result<Arc<Fleet>, crate::ServerError> {
        let store = Store::open(&config.redis, &config.key_prefix, CALL_TIMEOUT)?;
        let (listener, advertised) = match &config.links {
            None => (None, None),
            Some(relay) => {
                let listen = |source| crate::ServerError::Listen {
                    addr: relay.listen,
                    source,
                };
                let listener = reitunnel_transport::listen(relay.listen).map_err(listen)?;
                let bound = listener.local_addr().map_err(listen)?;
                (Some(listener), Some(relay.advertise.unwrap_or(bound)))
            }
        };
        let (link_tls, fingerprint) = match (tls, &config.links) {
            (Some(tls), Some(_)) => {
                // Clients' certificates are the control port's business, not a link's.
                let links = ServerTls {
                    client_ca: None,
                    ..tls.clone()
                };
                let (acceptor, fingerprint) = server_acceptor(&links)?;
                (Some(acceptor), Some(fingerprint))
            }
            _ => (None, None),
        };
        Ok(Arc::new(Fleet {
            link_tls,
            fingerprint,
            relay: config.links.clone(),
            link_listener: Mutex::new(listener),
            advertised,
            links: Links::default(),
            relays: Relays::default(),
            quotas: Quotas::default(),
            config,
            store,
            registry: Registry::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            since: registry::now_ms(),
        }))
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.config.node
    }

    /// Runs `call` in the background, tracked so shutdown waits for it.
    fn spawn(&self, call: impl std::future::Future<Output = ()> + Send + 'static) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn(call);
        }
    }

    /// At shutdown, after every session ended: stops the background tasks
    /// and waits (a bounded time) for the calls still under way.
    pub(crate) async fn finish(&self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(CALL_TIMEOUT * 2, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(store = %self.store.shown, "shutting down with calls to the fleet's store unfinished; the entries expire on their own");
        }
    }
}
