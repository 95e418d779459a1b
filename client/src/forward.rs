//! `-L` on the client: accept local connections and carry each one to the
//! server in a stream of its own, which the server connects to the target.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::relay::Ended;
use reitunnel_hooks::{
    CloseReason, HookChain, Open, Reason, RefuseCode, Scope, StreamId, StreamInfo,
};
use reitunnel_transport::answer::AnswerError;
use reitunnel_transport::stream::{open_and_relay, until_closed, AnswerWait};
use reitunnel_transport::{tune, MuxHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::Route;
use crate::{ClientConfig, TargetError};

/// Client-numbered stream ids carry this bit, so they never equal the
/// server-numbered ids of reverse streams in the same client's hooks.
const FORWARD_ID_BIT: u64 = 1 << 63;

/// What a forward tunnel's accept loop and its streams share.
pub(crate) struct Forward {
    /// A graceful shutdown closes the local listener.
    pub draining: CancellationToken,
    pub route: Arc<Route>,
    pub mux: MuxHandle,
    pub chain: HookChain,
    pub cfg: Arc<ClientConfig>,
    pub streams: TaskTracker,
    pub ids: Arc<AtomicU64>,
    /// The session's `max_forward_streams` slots.
    pub slots: Arc<Semaphore>,
}

impl Forward {
    /// Accepts local connections until the tunnel closes.
    pub(crate) async fn accept(self, listener: TcpListener) {
        let this = Arc::new(self);
        let closer = &this.route.closer;
        loop {
            tokio::select! {
                _ = closer.closed() => break,
                _ = this.draining.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        this.streams.spawn(this.clone().stream(tcp, peer));
                    }
                    Err(e) => {
                        this.chain.error(Scope::Tunnel(&this.route.info), &e);
                        tokio::select! {
                            _ = closer.closed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
    }

    /// One local connection: gate, header, the server's answer, relay.
    async fn stream(self: Arc<Self>, mut local: TcpStream, peer: SocketAddr) {
        let _ = tune(&local);
        let id = StreamId(FORWARD_ID_BIT | (self.ids.fetch_add(1, Ordering::Relaxed) + 1));
        let info = Arc::new(StreamInfo::new(id, self.route.info.clone(), peer));
        // Over the limit or refused by a client hook: the local connection
        // is simply closed; the hooks hear why.
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let max = self.cfg.max_forward_streams;
            let reason = Reason::new(
                RefuseCode::LimitReached,
                format!("local connection turned away: limit max_forward_streams = {max} reached"),
            );
            self.chain.refuse(Scope::Stream(&info), reason);
            return;
        };
        let Ok(open) = self.chain.open_stream(info) else {
            return;
        };
        let bridged = self.bridge(&mut local, &open);
        let reason = until_closed(&self.route.closer, bridged).await;
        open.close(reason);
    }

    /// Opens a stream to the server and relays the local connection over
    /// it at once (see [`open_and_relay`]). The server answers once it has
    /// dialled the target (its own timeout applies first).
    async fn bridge(&self, local: &mut TcpStream, open: &Open<StreamInfo>) -> CloseReason {
        let info = open.info();
        let answer = AnswerWait {
            max_frame_len: self.cfg.max_frame_len,
            within: self.cfg.target_connect_timeout * 2,
            guard: (),
            not_accepted: |e| Ended::into_io(self.not_accepted(info, e)),
        };
        open_and_relay(&self.mux, local, open, answer, &self.cfg.relay)
            .await
            .unwrap_or_else(|e| CloseReason::Error(e.to_string()))
    }

    /// Reports why the server did not accept a forward stream; returns how it closes.
    fn not_accepted(&self, info: &StreamInfo, e: AnswerError) -> CloseReason {
        match e {
            AnswerError::Refused(message) => {
                let e = TargetError {
                    target: info.tunnel.target.to_string(),
                    reason: format!("the server could not forward: {message}"),
                };
                self.chain.error(Scope::Stream(info), &e);
                CloseReason::TargetUnreachable(message)
            }
            AnswerError::Unexpected(kind) => CloseReason::Error(format!(
                "server answered a forward stream with a {kind:?} frame"
            )),
            AnswerError::Frame(e) => CloseReason::Error(e.to_string()),
            AnswerError::Timeout(wait) => {
                CloseReason::Error(format!("server did not answer within {wait:?}"))
            }
        }
    }
}
