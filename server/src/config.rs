//! Validated server settings. Everything is checked when the config is
//! built, so the server never unwraps an `Option` later.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::relay::RelayConfig;
use reitunnel_proto::DEFAULT_MAX_FRAME_LEN;
use reitunnel_transport::tls::ServerTls;
use reitunnel_transport::MuxConfig;

use crate::{FleetConfig, ForwardRule, Limits};

use reitunnel_hooks::ports::PortRanges;

/// How the server runs. Build with [`ServerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Control listener address (port 0 = any; see `Server::local_addr`).
    pub listen: SocketAddr,
    /// Name in events and logs.
    pub name: String,
    /// Shared token every client must prove. `None` lets anyone log in, so
    /// the CLI always sets it; embedders may authenticate with their own hook.
    pub token: Option<Secret>,
    /// Ports clients may ask for.
    pub allow_ports: PortRanges,
    /// Targets clients may reach through `-L` forwards (empty: none).
    pub allow_forward: Vec<ForwardRule>,
    /// Where tunnels listen when the client leaves the address unspecified.
    pub default_bind_ip: IpAddr,
    /// A new connection must finish the login within this time.
    pub handshake_timeout: Duration,
    /// The client must answer a stream header (connect its target) within this time.
    pub stream_ack_timeout: Duration,
    /// Largest control frame accepted.
    pub max_frame_len: usize,
    /// TLS for the control listener (`None`: plain TCP).
    pub tls: Option<ServerTls>,
    /// Connection, tunnel and stream limits, and heartbeats.
    pub limits: Limits,
    /// yamux tuning.
    pub mux: MuxConfig,
    /// How long a vanished client's public ports stay reserved for its
    /// reconnect (zero: freed at once).
    pub port_lease: Duration,
    /// How often failures before login (bad TLS, garbled logins, timeouts)
    /// are summed up for the hooks: each kind reaches them once as it
    /// happens, then as one count per interval (every one is logged).
    pub pre_login_summary: Duration,
    /// Balancers (HAProxy, AWS NLB) that connect on behalf of clients and
    /// visitors and start each connection with a PROXY protocol header
    /// naming the real peer. When not empty, the control port and public
    /// ports take connections only from these networks, header first.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// Where operators' bans are kept across restarts (JSON, rewritten on
    /// each ban); `None` keeps them in memory only, so a restart lifts them.
    pub ban_file: Option<PathBuf>,
    /// Relay buffer sizes, and the idle timeout of visitor and `-L`
    /// streams (default [`VISITOR_IDLE_TIMEOUT`]; `[limits]
    /// visitor_idle_timeout_secs` in the config file).
    pub relay: RelayConfig,
    /// This server as a node of a fleet sharing state in Redis; `None`: a
    /// server on its own.
    pub cluster: Option<FleetConfig>,
}

/// A visitor stream that moves no byte either way for this long is closed,
/// so idle visitors cannot hold their slots for ever. An hour keeps quiet
/// interactive sessions (ssh, databases) that send no keepalives.
pub const VISITOR_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl ServerConfig {
    /// Defaults: public tunnels on all interfaces, any unprivileged port, 10 s handshake.
    pub fn new(listen: SocketAddr, token: Option<Secret>) -> Self {
        ServerConfig {
            listen,
            name: "reitunnel".to_owned(),
            token,
            allow_ports: PortRanges::unprivileged(),
            allow_forward: Vec::new(),
            default_bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            handshake_timeout: Duration::from_secs(10),
            stream_ack_timeout: Duration::from_secs(15),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            tls: None,
            port_lease: Duration::from_secs(30),
            pre_login_summary: Duration::from_secs(60),
            limits: Limits::default(),
            mux: MuxConfig::default(),
            proxy_protocol_from: Vec::new(),
            ban_file: None,
            relay: RelayConfig {
                idle_timeout: Some(VISITOR_IDLE_TIMEOUT),
                ..RelayConfig::default()
            },
            cluster: None,
        }
    }
}
