//! One visitor stream on the client: read the header, reach the target,
//! answer, relay.

use std::sync::{Arc, PoisonError};

use reitunnel_hooks::relay::relay;
use reitunnel_hooks::{CloseReason, HookChain, Scope, StreamInfo};
use reitunnel_proto::Frame;
use reitunnel_transport::{
    cut_by_connection, read_frame, tune, write_frame, MuxStream, CLOSE_GRACE,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::session::Routes;
use crate::{ClientConfig, TargetError};

/// `draining`: once cancelled, new streams are refused with a reason.
pub(crate) async fn serve(
    mut up: MuxStream,
    routes: Routes,
    chain: HookChain,
    cfg: Arc<ClientConfig>,
    draining: CancellationToken,
) {
    // Acknowledge the stream at once with an empty frame: the server's
    // multiplexer opens at most 256 streams ahead of our acknowledgements,
    // and a burst of visitors should not wait for each target's dial.
    let _ = up.write(&[]).await;
    let header = timeout(cfg.login_timeout, read_frame(&mut up, cfg.max_frame_len)).await;
    let Ok(Ok(Frame::StreamHeader {
        tunnel_id,
        stream_id,
        peer,
    })) = header
    else {
        tracing::warn!("dropping a stream without a valid header");
        return;
    };
    if draining.is_cancelled() {
        let refused = Frame::StreamRefused {
            message: "the client is shutting down".to_owned(),
        };
        let _ = write_frame(&mut up, &refused).await;
        return;
    }
    let route = routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&tunnel_id)
        .cloned();
    let Some(route) = route else {
        let refused = Frame::StreamRefused {
            message: format!("tunnel {tunnel_id} is not open on this client"),
        };
        let _ = write_frame(&mut up, &refused).await;
        return;
    };
    let info = Arc::new(StreamInfo::new(stream_id, route.info.clone(), peer));
    let open = match chain.open_stream(info) {
        Ok(open) => open,
        Err(r) => {
            let refused = Frame::StreamRefused {
                message: format!("refused by client hook '{}': {}", r.by, r.reason),
            };
            let _ = write_frame(&mut up, &refused).await;
            return;
        }
    };
    let info = open.info().clone();
    let target = &route.info.target;
    let connected = match timeout(cfg.target_connect_timeout, TcpStream::connect(&**target)).await {
        Ok(Ok(local)) => Ok(local),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {:?}", cfg.target_connect_timeout)),
    };
    let mut local = match connected {
        Ok(local) => local,
        Err(reason) => {
            let err = TargetError {
                target: target.to_string(),
                reason,
            };
            tracing::warn!(error = %err, "visitor not connected");
            chain.error(Scope::Stream(&info), &err);
            let refused = Frame::StreamRefused {
                message: err.to_string(),
            };
            let _ = write_frame(&mut up, &refused).await;
            return open.close(CloseReason::TargetUnreachable(err.to_string()));
        }
    };
    let _ = tune(&local);
    if write_frame(&mut up, &Frame::StreamAccepted).await.is_err() {
        return open.close(CloseReason::ConnectionLost);
    }
    let relayed = async {
        let reason = relay(&mut up, &mut local, &open, &cfg.relay).await;
        reason.unless_cut(cut_by_connection(&up))
    };
    let reason = (route.closer)
        .run(relayed, CLOSE_GRACE, CloseReason::is_orderly)
        .await
        .unwrap_or_else(|cut| cut);
    open.close(reason);
}
