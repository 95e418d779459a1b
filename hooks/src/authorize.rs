//! Asynchronous gates: asking a service of the operator's own whether a
//! login, a tunnel or (opt-in) a visitor may open.
//!
//! The gates of [`crate::Hook`] are synchronous, which is right for what a
//! hook can decide from memory. An [`Authorize`] gate may take a network
//! round trip: the server awaits it off the data path (in the login's
//! task, the session's control loop, the visitor's task) within a deadline
//! of the gate's own (the server also caps it at its handshake timeout),
//! after the server's own checks (limits, allow-lists) and before the hooks'
//! synchronous gates and the open event. Its refusal reaches every hook's `on_rejected`, `by` its name,
//! and the peer is told its reason. Ask only where it matters: a stream
//! gate ([`Authorize::asks_streams`]) adds its latency to every visitor.

use std::future::Future;
use std::pin::Pin;

use crate::info::{ClientInfo, Login, Scope, StreamInfo, TunnelInfo};
use crate::verdict::{Gate, Reason};

/// What an asynchronous gate is asked.
pub enum Ask<'a> {
    /// May this client log in? Its proof of the token is in `login`, so a
    /// service that knows the client's token can check it.
    Login {
        /// The client, its name as it asked and its address.
        client: &'a ClientInfo,
        /// The server's nonce and the client's proof.
        login: &'a Login<'a>,
        /// The verified client certificate's identity, if one was presented.
        certificate: Option<&'a str>,
    },
    /// May this tunnel open (its public socket is bound already)?
    Tunnel(&'a TunnelInfo),
    /// May this visitor (or UDP flow) in?
    Stream(&'a StreamInfo),
}

impl Ask<'_> {
    /// `"login"`, `"tunnel"` or `"stream"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Ask::Login { .. } => "login",
            Ask::Tunnel(_) => "tunnel",
            Ask::Stream(_) => "stream",
        }
    }

    /// Where a refusal is reported.
    pub fn scope(&self) -> Scope<'_> {
        match self {
            Ask::Login { client, .. } => Scope::Client(client),
            Ask::Tunnel(tunnel) => Scope::Tunnel(tunnel),
            Ask::Stream(stream) => Scope::Stream(stream),
        }
    }

    /// The reason a gate refuses it with, saying `why`. A refused login
    /// counts as a failed one (the gate may have found the wrong token), so
    /// the server's `failed_logins_per_minute` slows down guessing as it
    /// does for its own token.
    pub fn refusal(&self, why: String) -> Reason {
        match self {
            Ask::Login { .. } => Reason::auth_failed(why),
            _ => Reason::forbidden(why),
        }
    }
}

/// The answer to come.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Gate> + Send + 'a>>;

/// The port a chooser gives, to come (`None`: the server picks as usual).
pub type PortFuture<'a> = Pin<Box<dyn Future<Output = Option<u16>> + Send + 'a>>;

/// An asynchronous gate. It bounds its own wait and decides what a failure
/// (no answer, a service down) means; the chain only awaits it.
pub trait Authorize: Send + Sync + 'static {
    /// Its name, in refusals and logs.
    fn name(&self) -> &str;

    /// Whether it is asked about every visitor too (default: only logins and tunnels).
    fn asks_streams(&self) -> bool {
        false
    }

    /// Whether `ask` may go ahead.
    fn authorize<'a>(&'a self, ask: &'a Ask<'a>) -> AuthFuture<'a>;

    /// Whether it picks the public port of a tunnel that asks for port 0
    /// ([`Authorize::choose_port`]; default: no).
    fn chooses_ports(&self) -> bool {
        false
    }

    /// For an `-R` tunnel that asked for port 0 and that every gate let
    /// open: the port to give it, or `None` to leave the pick to the
    /// server (any free allowed port). The server checks the port against
    /// its allowed ports and bounds the wait by what is left of its
    /// handshake timeout. Asked only where [`Authorize::chooses_ports`].
    fn choose_port<'a>(&'a self, _tunnel: &'a TunnelInfo) -> PortFuture<'a> {
        Box::pin(std::future::ready(None))
    }
}

impl std::fmt::Debug for dyn Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorize({})", self.name())
    }
}
