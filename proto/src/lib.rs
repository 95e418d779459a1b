//! The Reitunnel wire format, sans-IO.
//!
//! A session is one TCP (or TLS) connection. It starts with a fixed
//! [`Preamble`] from each side (magic + protocol version), so a version
//! mismatch is reported before anything else is parsed. Then the server sends
//! a [`Frame::Challenge`], the client answers with [`Frame::Login`] carrying an
//! HMAC proof of its token (see [`auth`]), and the server accepts or refuses;
//! [`login`] holds both sides of that exchange as state machines.
//! After that both sides switch the connection to yamux; the client opens the
//! first yamux stream as the control stream and every later stream carries one
//! visitor connection, introduced by a [`Frame::StreamHeader`].
//!
//! Every frame is `u32 length | u8 kind | payload` (big endian), where the
//! length counts kind and payload and is capped by [`FrameCodec`]'s
//! `max_frame_len`. Decoding never panics and reports typed [`DecodeError`]s.
//!
//! ```
//! use bytes::BytesMut;
//! use reitunnel_proto::{Frame, FrameCodec, DEFAULT_MAX_FRAME_LEN};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME_LEN);
//! let mut wire = BytesMut::new();
//! codec.encode(Frame::Ping { seq: 7 }, &mut wire).unwrap();
//! // u32 length (kind + payload), u8 kind, u64 sequence number.
//! assert_eq!(wire.len(), 4 + 1 + 8);
//! assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::Ping { seq: 7 }));
//! ```

#![forbid(unsafe_code)]

pub mod auth;
mod codec;
mod error;
mod frame;
mod ids;
pub mod login;
mod preamble;
mod wire;

pub use codec::{FrameCodec, DEFAULT_MAX_FRAME_LEN};
pub use error::{CodecError, DecodeError};
pub use frame::{Frame, FrameKind, RefuseCode, Transport};
pub use ids::{ClientId, StreamId, TunnelId};
pub use preamble::{
    Preamble, PreambleError, MAGIC, OLDEST_VERSION, PREAMBLE_LEN, PROTOCOL_VERSION,
};

/// Longest client name accepted on the wire, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest string field (targets, messages) accepted on the wire, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest [`Frame::StreamHeader`] accepted, as a frame length (kind and
/// payload): the largest one, with an IPv6 address, is 36 bytes. A stream's
/// first frame is read with this cap, not `max_frame_len`, so a stream that
/// announces a long frame is refused before anything is held for it.
pub const MAX_STREAM_HEADER_LEN: usize = 64;
