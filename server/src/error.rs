//! The server's typed errors. Session and stream errors are also delivered
//! to hooks through `on_error`, so each names its peer or target.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use reitunnel_hooks::MultiError;
use reitunnel_proto::{CodecError, FrameKind, PreambleError};
use reitunnel_transport::answer::AnswerError;
use reitunnel_transport::stream::OpenError;
use reitunnel_transport::tls::TlsError;
use reitunnel_transport::{FrameIoError, MuxError};

use crate::limits::LimitHit;

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit {} = {} reached", self.name, self.max)
    }
}
use thiserror::Error;

/// Why the server could not start or run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The control port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TLS certificate, key or CA could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A hook's `on_server_start` failed.
    #[error("a hook refused to start the server: {0}")]
    HookStart(#[from] MultiError),
    /// The ban file could not be read (or, when new, written).
    #[error(transparent)]
    BanFile(#[from] crate::BanFileError),
    /// The fleet's store is configured with a URL that cannot work.
    #[error(transparent)]
    Store(#[from] crate::fleet::StoreError),
    /// A hook new in a reload failed its `on_server_start`; nothing changed.
    #[error("a new hook refused to start, so the reload was not applied: {0}")]
    HookReload(MultiError),
}

/// Why a client connection failed before or during its session.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The login did not finish in time (slow or silent peer).
    #[error("login from {peer} timed out after {after:?}")]
    HandshakeTimeout {
        /// The peer.
        peer: SocketAddr,
        /// The deadline.
        after: Duration,
    },
    /// The TLS handshake failed; the text says why in plain words.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        /// The peer.
        peer: SocketAddr,
        /// What went wrong (expired certificate, unknown CA, no TLS at all…).
        reason: String,
    },
    /// A connection was turned away by a server limit.
    #[error("connection from {peer} turned away: {hit}")]
    Limit {
        /// The peer.
        peer: SocketAddr,
        /// Which limit.
        hit: LimitHit,
    },
    /// The client stopped answering heartbeats.
    #[error("client {peer} unresponsive for {after:?} (heartbeat timeout)")]
    HeartbeatTimeout {
        /// The peer.
        peer: SocketAddr,
        /// The configured silence limit.
        after: Duration,
    },
    /// Wrong magic or protocol version.
    #[error("login from {peer}: {source}")]
    Preamble {
        /// The peer.
        peer: SocketAddr,
        /// What was wrong.
        source: PreambleError,
    },
    /// The login frames could not be read or written.
    #[error("login from {peer}: {source}")]
    Login {
        /// The peer.
        peer: SocketAddr,
        /// What failed.
        source: FrameIoError,
    },
    /// The peer sent a frame that does not belong here.
    #[error("{peer} sent a {got:?} frame where {expected} was expected")]
    UnexpectedFrame {
        /// The peer.
        peer: SocketAddr,
        /// What the protocol wanted.
        expected: &'static str,
        /// What came.
        got: FrameKind,
    },
    /// The client did not open its control stream after login.
    #[error("client {peer} did not open its control stream within {after:?}")]
    NoControlStream {
        /// The peer.
        peer: SocketAddr,
        /// The deadline.
        after: Duration,
    },
    /// The multiplexed session broke before the control stream opened
    /// (what followed the login was not valid yamux).
    #[error("client {peer} broke the multiplexed session before opening its control stream")]
    MuxEnded {
        /// The peer.
        peer: SocketAddr,
    },
    /// A malformed control frame.
    #[error("malformed control frame from {peer}: {source}")]
    Control {
        /// The peer.
        peer: SocketAddr,
        /// The decode error.
        source: CodecError,
    },
    /// A connection from an address blocked for failed logins, turned away
    /// at once (before any TLS handshake).
    #[error(
        "connection from {peer} turned away before its handshake: too many failed logins \
         from it (limit failed_logins_per_minute = {per_minute}); blocked for {}s more",
        wait.as_secs() + 1
    )]
    Blocked {
        /// The peer.
        peer: SocketAddr,
        /// The configured limit.
        per_minute: u32,
        /// How long it stays blocked.
        wait: Duration,
    },
    /// A PROXY protocol header was missing, malformed, or came from an
    /// address not in `proxy_protocol_from`.
    #[error(transparent)]
    Proxied(#[from] crate::ProxiedError),
    /// Failures before login of one kind, after the first, since the last
    /// summary (see the server's `pre_login_summary`).
    #[error(
        "{count} more '{kind}' failures before login since the last summary; the last: {last}"
    )]
    Repeated {
        /// Which kind ([`SessionError::kind`]).
        kind: &'static str,
        /// How many.
        count: u64,
        /// The last one's message.
        last: String,
    },
}

impl SessionError {
    /// A short stable name of the variant, e.g. `tls`, for counting and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::HandshakeTimeout { .. } => "handshake_timeout",
            SessionError::Tls { .. } => "tls",
            SessionError::Limit { .. } => "limit",
            SessionError::HeartbeatTimeout { .. } => "heartbeat_timeout",
            SessionError::Preamble { .. } => "preamble",
            SessionError::Login { .. } => "login",
            SessionError::UnexpectedFrame { .. } => "unexpected_frame",
            SessionError::NoControlStream { .. } => "no_control_stream",
            SessionError::MuxEnded { .. } => "mux_ended",
            SessionError::Control { .. } => "control",
            SessionError::Blocked { .. } => "blocked",
            SessionError::Proxied(_) => "proxy_protocol",
            SessionError::Repeated { .. } => "repeated",
        }
    }
}

/// Why a visitor's stream failed.
#[derive(Debug, Error)]
pub enum StreamError {
    /// No yamux stream could be opened to the client.
    #[error("opening a stream to the client failed: {0}")]
    Open(#[from] MuxError),
    /// The stream header or its answer could not be exchanged.
    #[error("stream header exchange failed: {0}")]
    Header(#[from] FrameIoError),
    /// The client did not answer the header in time.
    #[error("client did not answer the stream header within {0:?}")]
    AckTimeout(Duration),
    /// The client could not connect to the tunnel's target.
    #[error("client could not reach target {target}: {message}")]
    TargetRefused {
        /// The tunnel's target.
        target: String,
        /// The client's error.
        message: String,
    },
    /// The client answered with something else than accept/refuse.
    #[error("client answered the stream header with a {0:?} frame")]
    UnexpectedAnswer(FrameKind),
}

/// A stream that could not be opened to the client: the session's or the header's failure.
impl From<OpenError> for StreamError {
    fn from(e: OpenError) -> StreamError {
        match e {
            OpenError::Mux(e) => StreamError::Open(e),
            OpenError::Header(e) => StreamError::Header(e),
        }
    }
}

impl StreamError {
    /// The client's answer to a visitor's stream header, when it was not "accepted".
    pub(crate) fn from_answer(e: AnswerError, target: &str) -> StreamError {
        match e {
            AnswerError::Refused(message) => StreamError::TargetRefused {
                target: target.to_owned(),
                message,
            },
            AnswerError::Unexpected(kind) => StreamError::UnexpectedAnswer(kind),
            AnswerError::Frame(e) => StreamError::Header(e),
            AnswerError::Timeout(wait) => StreamError::AckTimeout(wait),
        }
    }
}
