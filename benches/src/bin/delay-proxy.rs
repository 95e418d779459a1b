//! A TCP proxy that holds every byte a fixed time in each direction, with
//! no bandwidth cap: a long link on loopback, for benchmarks.
//!
//! Loopback hides round trips, and with them every flow-control window
//! above TCP. Put this between a tunnel's client and server and a window
//! that is too small shows as throughput capped at window / round trip.
//! It ends TCP on both sides, so the kernel's own windows never bind here
//! (on a real path they do; see docs/PERFORMANCE.md).
//!
//! `delay-proxy LISTEN_ADDR TARGET_ADDR ONE_WAY_MS`; prints the bound
//! address on stdout, then serves until killed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction; with 256 KiB reads that is up to 1 GiB,
/// more than any link here carries in one delay.
const IN_FLIGHT: usize = 4096;
const READ_SIZE: usize = 256 * 1024;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, delay] = &args[..] else {
        eprintln!("usage: delay-proxy LISTEN_ADDR TARGET_ADDR ONE_WAY_MS");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR");
    let target: SocketAddr = target.parse().expect("TARGET_ADDR");
    let delay = Duration::from_millis(delay.parse().expect("ONE_WAY_MS"));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            println!("{}", listener.local_addr()?);
            loop {
                let (inbound, _) = listener.accept().await?;
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::spawn(delayed(ri, wo, delay));
                        tokio::spawn(delayed(ro, wi, delay));
                    }
                });
            }
        })
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        loop {
            buf.reserve(READ_SIZE);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if tx.send((Instant::now() + delay, chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
