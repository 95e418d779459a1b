use std::time::Duration;

use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::relay::RelayConfig;
use reitunnel_proto::DEFAULT_MAX_FRAME_LEN;
use reitunnel_transport::tls::ClientTls;
use reitunnel_transport::MuxConfig;

/// How the client connects. Build with [`ClientConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the server's control listener.
    pub server: String,
    /// Name to log in with (letters, digits, `. _ - @`).
    pub name: String,
    /// The shared token; only an HMAC proof of it is sent. May be empty when
    /// the server authenticates by client certificate alone.
    pub token: Secret,
    /// TLS to the server (`None`: plain TCP).
    pub tls: Option<ClientTls>,
    /// Name the server's certificate must be valid for; default: the host of `server`.
    pub server_name: Option<String>,
    /// Silence from the server after which it is taken for dead. The ping
    /// interval is the one the server announces at login.
    pub heartbeat_timeout: Duration,
    /// Connect plus login must finish within this time.
    pub login_timeout: Duration,
    /// Connecting to a local target must finish within this time.
    pub target_connect_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame_len: usize,
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
            mux: MuxConfig::default(),
            relay: RelayConfig::default(),
            max_forward_streams: MAX_FORWARD_STREAMS,
            udp_flow_idle: Duration::from_secs(60),
        }
    }
}

impl ClientConfig {
    /// The name the server's TLS certificate must carry: `server_name`, or
    /// the host part of `server`.
    pub fn tls_server_name(&self) -> &str {
        if let Some(name) = &self.server_name {
            return name;
        }
        let host = self
            .server
            .rsplit_once(':')
            .map_or(self.server.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}
