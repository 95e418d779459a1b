//! A reverse tunnel's public listener and its visitors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::relay::relay;
use reitunnel_hooks::{CloseReason, Open, Scope, StreamInfo, TunnelInfo};
use reitunnel_proto::Frame;
use reitunnel_transport::{read_frame, tune, write_frame, Closer, MuxHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use crate::{Shared, StreamError};

/// Accepts visitors until the tunnel's closer fires, then waits for its
/// streams to close before closing the tunnel itself.
pub(crate) async fn run(
    shared: Arc<Shared>,
    open: Open<TunnelInfo>,
    listener: TcpListener,
    mux: MuxHandle,
    closer: Arc<Closer<CloseReason>>,
) {
    let streams = TaskTracker::new();
    loop {
        tokio::select! {
            _ = closer.closed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let visitor = visitor(shared.clone(), tcp, peer, open.info().clone(), mux.clone(), closer.clone());
                    streams.spawn(visitor);
                }
                Err(e) => {
                    shared.report(Scope::Tunnel(open.info()), &e);
                    tokio::select! {
                        _ = closer.closed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    drop(listener); // frees the public port before the close event fires
    streams.close();
    streams.wait().await;
    open.close(closer.reason().unwrap_or(CloseReason::Finished));
}

/// One visitor: gate, bridge to the client, close.
async fn visitor(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    tunnel: Arc<TunnelInfo>,
    mux: MuxHandle,
    closer: Arc<Closer<CloseReason>>,
) {
    let _ = tune(&tcp);
    let info = Arc::new(StreamInfo::new(shared.ids.stream(), tunnel, peer));
    // A refused visitor is simply disconnected; hooks heard on_rejected.
    let Ok(open) = shared.chain.open_stream(info) else {
        return;
    };
    let reason = tokio::select! {
        _ = closer.closed() => closer.reason().unwrap_or(CloseReason::Finished),
        reason = bridge(&shared, &mut tcp, &open, &mux) => reason,
    };
    open.close(reason);
}

/// Opens a yamux stream, introduces the visitor, waits for the client to
/// reach its target, then relays.
async fn bridge(
    shared: &Shared,
    tcp: &mut TcpStream,
    open: &Open<StreamInfo>,
    mux: &MuxHandle,
) -> CloseReason {
    let cfg = &shared.config;
    let info = open.info();
    let failed = |e: StreamError| {
        shared.report(Scope::Stream(info), &e);
        match e {
            StreamError::TargetRefused { message, .. } => CloseReason::TargetUnreachable(message),
            other => CloseReason::Error(other.to_string()),
        }
    };
    let mut up = match mux.open().await {
        Ok(up) => up,
        Err(e) => return failed(e.into()),
    };
    let header = Frame::StreamHeader {
        tunnel_id: info.tunnel.id,
        stream_id: info.id,
        peer: info.peer,
    };
    if let Err(e) = write_frame(&mut up, &header).await {
        return failed(e.into());
    }
    match timeout(
        cfg.stream_ack_timeout,
        read_frame(&mut up, cfg.max_frame_len),
    )
    .await
    {
        Err(_) => return failed(StreamError::AckTimeout(cfg.stream_ack_timeout)),
        Ok(Err(e)) => return failed(e.into()),
        Ok(Ok(Frame::StreamAccepted)) => {}
        Ok(Ok(Frame::StreamRefused { message })) => {
            return failed(StreamError::TargetRefused {
                target: info.tunnel.target.to_string(),
                message,
            })
        }
        Ok(Ok(other)) => return failed(StreamError::UnexpectedAnswer(other.kind())),
    }
    relay(tcp, &mut up, open, &cfg.relay).await
}
