//! Public doors into the crate-private handshake, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! server's real code rather than a copy. Not a supported API.

use std::net::SocketAddr;

use reitunnel_proto::auth::{NONCE_LEN, PROOF_LEN};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::SessionError;

/// What a client brought to log in (the crate-private `LoginRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The name it claims.
    pub name: String,
    /// The challenge the server sent.
    pub nonce: [u8; NONCE_LEN],
    /// Its answer to the challenge.
    pub proof: [u8; PROOF_LEN],
}

/// The server's login up to the client's `Login` frame: exchanges
/// preambles, sends a challenge, reads the login.
pub async fn read_login<S>(
    io: &mut S,
    peer: SocketAddr,
    max_frame_len: usize,
) -> Result<Login, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = crate::handshake::read_login(io, peer, max_frame_len).await?;
    Ok(Login {
        name: req.name,
        nonce: req.nonce,
        proof: req.proof,
    })
}

/// The check every client name passes before hooks see it.
pub fn check_name(name: &str) -> Result<(), String> {
    crate::handshake::check_name(name)
}
