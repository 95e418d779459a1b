//! What server and client share below the protocol logic: the yamux session
//! driver, socket tuning, and exact-length frame I/O for handshakes and
//! stream headers.
//!
//! Kept out of `reitunnel-proto` so that crate stays sans-IO, and out of the
//! server and client crates so neither copies the other.
//!
//! Every task hangs off a [`Closer`] tree (server, session, tunnel, stream),
//! so a close carries its reason down to everything below it:
//!
//! ```
//! use reitunnel_transport::Closer;
//!
//! let session = Closer::root();
//! let tunnel = session.child();
//! session.close("kicked");
//! assert!(tunnel.is_closed());
//! assert_eq!(tunnel.reason(), Some("kicked"));
//! ```

#![forbid(unsafe_code)]

pub mod answer;
mod closer;
pub mod control;
pub mod datagram;
mod dial;
pub mod flows;
mod frame_io;
pub mod heartbeat;
mod login_io;
mod mux;
mod session_io;
mod socket;
pub mod stream;
pub mod tls;

pub use closer::{CloseOnDrop, Closer};
pub use frame_io::{read_frame, write_frame, FrameIoError};
pub use login_io::{run_login, LoginFailure};
pub use mux::{
    cut_by_connection, spawn_mux, spawn_mux_pooled, Inbound, MuxConfig, MuxDriver, MuxError,
    MuxHandle, MuxStream, CLOSE_GRACE, STREAM_CREDIT,
};
pub use socket::{listen, tune, tune_session, Bound};
