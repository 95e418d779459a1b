//! Reads exactly one frame, never a byte more. Used where raw bytes follow
//! a frame on the same connection (the login before yamux starts, the
//! header before a stream's relayed data), so read-ahead would steal them.

use std::io;

use bytes::BytesMut;
use reitunnel_proto::{DecodeError, Frame, FrameCodec};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameIoError {
    /// The peer closed the connection before a whole frame arrived.
    #[error("connection closed by peer")]
    Closed,
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// The peer sent a malformed frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
}

impl From<io::Error> for FrameIoError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameIoError::Closed
        } else {
            FrameIoError::Io(e)
        }
    }
}

/// Reads one frame of at most `max_frame_len` bytes, exactly.
pub async fn read_frame<R>(io: &mut R, max_frame_len: usize) -> Result<Frame, FrameIoError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame_len,
        }
        .into());
    }
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.extend_from_slice(&prefix);
    buf.resize(4 + len, 0);
    io.read_exact(&mut buf[4..]).await?;
    // The buffer holds a whole frame, so `None` ("need more") cannot happen.
    FrameCodec::new(max_frame_len)
        .decode_frame(&mut buf)?
        .ok_or(FrameIoError::Closed)
}

/// Writes and flushes one frame.
pub async fn write_frame<W>(io: &mut W, frame: &Frame) -> Result<(), FrameIoError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}
