//! Services and task helpers for tests that run on tokio.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// An echo service on 127.0.0.1:0 that half-closes after its peer does;
/// it runs until the runtime ends.
pub async fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A UDP echo service on 127.0.0.1:0: every datagram goes back whole to
/// its sender. It runs until the runtime ends.
pub async fn udp_echo_service() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A service on 127.0.0.1:0 that writes to every connection until the
/// write fails: a download that a visitor who stops reading leaves stuck in
/// the tunnel's buffers. It runs until the runtime ends.
pub async fn firehose_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5a; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// An echo service on 127.0.0.1:0 on plain threads, one per connection,
/// for tests and programs without a runtime; half-closes after its peer
/// does, and gives up on a peer silent for `patience`.
pub fn echo_service_on_threads(patience: Duration) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(patience));
                let _ = conn.set_write_timeout(Some(patience));
                let Ok(mut back) = conn.try_clone() else {
                    return;
                };
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Ok(addr)
}

/// What `done` gives, or a panic naming `what` if it takes longer than
/// `patience`: a failure guard for a test, never a synchronisation.
pub async fn within<T>(patience: Duration, what: &str, done: impl Future<Output = T>) -> T {
    match tokio::time::timeout(patience, done).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {patience:?}"),
    }
}
