//! Sans-IO checks shared by the fuzz targets and by
//! `proto/tests/fuzz_corpus.rs`, which includes this file with `#[path]`.
//! One copy of the checks means a kept corpus input replayed by
//! `cargo test` meets exactly the decoding and assertions the fuzzer ran.
//!
//! Only `reitunnel_proto`, `bytes` and `tokio_util` may be used here: they
//! are what proto's integration tests can already link.

use std::iter;

use bytes::BytesMut;
use reitunnel_proto::auth::{NONCE_LEN, PROOF_LEN};
use reitunnel_proto::{
    ClientId, CodecError, DecodeError, Frame, FrameCodec, FrameKind, Preamble, PreambleError,
    RefuseCode, DEFAULT_MAX_FRAME_LEN, PREAMBLE_LEN,
};
use tokio_util::codec::{Decoder, Encoder};

/// Limits the `frame_decode` target picks from with its first byte: tiny
/// ones make "frame too large" reachable by short inputs, the last is what
/// servers and clients use by default.
pub const FRAME_LIMITS: [usize; 8] = [0, 1, 9, 40, 100, 1100, 4096, DEFAULT_MAX_FRAME_LEN];

/// Limit of the handshake and stream-header targets: the production default.
pub const MAX_FRAME_LEN: usize = DEFAULT_MAX_FRAME_LEN;

/// Re-encodes a decoded frame and decodes that again. A frame that decoded
/// from `wire_len` bytes must re-encode to as many bytes (the format has no
/// optional or padded fields) and decode back to itself: otherwise two peers
/// would disagree about what was said.
pub fn assert_round_trips(frame: &Frame, wire_len: usize) {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(frame.clone(), &mut buf)
        .expect("encoding a frame cannot fail");
    assert_eq!(
        buf.len(),
        wire_len,
        "{frame:?} decoded from {wire_len} bytes but re-encodes to {}",
        buf.len()
    );
    match codec.decode(&mut buf) {
        Ok(Some(again)) => assert_eq!(&again, frame, "re-encoded frame decodes differently"),
        other => panic!("re-encoded {frame:?} does not decode: {other:?}"),
    }
    assert!(buf.is_empty(), "re-encoded {frame:?} leaves bytes behind");
}

/// What a byte stream decodes to: its frames in order, then how it ended.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Every frame decoded before the end.
    pub frames: Vec<Frame>,
    /// Why decoding stopped.
    pub end: End,
}

/// How decoding a stream ended.
#[derive(Debug, PartialEq, Eq, Default)]
pub enum End {
    /// Every byte belonged to a whole frame.
    #[default]
    Clean,
    /// This many bytes of an unfinished frame were left at end of input.
    Partial(usize),
    /// A frame was malformed; a peer would close the connection here.
    Invalid(DecodeError),
}

/// The `frame_decode` target. Input: one header byte, then up to 31 chunk
/// sizes, then the byte stream. The low 3 header bits pick the frame limit
/// from [`FRAME_LIMITS`], the high 5 how many chunk sizes follow. The stream
/// is fed to [`FrameCodec`] through tokio-util's `Decoder` in those chunks
/// (the rest in one last chunk), as `Framed` would when reads return them,
/// and must decode exactly as when fed whole.
pub fn frame_decode(data: &[u8]) -> Decoded {
    let Some((&head, rest)) = data.split_first() else {
        return Decoded::default();
    };
    let max = FRAME_LIMITS[usize::from(head & 7)];
    let (sizes, stream) = rest.split_at(usize::from(head >> 3).min(rest.len()));
    let chunked = decode_in_chunks(max, sizes, stream);
    let whole = decode_in_chunks(max, &[], stream);
    assert_eq!(
        chunked, whole,
        "how reads split the input changed what it decodes to"
    );
    chunked
}

fn decode_in_chunks(max: usize, sizes: &[u8], stream: &[u8]) -> Decoded {
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let chunks = sizes
        .iter()
        .map(|&s| usize::from(s))
        .chain(iter::once(usize::MAX));
    for size in chunks {
        let take = size.min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + take]);
        fed += take;
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    assert!(used <= 4 + max, "a {used}-byte frame got past limit {max}");
                    assert_round_trips(&frame, used);
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "\"need more bytes\" consumed bytes");
                    break;
                }
                Err(CodecError::Decode(e)) => {
                    return Decoded {
                        frames,
                        end: End::Invalid(e),
                    }
                }
                Err(CodecError::Io(e)) => panic!("decoding from memory gave an i/o error: {e}"),
            }
        }
    }
    if buf.is_empty() {
        return Decoded {
            frames,
            end: End::Clean,
        };
    }
    // At end of input a half frame must be reported, not completed or dropped.
    let left = buf.len();
    match codec.decode_eof(&mut buf) {
        Err(CodecError::Io(_)) => Decoded {
            frames,
            end: End::Partial(left),
        },
        other => panic!("decode_eof on {left} leftover bytes gave {other:?}"),
    }
}

/// What reading exactly one frame off the front of some bytes gives: the
/// model `reitunnel_transport::read_frame` must agree with, since it decodes
/// the same format with exact reads instead of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum OneFrame {
    /// A frame, and how many bytes it took (what follows is not the frame's).
    Frame(Frame, usize),
    /// The input ended before a whole frame.
    Closed,
    /// The frame is malformed.
    Invalid(DecodeError),
}

