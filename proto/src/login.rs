//! The login, both sides, as state machines that do no I/O.
//!
//! A login is a short exchange before yamux takes the connection over:
//!
//! ```text
//! client                                  server
//!   preamble  ───────────────────────────▶
//!             ◀─────────────────────────── preamble
//!             ◀─────────────────────────── Challenge { nonce }
//!   Login { name, proof }  ──────────────▶
//!             ◀─────────────────────────── LoginOk | LoginRefused
//!             ◀─────────────────────────── Lanes { max, key }   (version 2)
//! ```
//!
//! Each side sends the version it speaks; the server answers a client of
//! an older version it still speaks in that version, so the two agree on
//! the client's. From version 2 a logged-in client may add connections to
//! its session: such a connection runs the same exchange with
//! `Join { client_id, proof }` in place of `Login`, the proof keyed by the
//! session's join key from `Lanes`, and gets `LoginOk` or `LoginRefused`.
//!
//! [`ClientLogin`] and [`ServerLogin`] hold everything about that exchange:
//! the order, the checks, what each side sends and when it gives up. They
//! never touch a socket; whoever drives one asks [`Handshake::advance`] what
//! to do next and does it: write some bytes, or read exactly some number of
//! bytes. Reads are exact because the bytes after the login belong to yamux:
//! a driver that read ahead would steal them. Keeping the exchange free of
//! I/O is what lets the client, the server, the fuzz targets and the
//! adversarial tests share one copy of it, and lets a test feed a machine
//! any bytes at all without a connection.
//!
//! ```
//! use reitunnel_proto::login::{ClientHello, ClientLogin, Handshake, ServerLogin, Step};
//!
//! // Two machines talking to each other, bytes handed across by hand.
//! let mut client = ClientLogin::new("laptop", b"s3cret", 1024);
//! let mut server = ServerLogin::new([7; 32], 1024);
//! let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
//! let (mut c_in, mut s_in) = (Vec::new(), Vec::new());
//! let request = loop {
//!     match server.advance(&s_in).unwrap() {
//!         Step::Send(bytes) => { to_client.extend(bytes); s_in.clear(); }
//!         Step::Receive(n) => {
//!             while to_server.len() < n {
//!                 match client.advance(&c_in).unwrap() {
//!                     Step::Send(bytes) => { to_server.extend(bytes); c_in.clear(); }
//!                     Step::Receive(m) => c_in = to_client.drain(..m).collect(),
//!                     Step::Done(_) => unreachable!("no answer sent yet"),
//!                 }
//!             }
//!             s_in = to_server.drain(..n).collect();
//!         }
//!         Step::Done(ClientHello::Login(request)) => break request,
//!         Step::Done(ClientHello::Join(_)) => unreachable!("the client logs in"),
//!     }
//! };
//! assert_eq!(request.name, "laptop");
//! assert!(reitunnel_proto::auth::verify(b"s3cret", &request.nonce, "laptop", &request.proof));
//! ```

use thiserror::Error;

use crate::auth::{lane_proof, proof, LANE_KEY_LEN, NONCE_LEN, PROOF_LEN};
use crate::{
    ClientId, DecodeError, Frame, FrameKind, Preamble, PreambleError, RefuseCode, PREAMBLE_LEN,
    PROTOCOL_VERSION,
};

/// Bytes of a frame's length prefix.
const LEN_PREFIX: usize = 4;

/// What a login asks of its connection next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Write (and flush) these bytes, then call `advance` with nothing.
    Send(Vec<u8>),
    /// Read exactly this many bytes, no more, and pass them to `advance`.
    Receive(usize),
    /// The exchange is over.
    Done(T),
}

/// Why a login could not go on: the peer broke the protocol. The
/// connection's own failures (closed, reset) are the driver's to report.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The peer's preamble is wrong (another protocol, version or TLS).
    #[error(transparent)]
    Preamble(#[from] PreambleError),
    /// The peer sent a malformed frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A well-formed frame where another kind belongs.
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        /// The frame the exchange was waiting for.
        expected: &'static str,
        /// What came.
        got: FrameKind,
    },
}

/// One side of the login.
pub trait Handshake {
    /// What the exchange ends with.
    type Done;

    /// The next step. `received` holds the bytes read for the previous
    /// [`Step::Receive`], and is empty at the start and after a
    /// [`Step::Send`]. After `Done` or an error the machine is spent.
    ///
    /// # Panics
    /// If `received` is not as long as the last `Receive` asked, or the
    /// machine is advanced once it is spent: both are bugs of the driver.
    fn advance(&mut self, received: &[u8]) -> Result<Step<Self::Done>, LoginError>;
}

