//! The frames, one variant per message. Field layouts are documented on each
//! variant; integers are big endian, text is `u16 len | UTF-8`, addresses are
//! `u8 family | ip | u16 port`.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};

use crate::auth::{LANE_KEY_LEN, NONCE_LEN, PROOF_LEN};
use crate::wire::{put_addr, put_text, Reader};
use crate::{ClientId, DecodeError, StreamId, TunnelId, MAX_NAME_LEN, MAX_TEXT_LEN};

/// Declares `FrameKind` with its byte values, the byte lookup and the names
/// in one list, so a new frame kind cannot be added to one and not the others.
macro_rules! frame_kinds {
    ($($kind:ident = $byte:literal,)*) => {
        /// The kind byte of each frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        #[allow(missing_docs)] // each kind is documented on the `Frame` variant of the same name
        pub enum FrameKind {
            $($kind = $byte,)*
        }

        impl FrameKind {
            /// The kind for a byte, or `None` for a byte no frame uses.
            pub fn from_u8(b: u8) -> Option<FrameKind> {
                match b {
                    $($byte => Some(FrameKind::$kind),)*
                    _ => None,
                }
            }

            fn name(self) -> &'static str {
                match self {
                    $(FrameKind::$kind => stringify!($kind),)*
                }
            }
        }
    };
}

frame_kinds! {
    Challenge = 1,
    Login = 2,
    LoginOk = 3,
    LoginRefused = 4,
    OpenTunnel = 5,
    TunnelOpened = 6,
    TunnelRefused = 7,
    CloseTunnel = 8,
    Ping = 9,
    Pong = 10,
    StreamHeader = 11,
    StreamAccepted = 12,
    StreamRefused = 13,
    Goodbye = 14,
    OpenForward = 15,
    OpenUdpTunnel = 16,
    OpenUdpForward = 17,
    Lanes = 18,
    Join = 19,
}

/// What a tunnel carries: TCP connections, or UDP datagrams grouped into
/// flows (one per visitor address), each flow a stream whose datagrams
/// travel as `u16 length | payload`. On the wire it is the kind of the
/// request frame: `OpenTunnel`/`OpenForward` for TCP, `OpenUdpTunnel`/
/// `OpenUdpForward` (same payloads) for UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Byte streams.
    #[default]
    Tcp,
    /// Datagrams.
    Udp,
}

impl Transport {
    /// `"tcp"` or `"udp"`, for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why something was refused, so the other side can react without parsing
/// the human-readable message. Unknown codes decode as [`RefuseCode::Other`]
/// so a newer peer's codes never break an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RefuseCode {
    /// Anything else; read the message.
    Other = 0,
    /// Login proof did not verify (wrong token or unknown client).
    AuthFailed = 1,
    /// Policy forbids it (port outside the allow-list, hook rejected).
    Forbidden = 2,
    /// A configured limit was reached.
    LimitReached = 3,
    /// The resource is not available (port in use, target unreachable).
    Unavailable = 4,
    /// The request was malformed.
    BadRequest = 5,
    /// The server is shutting down.
    ShuttingDown = 6,
}

impl RefuseCode {
    /// Every code, in the order of their numbers.
    pub const ALL: [RefuseCode; 7] = [
        RefuseCode::Other,
        RefuseCode::AuthFailed,
        RefuseCode::Forbidden,
        RefuseCode::LimitReached,
        RefuseCode::Unavailable,
        RefuseCode::BadRequest,
        RefuseCode::ShuttingDown,
    ];

