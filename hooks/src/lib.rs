//! Reitunnel's hook pipeline.
//!
//! Every client login, tunnel, visitor stream and data chunk passes through
//! an ordered [`HookChain`] of [`Hook`]s that can meter, limit, refuse,
//! throttle or close, in-process and cheaply. The crate stands on its own:
//! embed it in any program that moves bytes between two sockets.
//!
//! ```
//! use std::sync::Arc;
//! use reitunnel_hooks::{builtin::Counters, Hook, HookChain, StreamInfo, Gate, Reason};
//!
//! /// Refuses visitors from outside loopback.
//! struct LoopbackOnly;
//! impl Hook for LoopbackOnly {
//!     fn name(&self) -> &str { "loopback_only" }
//!     fn wants_data(&self) -> bool { false }
//!     fn on_stream_open(&self, s: &StreamInfo) -> Gate {
//!         if s.peer.ip().is_loopback() { Gate::Allow }
//!         else { Gate::Refuse(Reason::forbidden("visitors must be local")) }
//!     }
//! }
//!
//! let counters = Arc::new(Counters::new());
//! let chain = HookChain::builder().hook(LoopbackOnly).shared(counters.clone()).build();
//! assert_eq!(chain.names(), ["loopback_only", "counters"]);
//! ```
//!
//! Gates decide whether something opens and yield an [`Open`] handle whose
//! close event fires exactly once; `on_data` runs per chunk from the
//! [`relay`](relay::relay) (feature `tokio`); observers always run.

#![forbid(unsafe_code)]

pub mod authorize;
pub mod builtin;
mod chain;
#[cfg(feature = "tokio")]
pub mod datagram;
mod error;
pub mod events;
mod hook;
mod info;
pub mod keyed;
mod open;
pub mod ports;
#[cfg(feature = "tokio")]
pub mod relay;
mod secret;
pub mod tally;
#[cfg(feature = "tokio")]
pub mod testing;
mod verdict;

pub use chain::{ErrorStrategy, HookChain, HookChainBuilder, Refusal, SERVER};
pub use error::{HookError, HookErrorKind, MultiError};
pub use hook::{BoxError, Hook, HookResult, StreamState};
pub use info::{
    AdminAction, ChunkTime, ClientId, ClientInfo, DataEvent, Direction, ErrorEvent, Login, Meter,
    RefuseCode, Rejection, Scope, ServerInfo, StateRef, StreamEnd, StreamId, StreamInfo, Totals,
    Transport, TunnelId, TunnelInfo, TunnelKind,
};
pub use open::{Open, Subject};
pub use secret::Secret;
pub use verdict::{CloseReason, Gate, Reason, Verdict};