/// Reads one frame in two exact reads: the length prefix, then the rest.
/// The length is checked before the rest is asked for, so a hostile prefix
/// never makes anyone allocate.
#[derive(Debug)]
struct FrameReader {
    max_frame_len: usize,
    /// The length announced by a prefix already read.
    announced: Option<usize>,
}

/// What a [`FrameReader`] made of some bytes.
enum Read {
    /// Read this many more bytes.
    More(usize),
    Frame(Frame),
}

impl FrameReader {
    fn new(max_frame_len: usize) -> (FrameReader, usize) {
        let reader = FrameReader {
            max_frame_len,
            announced: None,
        };
        (reader, LEN_PREFIX)
    }

    fn received(&mut self, bytes: &[u8]) -> Result<Read, DecodeError> {
        match self.announced.take() {
            None => {
                let prefix: [u8; LEN_PREFIX] = exactly(bytes);
                let len = u32::from_be_bytes(prefix) as usize;
                if len > self.max_frame_len {
                    return Err(DecodeError::FrameTooLarge {
                        len,
                        max: self.max_frame_len,
                    });
                }
                self.announced = Some(len);
                Ok(Read::More(len))
            }
            Some(len) => {
                assert_eq!(bytes.len(), len, "a frame body of the wrong length");
                Frame::decode_body(bytes).map(Read::Frame)
            }
        }
    }
}

/// `bytes` as an array of the length asked for.
fn exactly<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("received {} bytes where {N} were asked", bytes.len()))
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

/// What the client learns from a login the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The id the server gave this session.
    pub client_id: ClientId,
    /// The server's heartbeat interval in milliseconds (0: none).
    pub heartbeat_ms: u32,
    /// The server's challenge.
    pub nonce: [u8; NONCE_LEN],
    /// The proof the client answered it with.
    pub proof: [u8; PROOF_LEN],
    /// The server's offer of more connections for this session (version 2
    /// logins; none for a joined connection or a version 1 server).
    pub lanes: Option<LaneGrant>,
}

/// A session's permission to add connections (from the `Lanes` frame).
#[derive(Clone, PartialEq, Eq)]
pub struct LaneGrant {
    /// Connections the session may have in all, the first included.
    pub max: u16,
    /// What a joining connection proves (see [`crate::auth::lane_proof`]).
    pub key: [u8; LANE_KEY_LEN],
}

impl std::fmt::Debug for LaneGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneGrant")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// How the server answered a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer {
    /// `LoginOk`.
    Welcome(LoggedIn),
    /// `LoginRefused`, after the challenge or in its place (a server refuses
    /// an address it blocks before challenging it).
    Refused {
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        message: String,
    },
}

/// The client's side: sends its preamble, checks the server's, answers the
/// challenge with a proof of its token (or, joining a session, of the
/// session's join key), and reads the server's answer.
#[derive(Debug)]
pub struct ClientLogin<'a> {
    hello: Hello<'a>,
    max_frame_len: usize,
    /// The version the server answered in; ours until it answered.
    version: u16,
    state: ClientState,
}

/// What the client's first frame says.
#[derive(Debug)]
enum Hello<'a> {
    Login {
        name: &'a str,
        token: &'a [u8],
    },
    Join {
        client_id: ClientId,
        key: &'a [u8; LANE_KEY_LEN],
    },
}

impl Hello<'_> {
    fn answer(&self, nonce: &[u8; NONCE_LEN]) -> ([u8; PROOF_LEN], Frame) {
        match *self {
            Hello::Login { name, token } => {
                let proof = proof(token, nonce, name);
                let name = name.to_owned();
                (proof, Frame::Login { name, proof })
            }
            Hello::Join { client_id, key } => {
                let proof = lane_proof(key, nonce, client_id.0);
                (proof, Frame::Join { client_id, proof })
            }
        }
    }
}

#[derive(Debug)]
enum ClientState {
    Start,
    SentPreamble,
    ReadPreamble,
    ReadChallenge(FrameReader),
    SentLogin {
        nonce: [u8; NONCE_LEN],
        proof: [u8; PROOF_LEN],
    },
    ReadAnswer {
        nonce: [u8; NONCE_LEN],
        proof: [u8; PROOF_LEN],
        reader: FrameReader,
    },
    ReadLanes {
        welcome: LoggedIn,
        reader: FrameReader,
    },
    Spent,
}

