use std::io;
use std::time::Duration;

use reitunnel_proto::{FrameKind, PreambleError, RefuseCode};
use reitunnel_transport::tls::{explain, Side, TlsError};
use reitunnel_transport::FrameIoError;
use thiserror::Error;

/// Why the client could not log in, open a tunnel, or stay connected.
#[derive(Debug, Error)]
pub enum ClientError {
    /// TCP connect to the server failed.
    #[error("cannot connect to server {server}: {source}")]
    Connect {
        /// The server address.
        server: String,
        /// The OS error.
        source: io::Error,
    },
    /// Connect or login took too long.
    #[error("server {server} did not complete the login within {after:?}")]
    Timeout {
        /// The server address.
        server: String,
        /// The deadline.
        after: Duration,
    },
    /// The TLS settings (CA, certificate, key, fingerprint) are unusable.
    #[error(transparent)]
    TlsSettings(#[from] TlsError),
    /// The TLS handshake failed; the text says why in plain words.
    #[error("TLS with server {server} failed: {reason}")]
    Tls {
        /// The server address.
        server: String,
        /// Expired or untrusted certificate, wrong name, fingerprint, refused client certificate…
        reason: String,
    },
    /// The server stopped answering heartbeats.
    #[error("server unresponsive for {0:?} (heartbeat timeout)")]
    HeartbeatTimeout(Duration),
    /// Wrong magic or protocol version from the server.
    #[error("server {server}: {source}")]
    Preamble {
        /// The server address.
        server: String,
        /// What was wrong.
        source: PreambleError,
    },
    /// Login frames could not be exchanged.
    #[error("login to {server} failed: {source}")]
    Handshake {
        /// The server address.
        server: String,
        /// What failed.
        source: FrameIoError,
    },
    /// The server refused the login (wrong token, policy).
    #[error("server refused login: {message}")]
    LoginRefused {
        /// Machine-readable reason.
        code: RefuseCode,
        /// The server's explanation.
        message: String,
    },
    /// A client-side hook refused something.
    #[error("refused by client hook '{by}': {message}")]
    RefusedLocally {
        /// The hook.
        by: String,
        /// Its reason.
        message: String,
    },
    /// The server refused a tunnel.
    #[error("server refused tunnel {spec}: {message}")]
    TunnelRefused {
        /// The request, `bind -> target`.
        spec: String,
        /// Machine-readable reason.
        code: RefuseCode,
        /// The server's explanation.
        message: String,
    },
    /// The server sent a frame that does not belong here.
    #[error("server sent a {got:?} frame where {expected} was expected")]
    UnexpectedFrame {
        /// What the protocol wanted.
        expected: &'static str,
        /// What came.
        got: FrameKind,
    },
    /// The server ended the session.
    #[error("server closed the session: {message}")]
    ServerGoodbye {
        /// Machine-readable reason.
        code: RefuseCode,
        /// The server's explanation.
        message: String,
    },
    /// A `-L` listener could not be bound.
    #[error("cannot listen on {addr} for a local forward: {source}")]
    LocalListen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The connection to the server was lost.
    #[error("connection to the server was lost")]
    ConnectionLost,
    /// The session is closed; nothing more can be asked of it.
    #[error("client session is closed")]
    Closed,
}

impl ClientError {
    /// A failed handshake read or write, named as a TLS problem when it is one
    /// (with TLS 1.3 a refused client certificate only shows at the first read).
    pub(crate) fn handshake(server: &str, source: FrameIoError) -> ClientError {
        if let FrameIoError::Io(e) = &source {
            if let Some(reason) = explain(e, Side::Client) {
                return ClientError::Tls {
                    server: server.to_owned(),
                    reason,
                };
            }
        }
        ClientError::Handshake {
            server: server.to_owned(),
            source,
        }
    }
}

/// Why a visitor could not be connected to the local target (reported to hooks and the server).
#[derive(Debug, Error)]
#[error("connect to {target} failed: {reason}")]
pub struct TargetError {
    /// The tunnel's target.
    pub target: String,
    /// The OS error or timeout.
    pub reason: String,
}
