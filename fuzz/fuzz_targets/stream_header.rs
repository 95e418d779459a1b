//! What a server sends first on a data stream, read as the client reads it
//! (`reitunnel_transport::read_frame`, then "is it a `StreamHeader`?"). The
//! exact-read decoder must agree with the buffered codec and must not read a
//! byte past the frame, because the visitor's relayed data follows it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reitunnel_fuzz::harness::{self, OneFrame, MAX_FRAME_LEN};
use reitunnel_fuzz::run_to_completion;
use reitunnel_proto::Frame;
use reitunnel_transport::{read_frame, FrameIoError};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let got = run_to_completion(read_frame(&mut rest, MAX_FRAME_LEN));
    let want = harness::one_frame(data, MAX_FRAME_LEN);
    match (got, want) {
        (Ok(frame), OneFrame::Frame(expected, used)) => {
            assert_eq!(frame, expected);
            assert_eq!(
                data.len() - rest.len(),
                used,
                "read_frame consumed bytes that belong to the relayed data"
            );
            if let Frame::StreamHeader {
                tunnel_id,
                stream_id,
                peer,
            } = frame
            {
                // What the client logs and looks up; must be printable.
                let _ = format!("{tunnel_id} {stream_id} {peer}");
            }
        }
        (Err(FrameIoError::Closed), OneFrame::Closed) => {}
        (Err(FrameIoError::Decode(e)), OneFrame::Invalid(expected)) => assert_eq!(e, expected),
        (got, want) => panic!("read_frame gave {got:?} where the codec says {want:?}"),
    }
});
