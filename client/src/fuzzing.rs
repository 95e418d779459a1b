//! Public doors into the crate-private login, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! client's real code rather than a copy. Not a supported API.

pub use reitunnel_proto::login::LoggedIn;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{ClientConfig, ClientError};

/// The client's login over an established transport: preambles, challenge,
/// login frame, the server's answer.
pub async fn login<S>(io: &mut S, cfg: &ClientConfig) -> Result<LoggedIn, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    crate::login::login(io, cfg).await
}
