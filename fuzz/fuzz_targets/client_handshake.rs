//! Everything a server (or whatever answered on its port) might send during
//! login, fed to the client's real login over an in-memory connection. It
//! must finish at once with the outcome the codec predicts, and have written
//! exactly our preamble and, after a challenge, a login whose proof verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reitunnel_client::{fuzzing, ClientConfig, ClientError};
use reitunnel_fuzz::harness::{self, ClientLoginOutcome as Out, OneFrame, MAX_FRAME_LEN};
use reitunnel_fuzz::{run_to_completion, Wire};
use reitunnel_hooks::builtin::Secret;
use reitunnel_proto::{auth, Frame, Preamble, PREAMBLE_LEN};
use reitunnel_transport::FrameIoError;

const TOKEN: &str = "s3cret";
const NAME: &str = "laptop";
const SERVER: &str = "server.invalid:7000";

fuzz_target!(|data: &[u8]| {
    let mut cfg = ClientConfig::new(SERVER, NAME, Secret::new(TOKEN));
    cfg.max_frame_len = MAX_FRAME_LEN;
    let mut wire = Wire::new(data);
    let got = run_to_completion(fuzzing::login(&mut wire, &cfg, SERVER));
    let want = harness::expected_client_login(data, MAX_FRAME_LEN);
    let challenged = match (got, want) {
        (
            Ok(done),
            Out::LoggedIn {
                nonce,
                client_id,
                heartbeat_ms,
                lanes,
            },
        ) => {
            assert_eq!(
                (done.client_id, done.heartbeat_ms, done.nonce),
                (client_id, heartbeat_ms, nonce)
            );
            assert_eq!(done.lanes.map(|grant| grant.max), lanes);
            Some(nonce)
        }
        (
            Err(ClientError::LoginRefused { code, message }),
            Out::Refused {
                code: c,
                message: m,
            },
        ) => {
            assert_eq!((code, message), (c, m));
            challenge_of(data)
        }
        (
            Err(ClientError::Handshake {
                source: FrameIoError::Closed,
                ..
            }),
            Out::Closed,
        ) => challenge_of(data),
        (Err(ClientError::Preamble { source, .. }), Out::BadPreamble(expected)) => {
            assert_eq!(source, expected);
            None
        }
        (
            Err(ClientError::Handshake {
                source: FrameIoError::Decode(e),
                ..
            }),
            Out::Invalid(expected),
        ) => {
            assert_eq!(e, expected);
            challenge_of(data)
        }
        (
            Err(ClientError::UnexpectedFrame { expected, got }),
            Out::Unexpected {
                expected: e,
                got: g,
            },
        ) => {
            assert_eq!((expected, got), (e, g));
            challenge_of(data)
        }
        (got, want) => panic!("login gave {got:?} where the codec says {want:?}"),
    };

    // The client speaks first, and sends its login only in answer to a challenge.
    let (ours, login) = wire.written.split_at(PREAMBLE_LEN);
    assert_eq!(ours, Preamble::CURRENT.encode());
    let Some(nonce) = challenged else {
        assert!(login.is_empty(), "sent {login:02x?} without a challenge");
        return;
    };
    match harness::one_frame(login, MAX_FRAME_LEN) {
        OneFrame::Frame(Frame::Login { name, proof }, used) => {
            assert_eq!(used, login.len(), "wrote more than one login");
            assert_eq!(name, NAME);
            assert!(auth::verify(TOKEN.as_bytes(), &nonce, NAME, &proof));
        }
        other => panic!("the client sent {other:?} instead of a login"),
    }
});

/// The challenge's nonce, if `data` holds a right preamble and a challenge.
fn challenge_of(data: &[u8]) -> Option<[u8; auth::NONCE_LEN]> {
    let (preamble, rest) = data.split_first_chunk::<PREAMBLE_LEN>()?;
    Preamble::decode_and_check(*preamble).ok()?;
    match harness::one_frame(rest, MAX_FRAME_LEN) {
        OneFrame::Frame(Frame::Challenge { nonce }, _) => Some(nonce),
        _ => None,
    }
}
