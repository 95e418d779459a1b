//! Your own TCP proxy with the hook chain and the hooked relay, nothing
//! else of Reitunnel: every connection is a stream the hooks see open and
//! close, and every chunk passes `on_data` (here a byte-rate limit and the
//! counters). `cargo run -p reitunnel-hooks --example tcp_proxy` starts an
//! echo service, the proxy in front of it, and one client pushing 1 MiB
//! through; it prints what the counters saw. `cargo test` runs it too.

use std::net::SocketAddr;
use std::sync::Arc;

use reitunnel_hooks::builtin::{ByteRate, Counters, RateLimit, RateLimitConfig};
use reitunnel_hooks::relay::{relay, RelayConfig};
use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, HookChain, Login, StreamId, StreamInfo, TunnelId,
    TunnelInfo, TunnelKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Accepts on `listener` and relays each connection to `upstream` through
/// `chain`, as one client ("proxy") with one tunnel; tells `closed` how
/// each stream ended, once its close event has run.
async fn proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    chain: HookChain,
    closed: mpsc::UnboundedSender<CloseReason>,
) {
    let local = listener.local_addr().unwrap();
    let me = Arc::new(ClientInfo::new(ClientId(1), "proxy", local));
    let login = Login {
        nonce: &[0; 32],
        proof: &[0; 32],
    };
    let client = chain
        .open_client(me.clone(), &login)
        .expect("no gate refuses");
    let info = TunnelInfo::new(
        TunnelId(1),
        me,
        TunnelKind::Reverse,
        local,
        upstream.to_string(),
    );
    let tunnel = chain.open_tunnel(Arc::new(info)).expect("no gate refuses");
    let mut ids = 0;
    while let Ok((mut visitor, peer)) = listener.accept().await {
        ids += 1;
        let stream = StreamInfo::new(StreamId(ids), tunnel.info().clone(), peer);
        // A refused stream is simply dropped; the hooks heard why.
        let Ok(open) = chain.open_stream(Arc::new(stream)) else {
            continue;
        };
        let closed = closed.clone();
        tokio::spawn(async move {
            let reason = match TcpStream::connect(upstream).await {
                Ok(mut service) => {
                    relay(&mut visitor, &mut service, &open, &RelayConfig::default()).await
                }
                Err(e) => CloseReason::TargetUnreachable(e.to_string()),
            };
            open.close(reason.clone());
            let _ = closed.send(reason);
        });
    }
    drop((tunnel, client));
}

#[tokio::main]
async fn main() {
    let counters = Arc::new(Counters::new());
    let limit = RateLimit::new(RateLimitConfig {
        per_client: Some(ByteRate::per_sec(
            std::num::NonZeroU32::new(64 << 20).unwrap(),
        )),
        ..RateLimitConfig::default()
    });
    let chain = HookChain::builder()
        .hook(limit)
        .shared(counters.clone())
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, mut closes) = mpsc::unbounded_channel();
    let echo = reitunnel_testkit::echo_service().await;
    tokio::spawn(proxy(listener, echo, chain, closed));

    let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = conn.split();
    let mut back = Vec::with_capacity(sent.len());
    let write = async {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = r.read_to_end(&mut back);
    let ((), read) = tokio::join!(write, read);
    read.unwrap();
    assert_eq!(back, sent, "the echo came back through the proxy intact");
    drop(conn);
    let reason = closes.recv().await.unwrap();
    let seen = counters.snapshot();
    println!(
        "proxied {} bytes in, {} bytes out over {} stream(s); it closed as {}",
        seen.bytes_in,
        seen.bytes_out,
        seen.streams_total,
        reason.label()
    );
    assert_eq!((seen.bytes_in, seen.bytes_out), (1 << 20, 1 << 20));
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        super::main();
    }
}
