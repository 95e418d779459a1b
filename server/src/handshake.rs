//! The server's side of the login: preambles, challenge, login frame.

use std::net::SocketAddr;

use reitunnel_proto::auth::{new_nonce, NONCE_LEN, PROOF_LEN};
use reitunnel_proto::{Frame, Preamble, PREAMBLE_LEN};
use reitunnel_transport::{read_frame, write_frame, FrameIoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::SessionError;

/// What a client brought to log in.
pub(crate) struct LoginRequest {
    pub name: String,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

/// Exchanges preambles, sends a challenge and reads the login. Our preamble
/// goes out even when the client's is wrong, so the client can say which
/// version the server speaks.
pub(crate) async fn read_login<S>(
    io: &mut S,
    peer: SocketAddr,
    max_frame_len: usize,
) -> Result<LoginRequest, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_err = |e: std::io::Error| SessionError::Login {
        peer,
        source: FrameIoError::from(e),
    };
    let mut theirs = [0u8; PREAMBLE_LEN];
    io.read_exact(&mut theirs).await.map_err(io_err)?;
    io.write_all(&Preamble::CURRENT.encode())
        .await
        .map_err(io_err)?;
    Preamble::decode_and_check(theirs).map_err(|source| SessionError::Preamble { peer, source })?;

    let nonce = new_nonce();
    let login_err = |source| SessionError::Login { peer, source };
    write_frame(io, &Frame::Challenge { nonce })
        .await
        .map_err(login_err)?;
    match read_frame(io, max_frame_len).await.map_err(login_err)? {
        Frame::Login { name, proof } => Ok(LoginRequest { name, nonce, proof }),
        other => Err(SessionError::UnexpectedFrame {
            peer,
            expected: "Login",
            got: other.kind(),
        }),
    }
}

/// Client names are ids in logs, metrics labels and audit lines: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("client name is empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "client name {name:?} contains {c:?}; use letters, digits and . _ - @"
        ));
    }
    Ok(())
}