impl<'a> ClientLogin<'a> {
    /// A login as `name` proving `token`, refusing server frames longer
    /// than `max_frame_len`.
    pub fn new(name: &'a str, token: &'a [u8], max_frame_len: usize) -> Self {
        ClientLogin::with(Hello::Login { name, token }, max_frame_len)
    }

    /// A connection joining the logged-in session `client_id`, proving the
    /// session's join `key`. Needs a version 2 server.
    pub fn join(client_id: ClientId, key: &'a [u8; LANE_KEY_LEN], max_frame_len: usize) -> Self {
        ClientLogin::with(Hello::Join { client_id, key }, max_frame_len)
    }

    fn with(hello: Hello<'a>, max_frame_len: usize) -> Self {
        ClientLogin {
            hello,
            max_frame_len,
            version: PROTOCOL_VERSION,
            state: ClientState::Start,
        }
    }

    /// Whether the server is to send `Lanes` after `LoginOk`.
    fn lanes_follow(&self) -> bool {
        matches!(self.hello, Hello::Login { .. }) && self.version >= 2
    }
}

impl Handshake for ClientLogin<'_> {
    type Done = ServerAnswer;

    fn advance(&mut self, received: &[u8]) -> Result<Step<ServerAnswer>, LoginError> {
        use ClientState as S;
        let (next, step) = match std::mem::replace(&mut self.state, S::Spent) {
            S::Start => (
                S::SentPreamble,
                Step::Send(Preamble::CURRENT.encode().to_vec()),
            ),
            S::SentPreamble => (S::ReadPreamble, Step::Receive(PREAMBLE_LEN)),
            S::ReadPreamble => {
                let theirs = Preamble::decode_and_check(exactly(received))?;
                // A server answers in ours or, being older, in its own.
                if theirs.version > PROTOCOL_VERSION {
                    return Err(PreambleError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: theirs.version,
                    }
                    .into());
                }
                if matches!(self.hello, Hello::Join { .. }) && theirs.version < 2 {
                    return Err(PreambleError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: theirs.version,
                    }
                    .into());
                }
                self.version = theirs.version;
                let (reader, want) = FrameReader::new(self.max_frame_len);
                (S::ReadChallenge(reader), Step::Receive(want))
            }
            S::ReadChallenge(mut reader) => match reader.received(received)? {
                Read::More(n) => (S::ReadChallenge(reader), Step::Receive(n)),
                Read::Frame(Frame::Challenge { nonce }) => {
                    let (proof, hello) = self.hello.answer(&nonce);
                    (S::SentLogin { nonce, proof }, Step::Send(encoded(&hello)))
                }
                Read::Frame(Frame::LoginRefused { code, message }) => (
                    S::Spent,
                    Step::Done(ServerAnswer::Refused { code, message }),
                ),
                Read::Frame(other) => return Err(unexpected("Challenge", &other)),
            },
            S::SentLogin { nonce, proof } => {
                let (reader, want) = FrameReader::new(self.max_frame_len);
                let next = S::ReadAnswer {
                    nonce,
                    proof,
                    reader,
                };
                (next, Step::Receive(want))
            }
            S::ReadAnswer {
                nonce,
                proof,
                mut reader,
            } => match reader.received(received)? {
                Read::More(n) => {
                    let next = S::ReadAnswer {
                        nonce,
                        proof,
                        reader,
                    };
                    (next, Step::Receive(n))
                }
                Read::Frame(Frame::LoginOk {
                    client_id,
                    heartbeat_ms,
                }) => {
                    let welcome = LoggedIn {
                        client_id,
                        heartbeat_ms,
                        nonce,
                        proof,
                        lanes: None,
                    };
                    if self.lanes_follow() {
                        let (reader, want) = FrameReader::new(self.max_frame_len);
                        (S::ReadLanes { welcome, reader }, Step::Receive(want))
                    } else {
                        (S::Spent, Step::Done(ServerAnswer::Welcome(welcome)))
                    }
                }
                Read::Frame(Frame::LoginRefused { code, message }) => (
                    S::Spent,
                    Step::Done(ServerAnswer::Refused { code, message }),
                ),
                Read::Frame(other) => return Err(unexpected("LoginOk", &other)),
            },
            S::ReadLanes {
                mut welcome,
                mut reader,
            } => match reader.received(received)? {
                Read::More(n) => (S::ReadLanes { welcome, reader }, Step::Receive(n)),
                Read::Frame(Frame::Lanes { max, key }) => {
                    welcome.lanes = Some(LaneGrant { max, key });
                    (S::Spent, Step::Done(ServerAnswer::Welcome(welcome)))
                }
                Read::Frame(other) => return Err(unexpected("Lanes", &other)),
            },
            S::Spent => panic!("the client's login was advanced after it ended"),
        };
        self.state = next;
        Ok(step)
    }
}

