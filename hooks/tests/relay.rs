//! The hooked relay over in-memory `tokio::io::duplex` pipes: integrity,
//! metering, half-close, hook verdicts on the data path, chunk sizes.
#![cfg(feature = "tokio")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{chain_of, counters_behind, counters_then, stream, Act, Log, QuietPanics, Rec};
use reitunnel_hooks::builtin::Counters;
use reitunnel_hooks::relay::{relay, RelayConfig};
use reitunnel_hooks::{
    CloseReason, DataEvent, Direction, ErrorStrategy, Hook, HookChain, Reason, RefuseCode,
    StreamInfo, Totals, Verdict,
};
use tokio::io::{duplex, split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const MIB: usize = 1024 * 1024;
const PIPE: usize = 64 * 1024;

/// Deterministic pseudo-random bytes (xorshift64*), so a shifted, dropped
/// or duplicated chunk cannot go unnoticed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, as a checksum.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Everything `r` yields until EOF.
async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.expect("read");
    out
}

/// Fails the test instead of hanging forever if the relay stalls (say, it
/// never half-closes or flushes). A safety net, not a synchronisation point
/// and not a timing assertion: every test here takes well under a second.
async fn hang_guard(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("relay test stalled for 120 s: the relay never finished");
}

/// Writes all of `bytes` to `w`, then shuts its sending side down (EOF for the reader).
async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) {
    w.write_all(bytes).await.unwrap();
    w.shutdown().await.unwrap();
}

/// Checks that `got` is `sent`, by length, by checksum and byte for byte;
/// `what` names the direction in the failure message.
fn assert_same_bytes(got: &[u8], sent: &[u8], what: &str) {
    assert_eq!(got.len(), sent.len(), "{what}: length");
    assert_eq!(checksum(got), checksum(sent), "{what}: checksum");
    assert!(got == sent, "{what} bytes differ");
}

/// What the relay gets: the near ends of the visitor and service pipes, the
/// stream they carry and the relay config.
struct Near {
    visitor: DuplexStream,
    service: DuplexStream,
    stream: Arc<StreamInfo>,
    cfg: RelayConfig,
}

impl Near {
    /// Opens the stream on `chain`, relays over the near ends until the
    /// relay ends, and closes the stream with its reason (as the server does).
    async fn relay(&mut self, chain: &HookChain) -> CloseReason {
        let open = chain
            .open_stream(self.stream.clone())
            .expect("stream opens");
        let reason = relay(&mut self.visitor, &mut self.service, &open, &self.cfg).await;
        open.close(reason.clone());
        reason
    }
}

/// A fresh stream over two fresh pipes relayed with `cfg`: the far visitor
/// and service ends (what the test drives) and the [`Near`] side.
fn pipes_with(cfg: RelayConfig) -> (DuplexStream, DuplexStream, Near) {
    let (visitor, visitor_near) = duplex(PIPE);
    let (service_near, service) = duplex(PIPE);
    let near = Near {
        visitor: visitor_near,
        service: service_near,
        stream: stream(),
        cfg,
    };
    (visitor, service, near)
}

/// [`pipes_with`] the default relay config.
fn pipes() -> (DuplexStream, DuplexStream, Near) {
    pipes_with(RelayConfig::default())
}

/// Records the direction and length of every chunk it is offered.
#[derive(Default)]
struct Chunks(Mutex<Vec<(Direction, usize)>>);

impl Chunks {
    fn lens(&self, dir: Direction) -> Vec<usize> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| *d == dir)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Hook for Chunks {
    fn name(&self) -> &str {
        "chunks"
    }
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        self.0.lock().unwrap().push((ev.direction, ev.data.len()));
        Verdict::Continue
    }
}

/// The bytes metered on `s` so far.
fn totals(s: &StreamInfo) -> Totals {
    s.meter.totals(s.opened_at)
}

