//! Length-delimited framing in the manner of tokio-util's
//! `LengthDelimitedCodec`: `Ok(None)` means "need more bytes", the length is
//! checked against `max_frame_len` before any buffer grows, and a complete
//! frame is split off without copying the rest.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{CodecError, DecodeError, Frame};

/// Control frames are small; 64 KiB leaves room for long messages and no room for abuse.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

const LEN_PREFIX: usize = 4;

/// Encoder and decoder of [`Frame`]s.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec refusing frames whose length prefix exceeds `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        FrameCodec { max_frame_len }
    }

    /// Sans-IO decode: takes one complete frame off the front of `src`.
    pub fn decode_frame(&self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if src.len() < LEN_PREFIX + len {
            src.reserve(LEN_PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let body = src.split_to(len);
        Frame::decode_body(&body).map(Some)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decode_frame(src)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::{ClientId, FrameKind, RefuseCode, StreamId, Transport, TunnelId};

    fn encoded(frame: &Frame) -> BytesMut {
        let mut b = BytesMut::new();
        frame.encode(&mut b);
        b
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn transport() -> impl Strategy<Value = Transport> {
        prop_oneof![Just(Transport::Tcp), Just(Transport::Udp)]
    }

    fn code() -> impl Strategy<Value = RefuseCode> {
        prop_oneof![
            Just(RefuseCode::Other),
            Just(RefuseCode::AuthFailed),
            Just(RefuseCode::Forbidden),
            Just(RefuseCode::LimitReached),
            Just(RefuseCode::Unavailable),
            Just(RefuseCode::BadRequest),
            Just(RefuseCode::ShuttingDown),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let text = "\\PC{0,40}";
        prop_oneof![
            any::<[u8; 32]>().prop_map(|nonce| Frame::Challenge { nonce }),
            ("[a-z0-9-]{0,64}", any::<[u8; 32]>())
                .prop_map(|(name, proof)| Frame::Login { name, proof }),
            (any::<u64>(), any::<u32>()).prop_map(|(c, h)| Frame::LoginOk {
                client_id: ClientId(c),
                heartbeat_ms: h
            }),
            (code(), text).prop_map(|(code, message)| Frame::LoginRefused { code, message }),
            (any::<u32>(), addr(), text, transport()).prop_map(
                |(request_id, bind, target, transport)| Frame::OpenTunnel {
                    request_id,
                    bind,
                    target,
                    transport,
                }
            ),
            (any::<u32>(), text, transport()).prop_map(|(request_id, target, transport)| {
                Frame::OpenForward {
                    request_id,
                    target,
                    transport,
                }
            }),
            (any::<u32>(), any::<u64>(), addr()).prop_map(|(request_id, t, bound)| {
                Frame::TunnelOpened {
                    request_id,
                    tunnel_id: TunnelId(t),
                    bound,
                }
            }),
            (any::<u32>(), code(), text).prop_map(|(request_id, code, message)| {
                Frame::TunnelRefused {
                    request_id,
                    code,
                    message,
                }
            }),
            any::<u64>().prop_map(|t| Frame::CloseTunnel {
                tunnel_id: TunnelId(t)
            }),
            any::<u64>().prop_map(|seq| Frame::Ping { seq }),
            any::<u64>().prop_map(|seq| Frame::Pong { seq }),
            (any::<u64>(), any::<u64>(), addr()).prop_map(|(t, s, peer)| Frame::StreamHeader {
                tunnel_id: TunnelId(t),
                stream_id: StreamId(s),
                peer
            }),
            Just(Frame::StreamAccepted),
            text.prop_map(|message| Frame::StreamRefused { message }),
            (code(), text).prop_map(|(code, message)| Frame::Goodbye { code, message }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(f in frame()) {
            let mut buf = encoded(&f);
            let back = FrameCodec::default().decode_frame(&mut buf).unwrap();
            prop_assert_eq!(back, Some(f));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn every_truncation_asks_for_more(f in frame(), cut in any::<prop::sample::Index>()) {
            let full = encoded(&f);
            let mut part = BytesMut::from(&full[..cut.index(full.len())]);
            prop_assert_eq!(FrameCodec::default().decode_frame(&mut part), Ok(None));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let codec = FrameCodec::new(1024);
            while let Ok(Some(_)) = codec.decode_frame(&mut buf) {}
        }

        #[test]
        fn frames_stream_back_to_back(fs in prop::collection::vec(frame(), 1..8)) {
            let mut buf = BytesMut::new();
            for f in &fs { f.encode(&mut buf); }
            let codec = FrameCodec::default();
            for f in fs {
                prop_assert_eq!(codec.decode_frame(&mut buf).unwrap(), Some(f));
            }
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        let err = FrameCodec::default().decode_frame(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 65536 bytes"
        );
    }

    #[test]
    fn unknown_kind_and_empty_frame_are_named() {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0xee][..]);
        assert_eq!(
            codec.decode_frame(&mut buf),
            Err(DecodeError::UnknownKind(0xee))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(codec.decode_frame(&mut buf), Err(DecodeError::Empty));
    }

    #[test]
    fn short_payload_names_frame_and_field() {
        // A Ping whose length says 5 (kind + 4 bytes) but seq needs 8.
        let mut buf = BytesMut::from(&[0, 0, 0, 5, FrameKind::Ping as u8, 0, 0, 0, 1][..]);
        let err = FrameCodec::default().decode_frame(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "Ping frame truncated while reading seq");
    }

    #[test]
    fn trailing_bytes_and_bad_utf8_are_refused() {
        let mut buf = encoded(&Frame::Ping { seq: 1 });
        buf[3] += 1;
        buf.extend_from_slice(&[9]);
        assert_eq!(
            FrameCodec::default().decode_frame(&mut buf),
            Err(DecodeError::TrailingBytes {
                frame: "Ping",
                extra: 1
            })
        );
        let mut buf = encoded(&Frame::StreamRefused {
            message: "ab".into(),
        });
        let n = buf.len();
        buf[n - 1] = 0xff;
        assert_eq!(
            FrameCodec::default().decode_frame(&mut buf),
            Err(DecodeError::InvalidUtf8 {
                frame: "StreamRefused",
                field: "message"
            })
        );
    }

    #[test]
    fn overlong_text_is_cut_on_encode_and_still_decodes() {
        let message = "é".repeat(crate::MAX_TEXT_LEN);
        let mut buf = encoded(&Frame::StreamRefused { message });
        match FrameCodec::default().decode_frame(&mut buf).unwrap() {
            Some(Frame::StreamRefused { message }) => {
                assert!(message.len() <= crate::MAX_TEXT_LEN);
                assert!(message.chars().all(|c| c == 'é'));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_address_family_is_named() {
        let mut buf = encoded(&Frame::StreamHeader {
            tunnel_id: TunnelId(1),
            stream_id: StreamId(2),
            peer: "127.0.0.1:80".parse().unwrap(),
        });
        buf[4 + 1 + 16] = 5;
        assert_eq!(
            FrameCodec::default().decode_frame(&mut buf),
            Err(DecodeError::InvalidAddrFamily {
                frame: "StreamHeader",
                family: 5
            })
        );
    }
}
