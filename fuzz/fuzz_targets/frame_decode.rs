//! Arbitrary bytes, fed in fuzzer-chosen chunks to the control stream's
//! `FrameCodec`, must decode without panicking, independently of how the
//! reads split them, and every decoded frame must round-trip. The input
//! layout is documented on `harness::frame_decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reitunnel_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    harness::frame_decode(data);
});
