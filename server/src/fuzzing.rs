//! Public doors into the crate-private handshake, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! server's real code rather than a copy. Not a supported API.

use std::net::SocketAddr;

pub use reitunnel_proto::login::LoginRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::SessionError;

/// The server's login up to the client's `Login` frame: exchanges
/// preambles, sends a challenge, reads the login.
pub async fn read_login<S>(
    io: &mut S,
    peer: SocketAddr,
    max_frame_len: usize,
) -> Result<LoginRequest, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    crate::handshake::read_login(io, peer, max_frame_len).await
}

/// The check every client name passes before hooks see it.
pub fn check_name(name: &str) -> Result<(), String> {
    crate::handshake::check_name(name)
}