    /// A short stable name (`auth_failed`, `limit_reached`, …), for metric
    /// names and tags.
    pub fn label(self) -> &'static str {
        match self {
            RefuseCode::Other => "other",
            RefuseCode::AuthFailed => "auth_failed",
            RefuseCode::Forbidden => "forbidden",
            RefuseCode::LimitReached => "limit_reached",
            RefuseCode::Unavailable => "unavailable",
            RefuseCode::BadRequest => "bad_request",
            RefuseCode::ShuttingDown => "shutting_down",
        }
    }

    fn from_u8(b: u8) -> RefuseCode {
        match b {
            1 => RefuseCode::AuthFailed,
            2 => RefuseCode::Forbidden,
            3 => RefuseCode::LimitReached,
            4 => RefuseCode::Unavailable,
            5 => RefuseCode::BadRequest,
            6 => RefuseCode::ShuttingDown,
            _ => RefuseCode::Other,
        }
    }
}

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Server → client after the preambles: `nonce[32]`.
    Challenge {
        /// Fresh random bytes the login proof must cover.
        nonce: [u8; NONCE_LEN],
    },
    /// Client → server: `name: text | proof[32]`.
    Login {
        /// The client's self-chosen name (at most [`MAX_NAME_LEN`] bytes).
        name: String,
        /// `auth::proof(token, nonce, name)`.
        proof: [u8; PROOF_LEN],
    },
    /// Server → client: `client_id: u64 | heartbeat_ms: u32`.
    LoginOk {
        /// The id the server's hooks know this session by.
        client_id: ClientId,
        /// How often the server expects a ping; 0 = no heartbeats.
        heartbeat_ms: u32,
    },
    /// Server → client right after `LoginOk`, from version 2 on: `max:
    /// u16 | key[32]`. The client may add up to `max - 1` connections to
    /// its session, each proving `key` in a [`Frame::Join`].
    Lanes {
        /// Connections the session may have in all, the first included.
        max: u16,
        /// The session's join key, random per session.
        key: [u8; LANE_KEY_LEN],
    },
    /// Client → server in place of `Login`, on a connection that joins a
    /// logged-in session (version 2): `client_id: u64 | proof[32]`.
    Join {
        /// The session's id, from its `LoginOk`.
        client_id: ClientId,
        /// `auth::lane_proof(key, nonce, client_id)`.
        proof: [u8; PROOF_LEN],
    },
    /// Server → client, then the server closes: `code: u8 | message: text`.
    LoginRefused {
        /// Machine-readable reason.
        code: RefuseCode,
        /// Human-readable reason, printed by the client.
        message: String,
    },
    /// Client → server on the control stream: `request_id: u32 | bind: addr | target: text`.
    /// Kind `OpenTunnel` for TCP, `OpenUdpTunnel` for UDP.
    OpenTunnel {
        /// Echoed in the answer so requests can be pipelined.
        request_id: u32,
        /// Public address to listen on; port 0 lets the server choose.
        bind: SocketAddr,
        /// Where the client will forward visitors (informational for the server's hooks).
        target: String,
        /// TCP or UDP (the frame's kind).
        transport: Transport,
    },
    /// Client → server on the control stream, for `-L`: `request_id: u32 |
    /// target: text`. The server answers `TunnelOpened` (with an unspecified
    /// `bound`) if its forward allow-list admits `target`, else
    /// `TunnelRefused`; each local connection then arrives as a client-opened
    /// stream starting with a `StreamHeader` for this tunnel. Kind
    /// `OpenForward` for TCP, `OpenUdpForward` for UDP.
    OpenForward {
        /// Echoed in the answer.
        request_id: u32,
        /// `host:port` the server dials for each connection.
        target: String,
        /// TCP or UDP (the frame's kind).
        transport: Transport,
    },
    /// Server → client: `request_id: u32 | tunnel_id: u64 | bound: addr`.
    TunnelOpened {
        /// From the request.
        request_id: u32,
        /// The server's id for the tunnel; stream headers carry it.
        tunnel_id: TunnelId,
        /// The address actually bound.
        bound: SocketAddr,
    },
    /// Server → client: `request_id: u32 | code: u8 | message: text`.
    TunnelRefused {
        /// From the request.
        request_id: u32,
        /// Machine-readable reason.
        code: RefuseCode,
        /// Human-readable reason, printed by the client.
        message: String,
    },
    /// Either way: `tunnel_id: u64`. The sender will not use the tunnel again.
    CloseTunnel {
        /// The tunnel to close.
        tunnel_id: TunnelId,
    },
    /// Either way: `seq: u64`. Must be answered with a `Pong` of the same `seq`.
    Ping {
        /// Echoed in the pong.
        seq: u64,
    },
    /// Answer to `Ping`: `seq: u64`.
    Pong {
        /// From the ping.
        seq: u64,
    },
    /// First frame on a data stream, server → client:
    /// `tunnel_id: u64 | stream_id: u64 | peer: addr`.
    StreamHeader {
        /// Which tunnel the visitor arrived on.
        tunnel_id: TunnelId,
        /// The server's id for this stream (so both sides' logs agree).
        stream_id: StreamId,
        /// The visitor's address.
        peer: SocketAddr,
    },
    /// Answer on a data stream: the target is connected; relayed bytes follow. Empty payload.
    StreamAccepted,
    /// Answer on a data stream: the target could not be reached; the stream ends. `message: text`.
    StreamRefused {
        /// Why, for the server's `on_error` and logs.
        message: String,
    },
    /// Either way before closing the session: `code: u8 | message: text`.
    Goodbye {
        /// Machine-readable reason.
        code: RefuseCode,
        /// Human-readable reason.
        message: String,
    },
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Challenge { .. } => FrameKind::Challenge,
            Frame::Login { .. } => FrameKind::Login,
            Frame::LoginOk { .. } => FrameKind::LoginOk,
            Frame::LoginRefused { .. } => FrameKind::LoginRefused,
            Frame::Lanes { .. } => FrameKind::Lanes,
            Frame::Join { .. } => FrameKind::Join,
            Frame::OpenTunnel { transport, .. } => match transport {
                Transport::Tcp => FrameKind::OpenTunnel,
                Transport::Udp => FrameKind::OpenUdpTunnel,
            },
            Frame::OpenForward { transport, .. } => match transport {
                Transport::Tcp => FrameKind::OpenForward,
                Transport::Udp => FrameKind::OpenUdpForward,
            },
            Frame::TunnelOpened { .. } => FrameKind::TunnelOpened,
            Frame::TunnelRefused { .. } => FrameKind::TunnelRefused,
            Frame::CloseTunnel { .. } => FrameKind::CloseTunnel,
            Frame::Ping { .. } => FrameKind::Ping,
            Frame::Pong { .. } => FrameKind::Pong,
            Frame::StreamHeader { .. } => FrameKind::StreamHeader,
            Frame::StreamAccepted => FrameKind::StreamAccepted,
            Frame::StreamRefused { .. } => FrameKind::StreamRefused,
            Frame::Goodbye { .. } => FrameKind::Goodbye,
        }
    }

    /// Appends `length | kind | payload` to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32(0); // patched below
        dst.put_u8(self.kind() as u8);
        self.encode_payload(dst);
        let len = (dst.len() - start - 4) as u32;
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            Frame::Challenge { nonce } => dst.put_slice(nonce),
            Frame::Login { name, proof } => {
                put_text(dst, name, MAX_NAME_LEN);
                dst.put_slice(proof);
            }
            Frame::LoginOk {
                client_id,
                heartbeat_ms,
            } => {
                dst.put_u64(client_id.0);
                dst.put_u32(*heartbeat_ms);
            }
            Frame::Lanes { max, key } => {
                dst.put_u16(*max);
                dst.put_slice(key);
            }
            Frame::Join { client_id, proof } => {
                dst.put_u64(client_id.0);
                dst.put_slice(proof);
            }
            Frame::LoginRefused { code, message } | Frame::Goodbye { code, message } => {
                dst.put_u8(*code as u8);
                put_text(dst, message, MAX_TEXT_LEN);
            }
            Frame::OpenTunnel {
                request_id,
                bind,
                target,
                transport: _,
            } => {
                dst.put_u32(*request_id);
                put_addr(dst, bind);
                put_text(dst, target, MAX_TEXT_LEN);
            }
            Frame::OpenForward {
                request_id, target, ..
            } => {
                dst.put_u32(*request_id);
                put_text(dst, target, MAX_TEXT_LEN);
            }
            Frame::TunnelOpened {
                request_id,
                tunnel_id,
                bound,
            } => {
                dst.put_u32(*request_id);
                dst.put_u64(tunnel_id.0);
                put_addr(dst, bound);
            }
            Frame::TunnelRefused {
                request_id,
                code,
                message,
            } => {
                dst.put_u32(*request_id);
                dst.put_u8(*code as u8);
                put_text(dst, message, MAX_TEXT_LEN);
            }
            Frame::CloseTunnel { tunnel_id } => dst.put_u64(tunnel_id.0),
            Frame::Ping { seq } | Frame::Pong { seq } => dst.put_u64(*seq),
            Frame::StreamHeader {
                tunnel_id,
                stream_id,
                peer,
            } => {
                dst.put_u64(tunnel_id.0);
                dst.put_u64(stream_id.0);
                put_addr(dst, peer);
            }
            Frame::StreamAccepted => {}
            Frame::StreamRefused { message } => put_text(dst, message, MAX_TEXT_LEN),
        }
    }

    /// Decodes one frame's kind byte and payload (the length prefix already removed).
    pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
        let (&kind_byte, payload) = body.split_first().ok_or(DecodeError::Empty)?;
        let kind = FrameKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        let mut r = Reader::new(kind.name(), payload);
        let frame = match kind {
            FrameKind::Challenge => Frame::Challenge {
                nonce: r.array("nonce")?,
            },
            FrameKind::Login => Frame::Login {
                name: r.text("name", MAX_NAME_LEN)?,
                proof: r.array("proof")?,
            },
            FrameKind::LoginOk => Frame::LoginOk {
                client_id: ClientId(r.u64("client_id")?),
                heartbeat_ms: r.u32("heartbeat_ms")?,
            },
            FrameKind::Lanes => Frame::Lanes {
                max: r.u16("max")?,
                key: r.array("key")?,
            },
            FrameKind::Join => Frame::Join {
                client_id: ClientId(r.u64("client_id")?),
                proof: r.array("proof")?,
            },
            FrameKind::LoginRefused => Frame::LoginRefused {
                code: RefuseCode::from_u8(r.u8("code")?),
                message: r.text("message", MAX_TEXT_LEN)?,
            },
            FrameKind::OpenTunnel | FrameKind::OpenUdpTunnel => Frame::OpenTunnel {
                request_id: r.u32("request_id")?,
                bind: r.addr("bind")?,
                target: r.text("target", MAX_TEXT_LEN)?,
                transport: transport_of(kind),
            },
            FrameKind::OpenForward | FrameKind::OpenUdpForward => Frame::OpenForward {
                request_id: r.u32("request_id")?,
                target: r.text("target", MAX_TEXT_LEN)?,
                transport: transport_of(kind),
            },
            FrameKind::TunnelOpened => Frame::TunnelOpened {
                request_id: r.u32("request_id")?,
                tunnel_id: TunnelId(r.u64("tunnel_id")?),
                bound: r.addr("bound")?,
            },
            FrameKind::TunnelRefused => Frame::TunnelRefused {
                request_id: r.u32("request_id")?,
                code: RefuseCode::from_u8(r.u8("code")?),
                message: r.text("message", MAX_TEXT_LEN)?,
            },
            FrameKind::CloseTunnel => Frame::CloseTunnel {
                tunnel_id: TunnelId(r.u64("tunnel_id")?),
            },
            FrameKind::Ping => Frame::Ping { seq: r.u64("seq")? },
            FrameKind::Pong => Frame::Pong { seq: r.u64("seq")? },
            FrameKind::StreamHeader => Frame::StreamHeader {
                tunnel_id: TunnelId(r.u64("tunnel_id")?),
                stream_id: StreamId(r.u64("stream_id")?),
                peer: r.addr("peer")?,
            },
            FrameKind::StreamAccepted => Frame::StreamAccepted,
            FrameKind::StreamRefused => Frame::StreamRefused {
                message: r.text("message", MAX_TEXT_LEN)?,
            },
            FrameKind::Goodbye => Frame::Goodbye {
                code: RefuseCode::from_u8(r.u8("code")?),
                message: r.text("message", MAX_TEXT_LEN)?,
            },
        };
        r.finish()?;
        Ok(frame)
    }
}

/// The transport a tunnel request's kind asks for.
fn transport_of(kind: FrameKind) -> Transport {
    match kind {
        FrameKind::OpenUdpTunnel | FrameKind::OpenUdpForward => Transport::Udp,
        _ => Transport::Tcp,
    }
}
