//! Each fault of the proxy does what it says, with an echo service behind it.

use std::time::{Duration, Instant};

use reitunnel_testkit::{echo_service, FaultProxy, Toward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A failure guard, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(30);

async fn proxied() -> (FaultProxy, TcpStream) {
    let proxy = FaultProxy::start(echo_service().await).unwrap();
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    (proxy, stream)
}

async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert!(back == bytes, "the echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_bytes_both_ways_and_counts_them() {
    let (proxy, mut stream) = proxied().await;
    let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    round_trip(&mut stream, &bytes).await;
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.moved(Toward::Target), 1 << 20);
    assert_eq!(proxy.moved(Toward::Connector), 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_holds_each_chunk_back() {
    let (proxy, mut stream) = proxied().await;
    proxy.set_latency(Duration::from_millis(40));
    let start = Instant::now();
    round_trip(&mut stream, b"ping").await;
    // A lower bound only: held back at least twice the one-way latency.
    assert!(start.elapsed() >= Duration::from_millis(80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_resets_both_ends_and_new_connections_go_through() {
    let (proxy, mut stream) = proxied().await;
    round_trip(&mut stream, b"before").await;
    proxy.cut();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the cut reaches the connector");
    let kind = read.expect_err("reset, not an orderly end").kind();
    assert_eq!(kind, std::io::ErrorKind::ConnectionReset);
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut again, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_ends_one_direction_and_the_other_flows_on() {
    let (proxy, mut stream) = proxied().await;
    round_trip(&mut stream, b"before").await;
    // The echo service reads an end and half-closes in turn, which ends
    // the way back in order: the connector reads everything, then EOF.
    proxy.shut(Toward::Target);
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("an orderly end")
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_drops_bytes_on_a_connection_that_stays_open() {
    let (proxy, mut stream) = proxied().await;
    proxy.black_hole(true);
    stream.write_all(b"lost").await.unwrap();
    // The proxy runs on its own thread: wait until it has read (and dropped) them.
    while proxy.dropped(Toward::Target) < 4 {
        tokio::task::yield_now().await;
    }
    proxy.black_hole(false);
    round_trip(&mut stream, b"kept").await;
    assert_eq!(proxy.moved(Toward::Target), 4, "only 'kept' went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_holds_bytes_back_until_it_lifts() {
    let (proxy, mut stream) = proxied().await;
    proxy.stall(Toward::Target, true);
    stream.write_all(b"held").await.unwrap();
    assert_eq!(proxy.moved(Toward::Target), 0, "nothing read while stalled");
    proxy.stall(Toward::Target, false);
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("the stall lifted")
        .unwrap();
    assert_eq!(&back, b"held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_paces_the_bytes() {
    let (proxy, mut stream) = proxied().await;
    proxy.throttle(Some(512 * 1024));
    let start = Instant::now();
    round_trip(&mut stream, &vec![5u8; 256 * 1024]).await;
    // A lower bound only: 256 KiB at 512 KiB/s takes at least about half a second.
    assert!(start.elapsed() >= Duration::from_millis(400));
    proxy.throttle(None);
    round_trip(&mut stream, &vec![6u8; 1 << 20]).await;
}
