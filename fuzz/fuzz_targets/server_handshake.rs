//! Everything a client might send before yamux starts (preamble, then the
//! login frame), fed to the server's real `read_login` over an in-memory
//! connection. It must finish at once with the outcome the codec predicts,
//! and have written exactly our preamble and, if the client's was right, a
//! challenge; a joining connection's frame likewise.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use reitunnel_fuzz::harness::{self, LoginOutcome, OneFrame, MAX_FRAME_LEN};
use reitunnel_fuzz::{run_to_completion, Wire};
use reitunnel_proto::{Frame, Preamble, PREAMBLE_LEN};
use reitunnel_server::{fuzzing, SessionError};
use reitunnel_transport::FrameIoError;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);

fuzz_target!(|data: &[u8]| {
    let mut wire = Wire::new(data);
    let got = run_to_completion(fuzzing::read_login(&mut wire, PEER, MAX_FRAME_LEN));
    let want = harness::expected_login(data, MAX_FRAME_LEN);
    let nonce = match (got, want) {
        (Ok(fuzzing::ClientHello::Login(login)), LoginOutcome::Login { name, proof }) => {
            assert_eq!(login.name, name);
            assert_eq!(login.proof, proof);
            // The session checks the name next; any name must get an answer.
            let _ = fuzzing::check_name(&login.name);
            Some(login.nonce)
        }
        (Ok(fuzzing::ClientHello::Join(join)), LoginOutcome::Join { client_id, proof }) => {
            assert_eq!((join.client_id, join.proof), (client_id, proof));
            Some(join.nonce)
        }
        (
            Err(SessionError::Login {
                source: FrameIoError::Closed,
                ..
            }),
            LoginOutcome::Closed,
        ) => None,
        (Err(SessionError::Preamble { source, .. }), LoginOutcome::BadPreamble(expected)) => {
            assert_eq!(source, expected);
            None
        }
        (
            Err(SessionError::Login {
                source: FrameIoError::Decode(e),
                ..
            }),
            LoginOutcome::Invalid(expected),
        ) => {
            assert_eq!(e, expected);
            None
        }
        (Err(SessionError::UnexpectedFrame { got, .. }), LoginOutcome::Unexpected(expected)) => {
            assert_eq!(got, expected);
            None
        }
        (got, want) => panic!("read_login gave {got:?} where the codec says {want:?}"),
    };

    // The server answers only after a whole preamble, and challenges only a right one.
    let written = &wire.written[..];
    if data.len() < PREAMBLE_LEN {
        assert!(
            written.is_empty(),
            "wrote {written:02x?} before the client's preamble"
        );
        return;
    }
    let (ours, challenge) = written.split_at(PREAMBLE_LEN.min(written.len()));
    let theirs = Preamble::decode_and_check(data[..PREAMBLE_LEN].try_into().unwrap());
    assert_eq!(ours, Preamble::answer(&theirs).encode(), "answered in the client's version");
    if theirs.is_err() {
        assert!(
            challenge.is_empty(),
            "challenged a client with a bad preamble"
        );
        return;
    }
    match harness::one_frame(challenge, MAX_FRAME_LEN) {
        OneFrame::Frame(Frame::Challenge { nonce: sent }, used) => {
            assert_eq!(used, challenge.len(), "wrote more than one challenge");
            if let Some(nonce) = nonce {
                assert_eq!(nonce, sent, "login reports a nonce other than the one sent");
            }
        }
        other => panic!("the server sent {other:?} instead of a challenge"),
    }
});