/// What a client brought to log in, for the server to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// The name the client gave, unchecked.
    pub name: String,
    /// The challenge the server sent.
    pub nonce: [u8; NONCE_LEN],
    /// The client's answer to it.
    pub proof: [u8; PROOF_LEN],
    /// The protocol version the two agreed on (the client's): from 2 on,
    /// `LoginOk` is followed by `Lanes`.
    pub version: u16,
}

/// A connection asking to join a logged-in session, for the server to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The session it names.
    pub client_id: ClientId,
    /// The challenge the server sent.
    pub nonce: [u8; NONCE_LEN],
    /// The client's answer to it (see [`crate::auth::verify_lane`]).
    pub proof: [u8; PROOF_LEN],
}

/// What a connection's first frame asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// A new session.
    Login(LoginRequest),
    /// Another connection for a session (version 2).
    Join(JoinRequest),
}

/// The server's side: reads the client's preamble, sends its own (even
/// when the client's is wrong, so the client can say which version the
/// server speaks), challenges a client whose preamble is right, and reads
/// the login. Accepting or refusing it is the server's business: it writes
/// `LoginOk` or `LoginRefused` itself.
#[derive(Debug)]
pub struct ServerLogin {
    nonce: [u8; NONCE_LEN],
    max_frame_len: usize,
    /// The client's version, once its preamble was read.
    version: u16,
    state: ServerState,
}

#[derive(Debug)]
enum ServerState {
    Start,
    ReadPreamble,
    SentPreamble(Result<Preamble, PreambleError>),
    SentChallenge,
    ReadLogin(FrameReader),
    Spent,
}

impl ServerLogin {
    /// A login challenging with `nonce` (fresh from
    /// [`auth::new_nonce`](crate::auth::new_nonce) for every connection),
    /// refusing client frames longer than `max_frame_len`.
    pub fn new(nonce: [u8; NONCE_LEN], max_frame_len: usize) -> Self {
        ServerLogin {
            nonce,
            max_frame_len,
            version: PROTOCOL_VERSION,
            state: ServerState::Start,
        }
    }
}

impl Handshake for ServerLogin {
    type Done = ClientHello;

    fn advance(&mut self, received: &[u8]) -> Result<Step<ClientHello>, LoginError> {
        use ServerState as S;
        let (next, step) = match std::mem::replace(&mut self.state, S::Spent) {
            S::Start => (S::ReadPreamble, Step::Receive(PREAMBLE_LEN)),
            S::ReadPreamble => {
                let theirs = Preamble::decode_and_check(exactly(received));
                let ours = Preamble::answer(&theirs).encode().to_vec();
                (S::SentPreamble(theirs), Step::Send(ours))
            }
            S::SentPreamble(theirs) => {
                self.version = theirs?.version;
                let challenge = Frame::Challenge { nonce: self.nonce };
                (S::SentChallenge, Step::Send(encoded(&challenge)))
            }
            S::SentChallenge => {
                let (reader, want) = FrameReader::new(self.max_frame_len);
                (S::ReadLogin(reader), Step::Receive(want))
            }
            S::ReadLogin(mut reader) => match reader.received(received)? {
                Read::More(n) => (S::ReadLogin(reader), Step::Receive(n)),
                Read::Frame(Frame::Login { name, proof }) => {
                    let request = LoginRequest {
                        name,
                        nonce: self.nonce,
                        proof,
                        version: self.version,
                    };
                    (S::Spent, Step::Done(ClientHello::Login(request)))
                }
                Read::Frame(Frame::Join { client_id, proof }) if self.version >= 2 => {
                    let request = JoinRequest {
                        client_id,
                        nonce: self.nonce,
                        proof,
                    };
                    (S::Spent, Step::Done(ClientHello::Join(request)))
                }
                Read::Frame(other) => return Err(unexpected("Login", &other)),
            },
            S::Spent => panic!("the server's login was advanced after it ended"),
        };
        self.state = next;
        Ok(step)
    }
}