/// Decodes the first frame of `data` with the buffered codec.
pub fn one_frame(data: &[u8], max: usize) -> OneFrame {
    let mut buf = BytesMut::from(data);
    match FrameCodec::new(max).decode_frame(&mut buf) {
        Ok(Some(frame)) => {
            let used = data.len() - buf.len();
            assert_round_trips(&frame, used);
            OneFrame::Frame(frame, used)
        }
        Ok(None) => OneFrame::Closed,
        Err(e) => OneFrame::Invalid(e),
    }
}

/// What the server's login must make of `data`, everything a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A login frame, as sent.
    Login {
        /// The client's name.
        name: String,
        /// Its proof.
        proof: [u8; PROOF_LEN],
    },
    /// A join frame, as sent, after a version 2 preamble.
    Join {
        /// The session it names.
        client_id: ClientId,
        /// Its proof.
        proof: [u8; PROOF_LEN],
    },
    /// The client closed before a whole preamble or frame.
    Closed,
    /// Wrong magic or version.
    BadPreamble(PreambleError),
    /// The first frame is malformed.
    Invalid(DecodeError),
    /// The first frame is well formed but not a login (nor a join).
    Unexpected(FrameKind),
}

/// The `server_handshake` target's model: preamble, then one frame.
pub fn expected_login(data: &[u8], max: usize) -> LoginOutcome {
    let Some((preamble, rest)) = data.split_first_chunk::<PREAMBLE_LEN>() else {
        return LoginOutcome::Closed;
    };
    let version = match Preamble::decode_and_check(*preamble) {
        Ok(preamble) => preamble.version,
        Err(e) => return LoginOutcome::BadPreamble(e),
    };
    match one_frame(rest, max) {
        OneFrame::Frame(Frame::Login { name, proof }, _) => LoginOutcome::Login { name, proof },
        OneFrame::Frame(Frame::Join { client_id, proof }, _) if version >= 2 => {
            LoginOutcome::Join { client_id, proof }
        }
        OneFrame::Frame(other, _) => LoginOutcome::Unexpected(other.kind()),
        OneFrame::Closed => LoginOutcome::Closed,
        OneFrame::Invalid(e) => LoginOutcome::Invalid(e),
    }
}

/// What the client's login must make of `data`, everything a server sent.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientLoginOutcome {
    /// Challenge, then `LoginOk`.
    LoggedIn {
        /// The challenge's nonce, which the client's proof must cover.
        nonce: [u8; NONCE_LEN],
        /// From `LoginOk`.
        client_id: ClientId,
        /// From `LoginOk`.
        heartbeat_ms: u32,
        /// From `Lanes` (version 2 servers).
        lanes: Option<u16>,
    },
    /// `LoginRefused`, after the challenge or in its place.
    Refused {
        /// From `LoginRefused`.
        code: RefuseCode,
        /// From `LoginRefused`.
        message: String,
    },
    /// The server closed before a whole preamble or frame.
    Closed,
    /// Wrong magic or version.
    BadPreamble(PreambleError),
    /// A frame is malformed.
    Invalid(DecodeError),
    /// A well-formed frame where another kind belongs.
    Unexpected {
        /// What the client waited for.
        expected: &'static str,
        /// What came.
        got: FrameKind,
    },
}

/// The `client_handshake` target's model: preamble, challenge, answer.
pub fn expected_client_login(data: &[u8], max: usize) -> ClientLoginOutcome {
    use ClientLoginOutcome as Out;
    let Some((preamble, rest)) = data.split_first_chunk::<PREAMBLE_LEN>() else {
        return Out::Closed;
    };
    let version = match Preamble::decode_and_check(*preamble) {
        Ok(preamble) => preamble.version,
        Err(e) => return Out::BadPreamble(e),
    };
    let (nonce, rest) = match one_frame(rest, max) {
        OneFrame::Frame(Frame::Challenge { nonce }, used) => (nonce, &rest[used..]),
        // A server refuses a blocked address in the challenge's place.
        OneFrame::Frame(Frame::LoginRefused { code, message }, _) => {
            return Out::Refused { code, message }
        }
        OneFrame::Frame(other, _) => {
            return Out::Unexpected {
                expected: "Challenge",
                got: other.kind(),
            }
        }
        OneFrame::Closed => return Out::Closed,
        OneFrame::Invalid(e) => return Out::Invalid(e),
    };
    let (client_id, heartbeat_ms, rest) = match one_frame(rest, max) {
        OneFrame::Frame(
            Frame::LoginOk {
                client_id,
                heartbeat_ms,
            },
            used,
        ) => (client_id, heartbeat_ms, &rest[used..]),
        OneFrame::Frame(Frame::LoginRefused { code, message }, _) => {
            return Out::Refused { code, message }
        }
        OneFrame::Frame(other, _) => {
            return Out::Unexpected {
                expected: "LoginOk",
                got: other.kind(),
            }
        }
        OneFrame::Closed => return Out::Closed,
        OneFrame::Invalid(e) => return Out::Invalid(e),
    };
    if version < 2 {
        return Out::LoggedIn {
            nonce,
            client_id,
            heartbeat_ms,
            lanes: None,
        };
    }
    match one_frame(rest, max) {
        OneFrame::Frame(Frame::Lanes { max, .. }, _) => Out::LoggedIn {
            nonce,
            client_id,
            heartbeat_ms,
            lanes: Some(max),
        },
        OneFrame::Frame(other, _) => Out::Unexpected {
            expected: "Lanes",
            got: other.kind(),
        },
        OneFrame::Closed => Out::Closed,
        OneFrame::Invalid(e) => Out::Invalid(e),
    }
}
