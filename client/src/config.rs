use std::time::Duration;

use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::relay::RelayConfig;
use reitunnel_proto::DEFAULT_MAX_FRAME_LEN;
use reitunnel_transport::MuxConfig;

/// How the client connects. Build with [`ClientConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the server's control listener.
    pub server: String,
    /// Name to log in with (letters, digits, `. _ - @`).
    pub name: String,
    /// The shared token; only an HMAC proof of it is sent.
    pub token: Secret,
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
}

impl ClientConfig {
    /// Defaults: 10 s to log in, 10 s to reach a target.
    pub fn new(server: impl Into<String>, name: impl Into<String>, token: Secret) -> Self {
        ClientConfig {
            server: server.into(),
            name: name.into(),
            token,
            login_timeout: Duration::from_secs(10),
            target_connect_timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            mux: MuxConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}
