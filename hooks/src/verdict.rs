//! What hooks answer, and why things close: [`Gate`] for the gates,
//! [`Verdict`] for the data path, the [`Reason`] either carries to the peer,
//! and the [`CloseReason`] every close event brings.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use reitunnel_proto::RefuseCode;

/// A decision's reason: a code for machines, a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Sent to the peer with refusals.
    pub code: RefuseCode,
    /// Printed by the peer and logged.
    pub message: Cow<'static, str>,
}

impl Reason {
    /// A reason with any code.
    pub fn new(code: RefuseCode, message: impl Into<Cow<'static, str>>) -> Self {
        Reason {
            code,
            message: message.into(),
        }
    }

    /// Policy forbids it.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Reason::new(RefuseCode::Forbidden, message)
    }

    /// Authentication failed.
    pub fn auth_failed(message: impl Into<Cow<'static, str>>) -> Self {
        Reason::new(RefuseCode::AuthFailed, message)
    }

    /// A limit was reached.
    pub fn limit_reached(message: impl Into<Cow<'static, str>>) -> Self {
        Reason::new(RefuseCode::LimitReached, message)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A gate's answer: whether a client may log in, a tunnel open, a visitor
/// come in. The first hook to refuse decides, and the peer is told why.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Let it in, as far as this hook is concerned.
    Allow,
    /// Refuse it, saying why.
    Refuse(Reason),
}

/// A data hook's answer for one chunk.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the chunk.
    Continue,
    /// Forward this chunk only after waiting this long. The relay waits; the hook never sleeps.
    Throttle(Duration),
    /// Close the stream now; the chunk is not forwarded.
    Close(Reason),
}

/// Why something closed. Delivered with every close event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Orderly end: both sides finished (stream), the client closed it
    /// (tunnel), the client logged out (client, as the server sees it).
    Finished,
    /// A hook returned `Close`.
    Hook(Reason),
    /// The client's connection to the server was lost.
    ConnectionLost,
    /// The server is shutting down; or, in the client's own hooks, the
    /// client is (what its shutdown cuts, its tunnels and itself).
    Shutdown,
    /// The service behind the tunnel could not be reached.
    TargetUnreachable(String),
    /// The peer stayed silent past a deadline (missed heartbeats, an idle limit).
    Timeout(String),
    /// An I/O or protocol error.
    Error(String),
    /// The task owning it ended without closing it explicitly (cancelled or panicked).
    Aborted,
    /// An operator closed it through the admin interface (what they did, in words).
    Admin(String),
    /// The same client name logged in again elsewhere in the fleet, and the
    /// new session took its place (where, in words).
    Replaced(String),
}

impl CloseReason {
    /// An orderly end (the peer said goodbye): streams cut by it may first
    /// land the bytes already on the wire behind that goodbye.
    pub fn is_orderly(&self) -> bool {
        matches!(self, CloseReason::Finished)
    }

    /// `ConnectionLost` in place of `Finished` or an I/O error for a stream
    /// whose session connection ended under it (`cut`): its end was not the
    /// peer's, and a write that failed failed for the lost connection.
    pub fn unless_cut(self, cut: bool) -> CloseReason {
        match self {
            CloseReason::Finished | CloseReason::Error(_) if cut => CloseReason::ConnectionLost,
            other => other,
        }
    }

    /// A short stable label (`finished`, `hook`, …) for metrics and audit logs.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Finished => "finished",
            CloseReason::Hook(_) => "hook",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::Shutdown => "shutdown",
            CloseReason::TargetUnreachable(_) => "target_unreachable",
            CloseReason::Timeout(_) => "timeout",
            CloseReason::Error(_) => "error",
            CloseReason::Aborted => "aborted",
            CloseReason::Admin(_) => "admin",
            CloseReason::Replaced(_) => "replaced",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Hook(r) => write!(f, "closed by hook: {r}"),
            CloseReason::TargetUnreachable(e) => write!(f, "target unreachable: {e}"),
            CloseReason::Timeout(e) => write!(f, "timeout: {e}"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
            CloseReason::Admin(e) => write!(f, "closed by an operator: {e}"),
            CloseReason::Replaced(e) => write!(f, "replaced: {e}"),
            other => f.write_str(other.label()),
        }
    }
}
