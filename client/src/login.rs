//! The client's side of the login: [`ClientLogin`] run over the connection,
//! its outcome told in the client's errors.

use reitunnel_proto::login::{ClientLogin, LoggedIn, ServerAnswer};
use reitunnel_proto::Frame;
use reitunnel_transport::{run_login, LoginFailure};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{ClientConfig, ClientError};

/// The client's login over an established transport: preambles, challenge,
/// login frame, the server's answer. `server` names the server in errors.
pub async fn login<S>(io: &mut S, cfg: &ClientConfig, server: &str) -> Result<LoggedIn, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let login = ClientLogin::new(&cfg.name, cfg.token.expose().as_bytes(), cfg.max_frame_len);
    hello(io, login, server).await
}

/// Runs a login (or a join: see `lanes.rs`) and tells its outcome as the
/// client's errors.
pub(crate) async fn hello<S>(
    io: &mut S,
    machine: ClientLogin<'_>,
    server: &str,
) -> Result<LoggedIn, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match run_login(io, machine).await {
        Ok(ServerAnswer::Welcome(welcome)) => Ok(welcome),
        Ok(ServerAnswer::Refused { code, message }) => {
            Err(ClientError::LoginRefused { code, message })
        }
        Err(LoginFailure::Frame(source)) => Err(ClientError::handshake(server, source)),
        Err(LoginFailure::Preamble(source)) => Err(ClientError::Preamble {
            server: server.to_owned(),
            source,
        }),
        Err(LoginFailure::Unexpected { expected, got }) => {
            Err(ClientError::UnexpectedFrame { expected, got })
        }
    }
}

pub(crate) fn unexpected(expected: &'static str, got: &Frame) -> ClientError {
    ClientError::UnexpectedFrame {
        expected,
        got: got.kind(),
    }
}
