//! Replays the fuzz corpus in the ordinary test suite.
//!
//! The fuzz targets (`fuzz/`, run with cargo-fuzz) need nightly flags and
//! libFuzzer, so CI cannot always run them; the inputs they found worth
//! keeping, and any crash input copied into `fuzz/corpus/<target>/` or left
//! in `fuzz/artifacts/<target>/`, are replayed here through the same checks
//! (`fuzz/src/harness.rs`, included below), so a fixed crash stays fixed.

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use reitunnel_proto::{
    ClientId, Frame, FrameKind, Preamble, RefuseCode, StreamId, Transport, TunnelId, MAX_NAME_LEN,
    MAX_TEXT_LEN,
};

use harness::{End, MAX_FRAME_LEN};

/// The targets whose corpus must be present; a new target needs a line in `replay`.
const TARGETS: [&str; 4] = [
    "client_handshake",
    "frame_decode",
    "server_handshake",
    "stream_header",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// `(target, file, bytes)` for every file in `fuzz/<kind>/<target>/`.
fn inputs(kind: &str) -> Vec<(String, PathBuf, Vec<u8>)> {
    let Ok(dirs) = fs::read_dir(fuzz_dir().join(kind)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in dirs {
        let dir = dir.expect("listing fuzz inputs").path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in fs::read_dir(&dir).expect("listing fuzz inputs") {
            let file = file.expect("listing fuzz inputs").path();
            if file.is_file() {
                let bytes = fs::read(&file).expect("reading a fuzz input");
                out.push((target.clone(), file, bytes));
            }
        }
    }
    out.sort();
    out
}

/// What the target of that name checks, minus the real I/O: the handshake
/// and stream-header targets compare the server's and transport's code
/// against exactly these models.
fn replay(target: &str, data: &[u8]) {
    match target {
        "client_handshake" => {
            harness::expected_client_login(data, MAX_FRAME_LEN);
        }
        "frame_decode" => {
            harness::frame_decode(data);
        }
        "server_handshake" => {
            harness::expected_login(data, MAX_FRAME_LEN);
        }
        "stream_header" => {
            harness::one_frame(data, MAX_FRAME_LEN);
        }
        other => panic!("no replay for fuzz target {other:?}: add it to `replay`"),
    }
    // Any bytes are also a chunked frame stream; costs nothing to check.
    harness::frame_decode(data);
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn kept_corpus_and_artifacts_replay_without_failure() {
    let corpus = inputs("corpus");
    for target in TARGETS {
        let n = corpus.iter().filter(|(t, ..)| t == target).count();
        assert!(n > 0, "fuzz/corpus/{target}/ is empty or missing");
    }
    let all: Vec<_> = corpus.into_iter().chain(inputs("artifacts")).collect();
    let mut failures = Vec::new();
    for (target, file, data) in &all {
        if panic::catch_unwind(AssertUnwindSafe(|| replay(target, data))).is_err() {
            failures.push(format!("{} ({})", file.display(), hex(data)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fuzz inputs failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// The seeds hold a valid encoding of every frame kind; minimising the
/// corpus must not lose one, or the fuzzer restarts far from valid frames.
#[test]
fn frame_corpus_decodes_every_frame_kind() {
    let mut seen = BTreeSet::new();
    for (target, _, data) in inputs("corpus") {
        if target == "frame_decode" {
            for frame in harness::frame_decode(&data).frames {
                seen.insert(frame.kind() as u8);
            }
        }
    }
    let missing: Vec<FrameKind> = (0..=u8::MAX)
        .filter_map(FrameKind::from_u8)
        .filter(|k| !seen.contains(&(*k as u8)))
        .collect();
    assert!(
        missing.is_empty(),
        "no input in fuzz/corpus/frame_decode/ decodes to {missing:?}"
    );
}

// ---- Seeds -----------------------------------------------------------------

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf.to_vec()
}

fn one_of_each_kind() -> Vec<Frame> {
    let v4 = "203.0.113.7:8080".parse().unwrap();
    let v6 = "[2001:db8::1]:443".parse().unwrap();
    vec![
        Frame::Challenge { nonce: [7; 32] },
        Frame::Login {
            name: "laptop".into(),
            proof: [0xab; 32],
        },
        Frame::LoginOk {
            client_id: ClientId(1),
            heartbeat_ms: 15_000,
        },
        Frame::LoginRefused {
            code: RefuseCode::AuthFailed,
            message: "bad token".into(),
        },
        Frame::OpenTunnel {
            request_id: 1,
            bind: "0.0.0.0:0".parse().unwrap(),
            target: "127.0.0.1:3000".into(),
            transport: Transport::Tcp,
        },
        Frame::TunnelOpened {
            request_id: 1,
            tunnel_id: TunnelId(3),
            bound: v6,
        },
        Frame::TunnelRefused {
            request_id: 2,
            code: RefuseCode::Forbidden,
            message: "port 22 not allowed".into(),
        },
        Frame::CloseTunnel {
            tunnel_id: TunnelId(3),
        },
        Frame::Ping { seq: 9 },
        Frame::Pong { seq: 9 },
        Frame::StreamHeader {
            tunnel_id: TunnelId(3),
            stream_id: StreamId(17),
            peer: v4,
        },
        Frame::StreamAccepted,
        Frame::StreamRefused {
            message: "connection refused".into(),
        },
        Frame::Goodbye {
            code: RefuseCode::ShuttingDown,
            message: "bye".into(),
        },
        Frame::OpenForward {
            request_id: 2,
            target: "db.internal:5432".into(),
            transport: Transport::Tcp,
        },
        Frame::OpenTunnel {
            request_id: 3,
            bind: "0.0.0.0:5353".parse().unwrap(),
            target: "127.0.0.1:53".into(),
            transport: Transport::Udp,
        },
        Frame::OpenForward {
            request_id: 4,
            target: "dns.internal:53".into(),
            transport: Transport::Udp,
        },
        Frame::Lanes {
            max: 4,
            key: [0x5a; 32],
        },
        Frame::Join {
            client_id: ClientId(1),
            proof: [0xcd; 32],
        },
    ]
}

/// `frame_decode` input: header byte (limit index, chunk count), chunk sizes, stream.
fn framed(limit: u8, chunks: &[u8], stream: &[u8]) -> Vec<u8> {
    assert!(limit < 8 && chunks.len() < 32);
    let mut out = vec![limit | ((chunks.len() as u8) << 3)];
    out.extend_from_slice(chunks);
    out.extend_from_slice(stream);
    out
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut s = Vec::new();
    let frames = one_of_each_kind();
    let preamble = Preamble::CURRENT.encode().to_vec();
    let cat = |parts: &[&[u8]]| parts.concat();

    // frame_decode: every kind whole and in pieces, all back to back, then the error paths.
    for f in &frames {
        let name = format!("{:?}", f.kind()).to_lowercase();
        let one = wire(std::slice::from_ref(f));
        s.push(("frame_decode", name.clone(), framed(7, &[], &one)));
        s.push((
            "frame_decode",
            format!("{name}-chunked"),
            framed(5, &[1, 3, 0, 2], &one),
        ));
    }
    s.push((
        "frame_decode",
        "all-kinds".into(),
        framed(7, &[5, 40, 1, 200], &wire(&frames)),
    ));
    let long = "é".repeat(MAX_TEXT_LEN);
    let long_msg = wire(&[Frame::StreamRefused { message: long }]);
    s.push(("frame_decode", "max-text".into(), framed(5, &[], &long_msg)));
    s.push((
        "frame_decode",
        "too-large-for-limit".into(),
        framed(3, &[], &long_msg),
    ));
    s.push((
        "frame_decode",
        "huge-length".into(),
        framed(7, &[], &[0xff, 0xff, 0xff, 0xff, 1]),
    ));
    s.push((
        "frame_decode",
        "empty-frame".into(),
        framed(7, &[], &[0, 0, 0, 0]),
    ));
    s.push((
        "frame_decode",
        "unknown-kind".into(),
        framed(7, &[], &[0, 0, 0, 1, 0xee]),
    ));
    s.push((
        "frame_decode",
        "short-ping".into(),
        framed(7, &[], &[0, 0, 0, 5, 9, 0, 0, 0, 1]),
    ));
    let mut trailing = wire(&[Frame::Pong { seq: 1 }]);
    trailing[3] += 1;
    trailing.push(0x55);
    s.push((
        "frame_decode",
        "trailing-byte".into(),
        framed(7, &[], &trailing),
    ));
    let mut bad_utf8 = wire(&[Frame::StreamRefused {
        message: "ab".into(),
    }]);
    *bad_utf8.last_mut().unwrap() = 0xff;
    s.push(("frame_decode", "bad-utf8".into(), framed(7, &[], &bad_utf8)));
    let mut bad_family = wire(&[frames[10].clone()]);
    bad_family[4 + 1 + 16] = 5;
    s.push((
        "frame_decode",
        "bad-family".into(),
        framed(7, &[], &bad_family),
    ));
    let mut long_name = wire(&[frames[1].clone()]);
    long_name[5..7].copy_from_slice(&(MAX_NAME_LEN as u16 + 1).to_be_bytes());
    s.push((
        "frame_decode",
        "name-too-long".into(),
        framed(7, &[], &long_name),
    ));
    let ping = wire(&[Frame::Ping { seq: 1 }]);
    s.push((
        "frame_decode",
        "half-frame-at-eof".into(),
        framed(7, &[2], &ping[..7]),
    ));

    // server_handshake: what a client sends before yamux.
    let login = wire(&[frames[1].clone()]);
    s.push((
        "server_handshake",
        "login".into(),
        cat(&[&preamble, &login]),
    ));
    s.push((
        "server_handshake",
        "login-then-yamux".into(),
        cat(&[&preamble, &login, &[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]]),
    ));
    let bad_name = wire(&[Frame::Login {
        name: "a b\n".into(),
        proof: [0; 32],
    }]);
    s.push((
        "server_handshake",
        "login-bad-name".into(),
        cat(&[&preamble, &bad_name]),
    ));
    s.push((
        "server_handshake",
        "http".into(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    s.push((
        "server_handshake",
        "other-version".into(),
        cat(&[&Preamble { version: 9 }.encode(), &login]),
    ));
    let v1 = Preamble::of(1).encode().to_vec();
    s.push(("server_handshake", "login-v1".into(), cat(&[&v1, &login])));
    let join = wire(&[frames[frames.len() - 1].clone()]);
    s.push(("server_handshake", "join".into(), cat(&[&preamble, &join])));
    s.push(("server_handshake", "join-v1".into(), cat(&[&v1, &join])));
    s.push(("server_handshake", "preamble-only".into(), preamble.clone()));
    s.push((
        "server_handshake",
        "short-preamble".into(),
        preamble[..3].to_vec(),
    ));
    s.push((
        "server_handshake",
        "ping-not-login".into(),
        cat(&[&preamble, &ping]),
    ));
    s.push((
        "server_handshake",
        "truncated-login".into(),
        cat(&[&preamble, &login[..20]]),
    ));
    s.push((
        "server_handshake",
        "huge-length".into(),
        cat(&[&preamble, &[0xff, 0xff, 0xff, 0xff]]),
    ));
    s.push((
        "server_handshake",
        "long-name".into(),
        cat(&[&preamble, &long_name]),
    ));

    // client_handshake: what a server sends during login.
    let challenge = wire(&[frames[0].clone()]);
    let ok = wire(&[frames[2].clone()]);
    let refused = wire(&[frames[3].clone()]);
    let lanes = wire(&[frames[frames.len() - 2].clone()]);
    s.push((
        "client_handshake",
        "ok".into(),
        cat(&[&preamble, &challenge, &ok, &lanes]),
    ));
    s.push((
        "client_handshake",
        "ok-v1".into(),
        cat(&[&v1, &challenge, &ok]),
    ));
    s.push((
        "client_handshake",
        "ok-without-lanes".into(),
        cat(&[&preamble, &challenge, &ok]),
    ));
    s.push((
        "client_handshake",
        "ok-then-yamux".into(),
        cat(&[
            &preamble,
            &challenge,
            &ok,
            &lanes,
            &[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ]),
    ));
    s.push((
        "client_handshake",
        "refused".into(),
        cat(&[&preamble, &challenge, &refused]),
    ));
    s.push((
        "client_handshake",
        "no-challenge".into(),
        cat(&[&preamble, &ok]),
    ));
    s.push((
        "client_handshake",
        "ping-not-answer".into(),
        cat(&[&preamble, &challenge, &ping]),
    ));
    s.push((
        "client_handshake",
        "challenge-only".into(),
        cat(&[&preamble, &challenge]),
    ));
    s.push((
        "client_handshake",
        "truncated-challenge".into(),
        cat(&[&preamble, &challenge[..9]]),
    ));
    s.push((
        "client_handshake",
        "other-version".into(),
        Preamble { version: 7 }.encode().to_vec(),
    ));
    s.push((
        "client_handshake",
        "ssh-banner".into(),
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
    ));
    s.push((
        "client_handshake",
        "huge-length".into(),
        cat(&[&preamble, &challenge, &[0xff, 0xff, 0xff, 0xff]]),
    ));

    // stream_header: what a server sends first on a data stream, then relayed bytes.
    let v6_header = wire(&[Frame::StreamHeader {
        tunnel_id: TunnelId(u64::MAX),
        stream_id: StreamId(0),
        peer: "[::ffff:192.0.2.1]:65535".parse().unwrap(),
    }]);
    let header = wire(&[frames[10].clone()]);
    s.push((
        "stream_header",
        "v4-then-data".into(),
        cat(&[&header, b"GET / HTTP/1.1\r\n\r\n"]),
    ));
    s.push(("stream_header", "v6".into(), v6_header.clone()));
    s.push((
        "stream_header",
        "truncated".into(),
        v6_header[..v6_header.len() - 1].to_vec(),
    ));
    s.push(("stream_header", "bad-family".into(), bad_family.clone()));
    s.push((
        "stream_header",
        "refused-not-header".into(),
        wire(&[frames[12].clone()]),
    ));
    s.push((
        "stream_header",
        "huge-length".into(),
        vec![0x7f, 0xff, 0xff, 0xff, 11],
    ));
    s
}

/// Writes the seed inputs into `fuzz/corpus/<target>/seed-*`. Run by hand
/// (see fuzz/README.md), then minimise with `cargo fuzz cmin`.
#[test]
#[ignore = "writes seed inputs into fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, name, data) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

/// The seeds themselves must pass, so a broken seed is caught before the fuzzer runs.
#[test]
fn seeds_replay_and_hold_what_they_claim() {
    let seeds = seeds();
    for (target, _, data) in &seeds {
        replay(target, data);
    }
    let all_kinds = &seeds.iter().find(|(_, n, _)| n == "all-kinds").unwrap().2;
    let decoded = harness::frame_decode(all_kinds);
    assert_eq!(decoded.frames, one_of_each_kind());
    assert_eq!(decoded.end, End::Clean);
}
