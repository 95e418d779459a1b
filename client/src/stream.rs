//! One visitor stream on the client: read the header, reach the target
//! (and send it a PROXY protocol header if the tunnel asks), answer, relay.

use std::sync::{Arc, PoisonError};

use reitunnel_hooks::{CloseReason, HookChain, Scope, StreamInfo};
use reitunnel_transport::stream::{
    accept_reached, dial_for, read_header, refuse, until_closed, Header, Reached,
};
use reitunnel_transport::MuxStream;
use tokio::io::AsyncWriteExt;
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
    let Some(Header {
        tunnel_id,
        stream_id,
        peer,
    }) = read_header(&mut up, cfg.login_timeout).await
    else {
        tracing::warn!("dropping a stream without a valid header");
        return;
    };
    if draining.is_cancelled() {
        return refuse(&mut up, "the client is shutting down".to_owned()).await;
    }
    let route = routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&tunnel_id)
        .cloned();
    let Some(route) = route else {
        let message = format!("tunnel {tunnel_id} is not open on this client");
        return refuse(&mut up, message).await;
    };
    let info = Arc::new(StreamInfo::new(stream_id, route.info.clone(), peer));
    let open = match chain.open_stream(info) {
        Ok(open) => open,
        Err(r) => {
            let message = format!("refused by client hook '{}': {}", r.by, r.reason);
            return refuse(&mut up, message).await;
        }
    };
    let target = &route.info.target;
    let reached = async {
        let mut local = dial_for(&route.info, cfg.target_connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        // The visitor's real address first, for a target that reads it.
        if let (Some(version), Reached::Tcp(tcp)) = (route.proxy_protocol, &mut local) {
            let header = version.header(peer, route.info.bind);
            tcp.write_all(&header)
                .await
                .map_err(|e| format!("sending the PROXY {version} header: {e}"))?;
        }
        Ok::<_, String>(local)
    };
    let local = match reached.await {
        Ok(local) => local,
        Err(reason) => {
            let err = TargetError {
                target: target.to_string(),
                reason,
            };
            tracing::warn!(error = %err, "visitor not connected");
            chain.error(Scope::Stream(open.info()), &err);
            refuse(&mut up, err.to_string()).await;
            return open.close(CloseReason::TargetUnreachable(err.to_string()));
        }
    };
    // A UDP flow ends when the server ends it (its idle timeout is the
    // server's), or when this client drains: a flow has no end of its own
    // for the drain to wait for, so waiting would only hold the shutdown
    // until the drain timeout.
    let flow = matches!(local, Reached::Udp(_));
    let relayed = async {
        let relay = accept_reached(&mut up, local, &open, &cfg.relay, None);
        tokio::select! {
            relayed = relay => relayed.unwrap_or(CloseReason::ConnectionLost),
            () = draining.cancelled(), if flow => CloseReason::Shutdown,
        }
    };
    let reason = until_closed(&route.closer, relayed).await;
    open.close(reason);
}
