use thiserror::Error;

/// Why bytes could not be decoded into a frame.
///
/// Every variant means the peer is broken or hostile: the connection (or, for
/// a stream header, the stream) it arrived on must be closed. None of them is
/// recoverable by reading more bytes; "need more bytes" is `Ok(None)` instead.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces more than the receiver allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// A frame with a length of zero has no kind byte.
    #[error("empty frame (length 0)")]
    Empty,
    /// The kind byte names no frame this version knows.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The payload ended before a field did.
    #[error("{frame} frame truncated while reading {field}")]
    Truncated {
        /// Frame being decoded.
        frame: &'static str,
        /// Field that was cut short.
        field: &'static str,
    },
    /// The payload is longer than the frame's fields.
    #[error("{frame} frame has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Frame being decoded.
        frame: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A text field is not UTF-8.
    #[error("{frame} frame: field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Frame being decoded.
        frame: &'static str,
        /// The offending field.
        field: &'static str,
    },
    /// A text field is longer than the protocol allows.
    #[error("{frame} frame: field {field} is {len} bytes, limit {max}")]
    TextTooLong {
        /// Frame being decoded.
        frame: &'static str,
        /// The offending field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A socket address with an address family byte other than 4 or 6.
    #[error("{frame} frame: unknown address family {family}")]
    InvalidAddrFamily {
        /// Frame being decoded.
        frame: &'static str,
        /// The family byte.
        family: u8,
    },
}

/// Error of [`crate::FrameCodec`] when used with `tokio_util::codec::Framed`:
/// either the transport failed or the peer sent a bad frame.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Reading or writing the transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame from peer: {0}")]
    Decode(#[from] DecodeError),
}
