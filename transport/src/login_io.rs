//! Drives one side of the login ([`reitunnel_proto::login`]) over a
//! connection: writes what the machine sends, reads exactly what it asks
//! for, so the bytes after the login are left to yamux.

use reitunnel_proto::login::{Handshake, LoginError, Step};
use reitunnel_proto::{FrameKind, PreambleError};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::FrameIoError;

/// Why a login over a connection failed.
#[derive(Debug, Error)]
pub enum LoginFailure {
    /// The connection closed or failed, or a frame was malformed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// The peer's preamble is wrong.
    #[error(transparent)]
    Preamble(PreambleError),
    /// A well-formed frame where another kind belongs.
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        /// The frame the login was waiting for.
        expected: &'static str,
        /// What came.
        got: FrameKind,
    },
}

impl From<LoginError> for LoginFailure {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Preamble(e) => LoginFailure::Preamble(e),
            LoginError::Decode(e) => LoginFailure::Frame(FrameIoError::Decode(e)),
            LoginError::Unexpected { expected, got } => LoginFailure::Unexpected { expected, got },
        }
    }
}

impl From<std::io::Error> for LoginFailure {
    fn from(e: std::io::Error) -> Self {
        LoginFailure::Frame(e.into())
    }
}

/// Runs `login` over `io` to its end. Timeouts are the caller's: wrap this
/// in one.
pub async fn run_login<S, H>(io: &mut S, mut login: H) -> Result<H::Done, LoginFailure>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    H: Handshake,
{
    let mut buf = Vec::new();
    loop {
        match login.advance(&buf)? {
            Step::Send(bytes) => {
                io.write_all(&bytes).await?;
                io.flush().await?;
                buf.clear();
            }
            Step::Receive(n) => {
                buf.resize(n, 0);
                io.read_exact(&mut buf).await?;
            }
            Step::Done(done) => return Ok(done),
        }
    }
}
