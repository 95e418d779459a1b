//! Public doors into the crate-private login, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! client's real code rather than a copy. Not a supported API.

use reitunnel_proto::auth::{NONCE_LEN, PROOF_LEN};
use reitunnel_proto::ClientId;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{ClientConfig, ClientError};

/// What a successful login established (the crate-private `LoggedIn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The id the server gave this session.
    pub id: ClientId,
    /// The server's heartbeat interval (0: none).
    pub heartbeat_ms: u32,
    /// The server's challenge.
    pub nonce: [u8; NONCE_LEN],
    /// The proof the client sent.
    pub proof: [u8; PROOF_LEN],
}

/// The client's login over an established transport: preambles, challenge,
/// login frame, the server's answer.
pub async fn login<S>(io: &mut S, cfg: &ClientConfig) -> Result<LoggedIn, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let done = crate::login::login(io, cfg).await?;
    Ok(LoggedIn {
        id: done.id,
        heartbeat_ms: done.heartbeat_ms,
        nonce: done.nonce,
        proof: done.proof,
    })
}
