use std::io;
use std::time::Duration;

use reitunnel_proto::{FrameKind, PreambleError, RefuseCode};
use reitunnel_transport::tls::{explain, Side, TlsError};
use reitunnel_transport::FrameIoError;
use thiserror::Error;

use crate::servers::ServerListError;

/// Why the client could not log in, open a tunnel, or stay connected.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server list is malformed (`--server`).
    #[error(transparent)]
    ServerList(#[from] ServerListError),
    /// A server's name could not be resolved, or resolves to no address.
    #[error("cannot resolve server {server}: {source}")]
    Resolve {
        /// The entry of the server list.
        server: String,
        /// The resolver's error.
        source: io::Error,
    },
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
    /// The server refused the login: for good (wrong token, a ban or other
    /// policy) or for now (a limit, the server full or shutting down); see
    /// [`ClientError::is_final`].
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
    /// Whether logging in again cannot help: the server refused the login
    /// for good, or the server list or the TLS settings are unusable. A
    /// login refused for now ([`ClientError::is_temporary_refusal`]) and
    /// every failure of the connection itself are not final.
    pub fn is_final(&self) -> bool {
        match self {
            ClientError::LoginRefused { .. } => !self.is_temporary_refusal(),
            ClientError::TlsSettings(_) | ClientError::ServerList(_) => true,
            _ => false,
        }
    }

    /// Whether another server of the list may do better within the same
    /// login: this one could not be resolved, reached, or spoken to (no
    /// answer in time, TLS failed, something else answered, the
    /// connection dropped). A refusal is an answer and is not: the fleet
    /// shares its tokens and bans, and asking every node in a row would
    /// only multiply the refusals.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(
            self,
            ClientError::Resolve { .. }
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. }
                | ClientError::Tls { .. }
                | ClientError::Preamble { .. }
                | ClientError::Handshake { .. }
                | ClientError::UnexpectedFrame { .. }
                | ClientError::ConnectionLost
        )
    }

    /// A login the server refused for a reason that passes: a limit
    /// reached (too many clients, too many failed logins from this address,
    /// a rate), something unavailable (the server full, an authorization
    /// service down) or the server shutting down. The code decides, not the
    /// message: a wrong credential, a ban or another policy, a malformed
    /// login, and a code this client does not know (a newer server's) stay
    /// final, since retrying them would only knock on a closed door.
    pub fn is_temporary_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::LoginRefused {
                code: RefuseCode::LimitReached | RefuseCode::Unavailable | RefuseCode::ShuttingDown,
                ..
            }
        )
    }

    /// How long the server asked this client to wait before logging in
    /// again, if it did: a server that blocks an address for failed logins
    /// says `retry in Ns`. The hint is read from the message because the
    /// `LoginRefused` frame has no field for it, and adding one would make
    /// every older client fail to decode the refusal (decoders refuse
    /// trailing bytes); the wording is what every server version sends.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::LoginRefused { message, .. } if self.is_temporary_refusal() => {
                retry_hint(message)
            }
            _ => None,
        }
    }

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

/// The `N` of the last `retry in Ns` in `message`.
fn retry_hint(message: &str) -> Option<Duration> {
    let (_, after) = message.rsplit_once("retry in ")?;
    let (secs, _) = after.split_once('s')?;
    secs.parse().ok().map(Duration::from_secs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: RefuseCode, message: &str) -> ClientError {
        ClientError::LoginRefused {
            code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn refusals_that_pass_are_not_final() {
        for code in [
            RefuseCode::LimitReached,
            RefuseCode::Unavailable,
            RefuseCode::ShuttingDown,
        ] {
            let e = refused(code, "later");
            assert!(e.is_temporary_refusal() && !e.is_final(), "{code:?}");
        }
        for code in [
            RefuseCode::AuthFailed,
            RefuseCode::Forbidden,
            RefuseCode::BadRequest,
            RefuseCode::Other,
        ] {
            let e = refused(code, "never");
            assert!(!e.is_temporary_refusal() && e.is_final(), "{code:?}");
        }
        assert!(!ClientError::ConnectionLost.is_final());
    }

    #[test]
    fn the_servers_retry_hint_is_read() {
        let blocked = "too many failed logins from 127.0.0.1 \
                       (limit failed_logins_per_minute = 10); retry in 6s";
        assert_eq!(
            refused(RefuseCode::LimitReached, blocked).retry_after(),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            refused(RefuseCode::Unavailable, "server is full").retry_after(),
            None
        );
        assert_eq!(
            refused(RefuseCode::LimitReached, "retry in a while").retry_after(),
            None
        );
        // A final refusal has no retry, whatever its words.
        assert_eq!(
            refused(RefuseCode::Forbidden, "banned; retry in 6s").retry_after(),
            None
        );
    }
}
