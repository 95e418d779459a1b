//! Reads exactly one frame, never a byte more. Used where raw bytes follow
//! a frame on the same connection (the login before yamux starts, the
//! header before a stream's relayed data), so read-ahead would steal them.

use std::io;

use bytes::{BufMut, BytesMut};
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
///
/// The buffer grows only as bytes arrive (doubling, like a `Vec`), never to
/// the announced length up front: a peer that sends a 4-byte prefix
/// announcing 64 KiB and then nothing makes us hold a few bytes, not 64 KiB.
/// Thousands of such streams once took a server's memory from 7 MB to
/// 650 MB for 128 KB sent.
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
    let mut buf = BytesMut::with_capacity(4 + len.min(FIRST_READ));
    buf.extend_from_slice(&prefix);
    while buf.len() < 4 + len {
        let missing = 4 + len - buf.len();
        if io.read_buf(&mut (&mut buf).limit(missing)).await? == 0 {
            return Err(FrameIoError::Closed);
        }
    }
    // The buffer holds a whole frame, so `None` ("need more") cannot happen.
    FrameCodec::new(max_frame_len)
        .decode_frame(&mut buf)?
        .ok_or(FrameIoError::Closed)
}

/// What a frame's buffer starts with: enough for every frame but a long
/// message or target in one step.
const FIRST_READ: usize = 256;

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
