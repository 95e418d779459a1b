//! The server's side of the login: [`ServerLogin`] run over the connection,
//! its failures told in the server's errors, and the check of a client's name.

use std::net::SocketAddr;

use reitunnel_proto::auth::new_nonce;
use reitunnel_proto::login::{ClientHello, ServerLogin};
use reitunnel_transport::{run_login, LoginFailure};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::SessionError;

/// Exchanges preambles, sends a challenge and reads the login: everything
/// up to the client's `Login` (or, for another connection of a session,
/// `Join`) frame.
pub async fn read_login<S>(
    io: &mut S,
    peer: SocketAddr,
    max_frame_len: usize,
) -> Result<ClientHello, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let login = ServerLogin::new(new_nonce(), max_frame_len);
    run_login(io, login).await.map_err(|e| match e {
        LoginFailure::Frame(source) => SessionError::Login { peer, source },
        LoginFailure::Preamble(source) => SessionError::Preamble { peer, source },
        LoginFailure::Unexpected { expected, got } => SessionError::UnexpectedFrame {
            peer,
            expected,
            got,
        },
    })
}

/// Client names are ids in logs, metrics labels and audit lines: keep them
/// plain. Every name passes this check before hooks see it.
pub fn check_name(name: &str) -> Result<(), String> {
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