fn unexpected(expected: &'static str, got: &Frame) -> LoginError {
    LoginError::Unexpected {
        expected,
        got: got.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

    /// Feeds `input` to `machine` as a connection would: every `Receive`
    /// takes the next bytes; returns what it wrote and how it ended, or
    /// `None` where the input ran out.
    fn run<H: Handshake>(
        mut machine: H,
        mut input: &[u8],
    ) -> (Vec<u8>, Option<Result<H::Done, LoginError>>) {
        let mut written = Vec::new();
        let mut received: &[u8] = &[];
        loop {
            match machine.advance(received) {
                Ok(Step::Send(bytes)) => {
                    written.extend(bytes);
                    received = &[];
                }
                Ok(Step::Receive(n)) => {
                    if input.len() < n {
                        return (written, None);
                    }
                    (received, input) = input.split_at(n);
                }
                Ok(Step::Done(done)) => return (written, Some(Ok(done))),
                Err(e) => return (written, Some(Err(e))),
            }
        }
    }

    fn frames(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(encoded).collect()
    }

    fn preamble() -> Vec<u8> {
        Preamble::CURRENT.encode().to_vec()
    }

    const KEY: [u8; LANE_KEY_LEN] = [4; LANE_KEY_LEN];

    fn ok() -> Frame {
        Frame::LoginOk {
            client_id: ClientId(5),
            heartbeat_ms: 1500,
        }
    }

    #[test]
    fn the_client_answers_the_challenge_and_reads_the_welcome_and_its_lanes() {
        let lanes = Frame::Lanes { max: 4, key: KEY };
        let input = [
            preamble(),
            frames(&[Frame::Challenge { nonce: NONCE }, ok(), lanes]),
        ]
        .concat();
        let (written, done) = run(ClientLogin::new("laptop", b"s3cret", 1024), &input);
        let proof = proof(b"s3cret", &NONCE, "laptop");
        let login = Frame::Login {
            name: "laptop".into(),
            proof,
        };
        assert_eq!(written, [preamble(), encoded(&login)].concat());
        let welcome = LoggedIn {
            client_id: ClientId(5),
            heartbeat_ms: 1500,
            nonce: NONCE,
            proof,
            lanes: Some(LaneGrant { max: 4, key: KEY }),
        };
        assert_eq!(done, Some(Ok(ServerAnswer::Welcome(welcome))));
    }

    #[test]
    fn a_version_1_server_is_spoken_to_in_version_1_and_offers_no_lanes() {
        let v1 = Preamble::of(1).encode().to_vec();
        let input = [v1, frames(&[Frame::Challenge { nonce: NONCE }, ok()])].concat();
        let (_, done) = run(ClientLogin::new("laptop", b"s3cret", 1024), &input);
        match done {
            Some(Ok(ServerAnswer::Welcome(welcome))) => assert_eq!(welcome.lanes, None),
            other => panic!("{other:?}"),
        }
        // Joining needs version 2.
        let (written, done) = run(ClientLogin::join(ClientId(5), &KEY, 1024), b"RTUN\x00\x01");
        assert_eq!(written, preamble());
        assert!(
            matches!(done, Some(Err(LoginError::Preamble(_)))),
            "{done:?}"
        );
    }

    #[test]
    fn a_joining_connection_proves_the_sessions_key_and_reads_only_the_welcome() {
        let input = [
            preamble(),
            frames(&[Frame::Challenge { nonce: NONCE }, ok()]),
        ]
        .concat();
        let (written, done) = run(ClientLogin::join(ClientId(5), &KEY, 1024), &input);
        let join = Frame::Join {
            client_id: ClientId(5),
            proof: crate::auth::lane_proof(&KEY, &NONCE, 5),
        };
        assert_eq!(written, [preamble(), encoded(&join)].concat());
        match done {
            Some(Ok(ServerAnswer::Welcome(welcome))) => assert_eq!(welcome.lanes, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_in_place_of_the_challenge_ends_the_clients_login() {
        let refusal = Frame::LoginRefused {
            code: RefuseCode::LimitReached,
            message: "blocked".into(),
        };
        let input = [preamble(), frames(&[refusal])].concat();
        let (written, done) = run(ClientLogin::new("laptop", b"s3cret", 1024), &input);
        assert_eq!(written, preamble(), "no login without a challenge");
        let refused = ServerAnswer::Refused {
            code: RefuseCode::LimitReached,
            message: "blocked".into(),
        };
        assert_eq!(done, Some(Ok(refused)));
    }

    #[test]
    fn the_client_refuses_a_wrong_preamble_a_long_frame_and_a_wrong_kind() {
        let client = || ClientLogin::new("laptop", b"s3cret", 64);
        let (_, done) = run(client(), b"HTTP/1");
        assert!(
            matches!(done, Some(Err(LoginError::Preamble(_)))),
            "{done:?}"
        );
        let long = [preamble(), 65u32.to_be_bytes().to_vec()].concat();
        let (_, done) = run(client(), &long);
        let too_large = DecodeError::FrameTooLarge { len: 65, max: 64 };
        assert_eq!(done, Some(Err(LoginError::Decode(too_large))));
        let wrong = [preamble(), frames(&[Frame::Ping { seq: 1 }])].concat();
        let (_, done) = run(client(), &wrong);
        let unexpected = LoginError::Unexpected {
            expected: "Challenge",
            got: FrameKind::Ping,
        };
        assert_eq!(done, Some(Err(unexpected)));
    }

    #[test]
    fn the_server_challenges_a_right_preamble_and_reads_the_login() {
        let login = Frame::Login {
            name: "laptop".into(),
            proof: [3; PROOF_LEN],
        };
        let input = [preamble(), encoded(&login)].concat();
        let (written, done) = run(ServerLogin::new(NONCE, 1024), &input);
        let challenge = Frame::Challenge { nonce: NONCE };
        assert_eq!(written, [preamble(), encoded(&challenge)].concat());
        let request = LoginRequest {
            name: "laptop".into(),
            nonce: NONCE,
            proof: [3; PROOF_LEN],
            version: PROTOCOL_VERSION,
        };
        assert_eq!(done, Some(Ok(ClientHello::Login(request))));
    }

    #[test]
    fn the_server_answers_a_version_1_client_in_version_1_and_takes_joins_from_version_2_only() {
        let v1 = Preamble::of(1).encode().to_vec();
        let login = Frame::Login {
            name: "old".into(),
            proof: [3; PROOF_LEN],
        };
        let (written, done) = run(
            ServerLogin::new(NONCE, 1024),
            &[v1.clone(), encoded(&login)].concat(),
        );
        assert_eq!(&written[..PREAMBLE_LEN], &v1[..]);
        assert!(matches!(
            done,
            Some(Ok(ClientHello::Login(LoginRequest { version: 1, .. })))
        ));
        let join = Frame::Join {
            client_id: ClientId(5),
            proof: [3; PROOF_LEN],
        };
        let (_, done) = run(
            ServerLogin::new(NONCE, 1024),
            &[v1, encoded(&join)].concat(),
        );
        let unexpected = LoginError::Unexpected {
            expected: "Login",
            got: FrameKind::Join,
        };
        assert_eq!(done, Some(Err(unexpected)));
        let (_, done) = run(
            ServerLogin::new(NONCE, 1024),
            &[preamble(), encoded(&join)].concat(),
        );
        let request = JoinRequest {
            client_id: ClientId(5),
            nonce: NONCE,
            proof: [3; PROOF_LEN],
        };
        assert_eq!(done, Some(Ok(ClientHello::Join(request))));
    }

    #[test]
    fn the_server_sends_its_preamble_to_a_wrong_one_but_no_challenge() {
        let (written, done) = run(ServerLogin::new(NONCE, 1024), b"RTUN\x00\x09");
        assert_eq!(written, preamble());
        let mismatch = PreambleError::VersionMismatch {
            ours: crate::PROTOCOL_VERSION,
            theirs: 9,
        };
        assert_eq!(done, Some(Err(LoginError::Preamble(mismatch))));
    }

    #[test]
    fn the_server_asks_for_nothing_past_the_login() {
        let login = Frame::Login {
            name: "a".into(),
            proof: [0; PROOF_LEN],
        };
        let mut input = [preamble(), encoded(&login)].concat();
        let used = input.len();
        input.extend_from_slice(b"yamux bytes");
        let mut machine = ServerLogin::new(NONCE, 1024);
        let mut asked = 0;
        let mut received: &[u8] = &[];
        let mut rest = &input[..];
        loop {
            match machine.advance(received).unwrap() {
                Step::Send(_) => received = &[],
                Step::Receive(n) => {
                    asked += n;
                    (received, rest) = rest.split_at(n);
                }
                Step::Done(_) => break,
            }
        }
        assert_eq!(asked, used);
    }
}
