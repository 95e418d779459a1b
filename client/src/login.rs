//! The client's side of the login.

use reitunnel_proto::auth::{proof, NONCE_LEN, PROOF_LEN};
use reitunnel_proto::{ClientId, Frame, Preamble, PREAMBLE_LEN};
use reitunnel_transport::{read_frame, write_frame, FrameIoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ClientConfig, ClientError};

/// What a successful login established.
pub(crate) struct LoggedIn {
    pub id: ClientId,
    /// The server's heartbeat interval (0: none).
    pub heartbeat_ms: u32,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

pub(crate) async fn login<S>(tcp: &mut S, cfg: &ClientConfig) -> Result<LoggedIn, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = || cfg.server.clone();
    let hs = |source: FrameIoError| ClientError::handshake(&cfg.server, source);
    let io = |e: std::io::Error| hs(FrameIoError::from(e));
    tcp.write_all(&Preamble::CURRENT.encode())
        .await
        .map_err(io)?;
    let mut theirs = [0u8; PREAMBLE_LEN];
    tcp.read_exact(&mut theirs).await.map_err(io)?;
    Preamble::decode_and_check(theirs).map_err(|source| ClientError::Preamble {
        server: server(),
        source,
    })?;
    let nonce = match read_frame(tcp, cfg.max_frame_len).await.map_err(hs)? {
        Frame::Challenge { nonce } => nonce,
        // A server may refuse before the challenge (an address it blocks).
        Frame::LoginRefused { code, message } => {
            return Err(ClientError::LoginRefused { code, message })
        }
        other => return Err(unexpected("Challenge", &other)),
    };
    let proof = proof(cfg.token.expose().as_bytes(), &nonce, &cfg.name);
    let login = Frame::Login {
        name: cfg.name.clone(),
        proof,
    };
    write_frame(tcp, &login).await.map_err(hs)?;
    match read_frame(tcp, cfg.max_frame_len).await.map_err(hs)? {
        Frame::LoginOk {
            client_id,
            heartbeat_ms,
        } => Ok(LoggedIn {
            id: client_id,
            heartbeat_ms,
            nonce,
            proof,
        }),
        Frame::LoginRefused { code, message } => Err(ClientError::LoginRefused { code, message }),
        other => Err(unexpected("LoginOk", &other)),
    }
}

pub(crate) fn unexpected(expected: &'static str, got: &Frame) -> ClientError {
    ClientError::UnexpectedFrame {
        expected,
        got: got.kind(),
    }
}
