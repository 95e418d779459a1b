use std::time::Duration;

use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::relay::RelayConfig;
use reitunnel_proto::DEFAULT_MAX_FRAME_LEN;
use reitunnel_transport::tls::ClientTls;
use reitunnel_transport::MuxConfig;

use crate::servers::{parse_list, ServerEntry, ServerListError};

/// How the client connects. Build with [`ClientConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the server's control listener, or several separated
    /// by commas (`a:7000,b:7000`): the nodes of a fleet, any of which will
    /// do. Each login tries every address they resolve to in turn, from a
    /// random one; see [`ClientConfig::servers`].
    pub server: String,
    /// Name to log in with (letters, digits, `. _ - @`).
    pub name: String,
    /// The shared token; only an HMAC proof of it is sent. May be empty when
    /// the server authenticates by client certificate alone.
    pub token: Secret,
    /// TLS to the server (`None`: plain TCP).
    pub tls: Option<ClientTls>,
    /// Name every server's certificate must be valid for; default: the host
    /// of the entry of `server` being connected to.
    pub server_name: Option<String>,
    /// Silence from the server after which it is taken for dead. The ping
    /// interval is the one the server announces at login.
    pub heartbeat_timeout: Duration,
    /// Resolving the server names, and connect plus login to one server,
    /// must each finish within this time; past it the next server of the
    /// list gets the same.
    pub login_timeout: Duration,
    /// Connecting to a local target must finish within this time.
    pub target_connect_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame_len: usize,
    /// TCP (or TLS) connections the session runs over, the first included,
    /// where the server allows that many (protocol version 2): across a
    /// long path each connection adds its kernel window, and a loss stalls
    /// only the streams of one. New streams go to the least loaded; 1 =
    /// one connection.
    pub connections: usize,
    /// yamux tuning.
    pub mux: MuxConfig,
    /// Relay buffer sizes.
    pub relay: RelayConfig,
    /// Local connections through `-L` tunnels at once, over all of them.
    /// Past it a new one is closed at once and the hooks hear why. Kept well
    /// below the yamux session's stream limit (65,536), which would end the
    /// whole session, with every tunnel on it.
    pub max_forward_streams: usize,
    /// A UDP flow of a `-L udp:` forward that moved no datagram either way
    /// for this long is closed (the server closes reverse flows on its own idle time).
    pub udp_flow_idle: Duration,
}

/// Default of [`ClientConfig::connections`].
pub const CONNECTIONS: usize = 8;

/// Default of [`ClientConfig::max_forward_streams`].
pub const MAX_FORWARD_STREAMS: usize = 16_384;

impl ClientConfig {
    /// Defaults: plain TCP, 10 s to log in, 10 s to reach a target, 30 s heartbeat timeout.
    pub fn new(server: impl Into<String>, name: impl Into<String>, token: Secret) -> Self {
        ClientConfig {
            server: server.into(),
            name: name.into(),
            token,
            tls: None,
            server_name: None,
            heartbeat_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(10),
            target_connect_timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connections: CONNECTIONS,
            mux: MuxConfig::default(),
            relay: RelayConfig::default(),
            max_forward_streams: MAX_FORWARD_STREAMS,
            udp_flow_idle: Duration::from_secs(60),
        }
    }
}

impl ClientConfig {
    /// The entries of `server`, in order; an empty entry, one without a
    /// port or with a bad one is an error naming it.
    pub fn servers(&self) -> Result<Vec<ServerEntry>, ServerListError> {
        parse_list(&self.server)
    }

    /// The name the TLS certificate of the server at `entry` must carry:
    /// `server_name`, or the entry's host.
    pub fn tls_server_name<'a>(&'a self, entry: &'a ServerEntry) -> &'a str {
        self.server_name.as_deref().unwrap_or(entry.host())
    }
}
