//! Hooks that ship with Reitunnel. Each is usable on its own in any chain.

mod counters;
mod log;
mod token_auth;

pub use counters::{Counters, CountersSnapshot};
pub use log::TracingHook;
pub use token_auth::{Secret, TokenAuth};