#[tokio::test]
async fn bytes_arrive_intact_both_ways_and_are_metered() {
    hang_guard(async {
        let chunks = Arc::new(Chunks::default());
        let (counters, chain) = counters_then(chunks.clone());
        let (visitor, service, mut near) = pipes();
        let (mut visitor_rx, mut visitor_tx) = split(visitor);
        let (mut service_rx, mut service_tx) = split(service);

        let up = pseudo_random(4 * MIB, 0x5eed_0001);
        let down = pseudo_random(4 * MIB + 13, 0x5eed_0002);

        let (reason, (), (), got_up, got_down) = tokio::join!(
            near.relay(&chain),
            send_all(&mut visitor_tx, &up),
            send_all(&mut service_tx, &down),
            read_all(&mut service_rx),
            read_all(&mut visitor_rx),
        );

        assert_eq!(reason, CloseReason::Finished);
        assert_same_bytes(&got_up, &up, "visitor -> service");
        assert_same_bytes(&got_down, &down, "service -> visitor");

        let t = totals(&near.stream);
        assert_eq!(t.bytes_in, up.len() as u64);
        assert_eq!(t.bytes_out, down.len() as u64);
        let snap = counters.snapshot();
        assert_eq!((snap.bytes_in, snap.bytes_out), (t.bytes_in, t.bytes_out));
        let sum = |d| chunks.lens(d).iter().sum::<usize>();
        assert_eq!(sum(Direction::Ingress), up.len());
        assert_eq!(sum(Direction::Egress), down.len());
        assert!(chunks
            .lens(Direction::Ingress)
            .iter()
            .chain(&chunks.lens(Direction::Egress))
            .all(|&n| n > 0 && n <= near.cfg.max_chunk));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arrive_intact_with_every_end_on_its_own_task() {
    hang_guard(async {
        let chain = HookChain::builder().hook(Counters::new()).build();
        let (visitor, service, mut near) = pipes();
        let s = near.stream.clone();
        let (mut visitor_rx, mut visitor_tx) = split(visitor);
        let (mut service_rx, mut service_tx) = split(service);
        let up = pseudo_random(MIB + 1, 7);
        let down = pseudo_random(MIB - 1, 8);

        let relay_task = tokio::spawn(async move { near.relay(&chain).await });
        let tasks = [
            tokio::spawn({
                let up = up.clone();
                async move {
                    send_all(&mut visitor_tx, &up).await;
                    Vec::new()
                }
            }),
            tokio::spawn({
                let down = down.clone();
                async move {
                    send_all(&mut service_tx, &down).await;
                    Vec::new()
                }
            }),
            tokio::spawn(async move { read_all(&mut service_rx).await }),
            tokio::spawn(async move { read_all(&mut visitor_rx).await }),
        ];
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(relay_task.await.unwrap(), CloseReason::Finished);
        assert_same_bytes(&results[2], &up, "visitor -> service");
        assert_same_bytes(&results[3], &down, "service -> visitor");
        let t = totals(&s);
        assert_eq!(
            (t.bytes_in, t.bytes_out),
            (up.len() as u64, down.len() as u64)
        );
    })
    .await;
}

#[tokio::test]
async fn visitor_eof_half_closes_the_service_and_the_answer_still_flows() {
    hang_guard(async {
        let chain = HookChain::builder().hook(Counters::new()).build();
        let (mut visitor, mut service, mut near) = pipes();

        let (reason, answer, ()) = tokio::join!(
            near.relay(&chain),
            async {
                // Done sending, still listening.
                send_all(&mut visitor, b"GET / HTTP/1.0\r\n\r\n").await;
                read_all(&mut visitor).await
            },
            async {
                // The service sees EOF only if the relay half-closed its side ...
                let request = read_all(&mut service).await;
                assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
                // ... and its answer still goes back after that.
                let body = pseudo_random(200_000, 3);
                service.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
                send_all(&mut service, &body).await;
            },
        );
        assert_eq!(reason, CloseReason::Finished);
        let mut expected = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        expected.extend(pseudo_random(200_000, 3));
        assert!(answer == expected, "answer differs");
        let t = totals(&near.stream);
        assert_eq!(t.bytes_in, 18);
        assert_eq!(t.bytes_out, expected.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn service_eof_half_closes_the_visitor_and_uploads_still_flow() {
    hang_guard(async {
        let chain = HookChain::default();
        let (mut visitor, mut service, mut near) = pipes();
        let upload = pseudo_random(300_000, 9);

        let (reason, (), received) = tokio::join!(
            near.relay(&chain),
            async {
                // The visitor is told the service is done sending ...
                assert_eq!(read_all(&mut visitor).await, b"ready");
                // ... and can still upload afterwards.
                send_all(&mut visitor, &upload).await;
            },
            async {
                send_all(&mut service, b"ready").await;
                read_all(&mut service).await
            },
        );
        assert_eq!(reason, CloseReason::Finished);
        assert!(received == upload, "upload differs");
        let t = totals(&near.stream);
        assert_eq!((t.bytes_in, t.bytes_out), (upload.len() as u64, 5));
    })
    .await;
}

/// Closes the stream on the first chunk in `dir`.
struct CloseFirst {
    dir: Direction,
    calls: Mutex<usize>,
}

impl Hook for CloseFirst {
    fn name(&self) -> &str {
        "close_first"
    }
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        *self.calls.lock().unwrap() += 1;
        if ev.direction == self.dir {
            Verdict::Close(Reason::limit_reached("byte quota reached"))
        } else {
            Verdict::Continue
        }
    }
}

#[tokio::test]
async fn hook_close_on_first_chunk_forwards_nothing() {
    hang_guard(async {
        for dir in [Direction::Ingress, Direction::Egress] {
            let closer = Arc::new(CloseFirst {
                dir,
                calls: Mutex::new(0),
            });
            let (counters, chain) = counters_behind(closer.clone());
            let (mut visitor, mut service, mut near) = pipes();

            // The data is waiting before the relay starts.
            let (sender, receiver) = match dir {
                Direction::Ingress => (&mut visitor, &mut service),
                Direction::Egress => (&mut service, &mut visitor),
            };
            sender
                .write_all(b"first chunk, must not pass")
                .await
                .unwrap();

            let reason = near.relay(&chain).await;
            assert_eq!(
                reason,
                CloseReason::Hook(Reason::limit_reached("byte quota reached")),
                "{dir:?}"
            );
            assert_eq!(*closer.calls.lock().unwrap(), 1, "{dir:?}");

            // Whoever owns the relay drops both near ends after a close.
            drop(near.visitor);
            drop(near.service);
            assert!(
                read_all(receiver).await.is_empty(),
                "{dir:?}: a byte leaked"
            );
            let t = totals(&near.stream);
            assert_eq!((t.bytes_in, t.bytes_out), (0, 0), "{dir:?}");
            // Close short-circuits: hooks after the closer never saw the chunk.
            let snap = counters.snapshot();
            assert_eq!((snap.bytes_in, snap.bytes_out), (0, 0), "{dir:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn panicking_data_hook_closes_the_relay_under_stop_on_error() {
    hang_guard(async {
        let _quiet = QuietPanics::new();
        let (log, chain) = chain_of(
            ErrorStrategy::StopOnError,
            &[("boom", Act::Panic)],
            Rec::data,
        );
        let (mut visitor, mut service, mut near) = pipes();
        visitor.write_all(b"hello").await.unwrap();
        let reason = near.relay(&chain).await;
        let CloseReason::Hook(r) = &reason else {
            panic!("expected a hook close, got {reason:?}");
        };
        assert_eq!(r.code, RefuseCode::Other);
        assert!(
            r.message.contains("boom") && r.message.contains("panicked"),
            "{r}"
        );
        assert_eq!(
            log.matching("boom:error"),
            ["boom:error stream hook=boom panicked"]
        );
        drop(near.service);
        assert!(read_all(&mut service).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn panicking_data_hook_is_ignored_under_collect_and_continue() {
    hang_guard(async {
        let _quiet = QuietPanics::new();
        let (log, chain) = chain_of(
            ErrorStrategy::CollectAndContinue,
            &[("boom", Act::Panic)],
            Rec::data,
        );
        let (mut visitor, mut service, mut near) = pipes();
        send_all(&mut visitor, b"hello").await;
        service.shutdown().await.unwrap();
        let (reason, got) = tokio::join!(near.relay(&chain), read_all(&mut service));
        assert_eq!(reason, CloseReason::Finished);
        assert_eq!(got, b"hello");
        assert!(log.count("boom:error") >= 1);
    })
    .await;
}

/// Throttles every chunk and remembers when it was asked.
struct Throttler {
    wait: Duration,
    asked: Mutex<Vec<tokio::time::Instant>>,
}

impl Hook for Throttler {
    fn name(&self) -> &str {
        "throttler"
    }
    fn on_data(&self, _: &DataEvent<'_>) -> Verdict {
        self.asked.lock().unwrap().push(tokio::time::Instant::now());
        Verdict::Throttle(self.wait)
    }
}

// This test runs on the real clock and asserts only lower bounds: tokio
// rounds timer deadlines *up* to the next millisecond and never fires a
// `Sleep` early, so "at least the throttle duration elapsed" holds on any
// machine, however slow.
#[tokio::test]
async fn throttle_delays_forwarding_and_meters_behind_it_see_every_byte() {
    hang_guard(async {
        const WAIT: Duration = Duration::from_millis(30);
        let throttler = Arc::new(Throttler {
            wait: WAIT,
            asked: Mutex::new(Vec::new()),
        });
        let (counters, chain) = counters_behind(throttler.clone());
        let (mut visitor, mut service, mut near) = pipes_with(RelayConfig {
            initial_chunk: 1000,
            max_chunk: 1000,
            ..RelayConfig::default()
        });
        let payload = pseudo_random(3_000, 11);
        send_all(&mut visitor, &payload).await;
        service.shutdown().await.unwrap();

        let start = tokio::time::Instant::now();
        let (reason, (first_byte_at, got)) = tokio::join!(near.relay(&chain), async {
            let mut first = [0u8; 1];
            service.read_exact(&mut first).await.unwrap();
            let at = tokio::time::Instant::now();
            let mut got = first.to_vec();
            got.extend(read_all(&mut service).await);
            (at, got)
        },);
        let elapsed = start.elapsed();

        assert_eq!(reason, CloseReason::Finished);
        assert!(got == payload, "throttled bytes differ");
        let asked = throttler.asked.lock().unwrap().clone();
        // At most 1000 bytes per chunk: at least three throttled chunks, one
        // after the other.
        assert!(asked.len() >= 3, "{} chunks", asked.len());
        assert!(
            first_byte_at >= asked[0] + WAIT,
            "first byte forwarded {:?} after its throttle verdict, want >= {WAIT:?}",
            first_byte_at - asked[0]
        );
        let min_total = WAIT * u32::try_from(asked.len()).unwrap();
        assert!(elapsed >= min_total, "{elapsed:?} < {min_total:?}");
        // The counters behind the throttler saw every byte.
        assert_eq!(counters.snapshot().bytes_in, payload.len() as u64);
        assert_eq!(totals(&near.stream).bytes_in, payload.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn chunks_never_exceed_max_chunk_and_sum_to_the_bytes_sent() {
    hang_guard(async {
        for (initial_chunk, max_chunk) in [(100, 1000), (4096, 1000), (0, 7), (8192, 65_536)] {
            let chunks = Arc::new(Chunks::default());
            let chain = HookChain::builder().shared(chunks.clone()).build();
            let (mut visitor, mut service, mut near) = pipes_with(RelayConfig {
                initial_chunk,
                max_chunk,
                ..RelayConfig::default()
            });
            let payload = pseudo_random(20_000, 5);
            let answer = pseudo_random(30_001, 6);
            // Everything is buffered before the relay starts (the pipes hold 64 KiB).
            send_all(&mut visitor, &payload).await;
            send_all(&mut service, &answer).await;

            let (reason, got_up, got_down) = tokio::join!(
                near.relay(&chain),
                read_all(&mut service),
                read_all(&mut visitor),
            );
            let label = format!("initial {initial_chunk}, max {max_chunk}");
            assert_eq!(reason, CloseReason::Finished, "{label}");
            assert!(
                got_up == payload && got_down == answer,
                "{label}: bytes differ"
            );

            for (dir, sent) in [(Direction::Ingress, &payload), (Direction::Egress, &answer)] {
                let lens = chunks.lens(dir);
                assert!(
                    lens.iter().all(|&n| n > 0 && n <= max_chunk),
                    "{label} {dir:?}: {lens:?}"
                );
                assert_eq!(lens.iter().sum::<usize>(), sent.len(), "{label} {dir:?}");
                // A direction starts with the small buffer.
                let first_max = initial_chunk.clamp(1, max_chunk);
                assert!(lens[0] <= first_max, "{label} {dir:?}: first {}", lens[0]);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_chain_that_wants_no_data_still_relays_and_meters() {
    hang_guard(async {
        let log = Log::new();
        // Its on_data would panic (and close the stream) if the relay called it.
        let chain = HookChain::builder()
            .hook(Rec::new("quiet", &log).data(Act::Panic).no_data())
            .build();
        assert!(!chain.wants_data());
        let (mut visitor, mut service, mut near) = pipes();
        let payload = pseudo_random(100_000, 21);
        let (reason, (), got) = tokio::join!(
            near.relay(&chain),
            async {
                send_all(&mut visitor, &payload).await;
                assert!(read_all(&mut visitor).await.is_empty());
            },
            async {
                service.shutdown().await.unwrap();
                read_all(&mut service).await
            },
        );
        assert_eq!(reason, CloseReason::Finished);
        assert!(got == payload);
        // The stream opened and closed; on_data was never called.
        assert_eq!(
            log.entries(),
            [
                "quiet:stream_open",
                "quiet:stream_close finished in=100000 out=0 streams=1"
            ]
        );
        assert_eq!(totals(&near.stream).bytes_in, payload.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn io_failure_ends_the_relay_with_an_error_reported_to_hooks() {
    hang_guard(async {
        let log = Log::new();
        let (counters, chain) = counters_behind(Arc::new(Rec::new("rec", &log)));
        let (mut visitor, service, mut near) = pipes();
        drop(service); // the service went away: writing to it fails
        visitor.write_all(b"hello").await.unwrap();

        let reason = near.relay(&chain).await;
        let CloseReason::Error(msg) = &reason else {
            panic!("expected an I/O error, got {reason:?}");
        };
        assert!(msg.starts_with("service write failed"), "{msg}");
        assert_eq!(
            log.matching("rec:error"),
            [format!("rec:error stream other: {msg}")]
        );
        assert_eq!(counters.snapshot().errors, 1);
        assert_eq!(totals(&near.stream).bytes_in, 0);
    })
    .await;
}

/// A service side that buffers writes until flushed, as `BufWriter` or TLS do.
#[tokio::test]
async fn buffered_writes_are_flushed_when_the_reader_goes_idle() {
    hang_guard(async {
        let chain = HookChain::default();
        let (mut visitor, mut service, mut near) = pipes();
        let mut service_near = tokio::io::BufWriter::new(near.service);

        let open = chain.open_stream(near.stream.clone()).unwrap();
        let relay_fut = relay(&mut near.visitor, &mut service_near, &open, &near.cfg);
        let conversation = async {
            // Neither side closes: only a flush gets "ping" to the service.
            visitor.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            service.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            service.write_all(b"pong").await.unwrap();
            visitor.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            visitor.shutdown().await.unwrap();
            service.shutdown().await.unwrap();
            assert!(read_all(&mut service).await.is_empty());
            assert!(read_all(&mut visitor).await.is_empty());
        };
        let (reason, ()) = tokio::join!(relay_fut, conversation);
        assert_eq!(reason, CloseReason::Finished);
    })
    .await;
}

/// Throttles every chunk by `wait` and wakes the test once it was asked.
struct HoldAndTell {
    wait: Duration,
    asked: tokio::sync::Notify,
}

impl Hook for HoldAndTell {
    fn name(&self) -> &str {
        "hold"
    }
    fn on_data(&self, _: &DataEvent<'_>) -> Verdict {
        self.asked.notify_one();
        Verdict::Throttle(self.wait)
    }
}

/// Runs a relay whose only hook throttles the first chunk by `wait`, waits
/// until the hook was asked, then cancels the relay. Returns how the relay
/// task ended and what reached the service.
///
/// On the current-thread runtime the relay task handles the verdict in the
/// same poll in which the hook notifies, so by the time this test task runs
/// again the relay is either parked on its throttle or has panicked: no
/// timing involved.
async fn throttle_then_cancel(wait: Duration) -> (tokio::task::JoinError, Vec<u8>) {
    let hook = Arc::new(HoldAndTell {
        wait,
        asked: tokio::sync::Notify::new(),
    });
    let chain = HookChain::builder().shared(hook.clone()).build();
    let (mut visitor, mut service, mut near) = pipes();
    visitor.write_all(b"held back").await.unwrap();
    let task = tokio::spawn(async move { near.relay(&chain).await });
    hook.asked.notified().await;
    task.abort(); // drops the near ends with the future
    let ended = task.await.expect_err("the relay cannot finish by itself");
    (ended, read_all(&mut service).await)
}

#[tokio::test]
async fn a_long_throttle_holds_the_chunk_until_the_relay_is_dropped() {
    hang_guard(async {
        let (ended, received) = throttle_then_cancel(Duration::from_secs(3600)).await;
        assert!(ended.is_cancelled(), "relay task ended with {ended:?}");
        assert!(received.is_empty(), "a throttled byte was forwarded early");
    })
    .await;
}

#[tokio::test]
async fn an_unbounded_throttle_holds_the_chunk_without_panicking() {
    hang_guard(async {
        let (ended, received) = throttle_then_cancel(Duration::MAX).await;
        assert!(
            ended.is_cancelled(),
            "the relay task panicked on Verdict::Throttle(Duration::MAX) instead of waiting: {ended:?}"
        );
        assert!(received.is_empty(), "a throttled byte was forwarded early");
    })
    .await;
}

/// On a paused clock: a stream that moves a byte every 6 s lives past its
/// 10 s idle timeout many times over; once it falls silent it is closed
/// exactly 10 s after its last byte, with a reason that says so.
#[tokio::test(start_paused = true)]
async fn a_stream_idle_past_its_timeout_is_closed_and_a_busy_one_is_not() {
    const AFTER: Duration = Duration::from_secs(10);
    let chain = HookChain::default();
    let (mut visitor, mut service, mut near) = pipes_with(RelayConfig {
        idle_timeout: Some(AFTER),
        ..RelayConfig::default()
    });
    let start = tokio::time::Instant::now();
    let ((reason, ended_at), last_byte_at) = tokio::join!(
        async {
            let reason = near.relay(&chain).await;
            (reason, tokio::time::Instant::now())
        },
        async {
            let mut b = [0u8; 1];
            let mut last = start;
            for i in 0..5u8 {
                // Each way in turn.
                let (from, to) = if i % 2 == 0 {
                    (&mut visitor, &mut service)
                } else {
                    (&mut service, &mut visitor)
                };
                from.write_all(&[i]).await.unwrap();
                to.read_exact(&mut b).await.unwrap();
                assert_eq!(b[0], i);
                last = tokio::time::Instant::now();
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            last
        },
    );
    assert_eq!(
        reason,
        CloseReason::Timeout("idle: no bytes either way for 10s".into())
    );
    assert_eq!(last_byte_at - start, Duration::from_secs(24));
    let silent = ended_at - last_byte_at;
    assert!(
        silent >= AFTER && silent < AFTER + Duration::from_millis(10),
        "closed after {silent:?} of silence"
    );
}
