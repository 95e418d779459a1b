//! Open/close balance by construction. Passing a gate yields an [`Open`]
//! handle; its close event fires exactly once, either through
//! [`Open::close`] with a reason or, if the owning task is cancelled or
//! panics, from `Drop` with [`CloseReason::Aborted`]. Code that holds the
//! handle cannot forget the close, and cannot fire it twice.

use std::sync::Arc;

use crate::chain::{HookChain, Refusal};
use crate::event::{ClientInfo, CloseReason, Login, Scope, StreamInfo, Totals, TunnelInfo};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ClientInfo {}
    impl Sealed for super::TunnelInfo {}
    impl Sealed for super::StreamInfo {}
}

/// Something with a close event: a client, a tunnel or a stream.
pub trait Subject: sealed::Sealed + Send + Sync + 'static {
    /// Fires the close event on every hook of `chain`.
    fn fire_close(&self, chain: &HookChain, reason: &CloseReason);
}

impl Subject for ClientInfo {
    fn fire_close(&self, chain: &HookChain, reason: &CloseReason) {
        let totals = self.meter.totals(self.opened_at);
        let _ = chain.observe(Scope::Client(self), |h| {
            h.on_client_disconnect(self, reason, &totals)
        });
    }
}

impl Subject for TunnelInfo {
    fn fire_close(&self, chain: &HookChain, reason: &CloseReason) {
        let totals = self.meter.totals(self.opened_at);
        let _ = chain.observe(Scope::Tunnel(self), |h| {
            h.on_tunnel_close(self, reason, &totals)
        });
    }
}

impl Subject for StreamInfo {
    fn fire_close(&self, chain: &HookChain, reason: &CloseReason) {
        let totals = Totals {
            streams: 1,
            ..self.meter.totals(self.opened_at)
        };
        // Parents learn the stream's bytes before its close event, so a
        // tunnel's (and client's) totals always equal the sum of closed streams.
        self.tunnel.meter.absorb(&totals);
        self.tunnel.client.meter.absorb(&totals);
        let _ = chain.observe(Scope::Stream(self), |h| {
            h.on_stream_close(self, reason, &totals)
        });
    }
}

/// A client, tunnel or stream that passed its gate and has not closed yet.
#[must_use = "dropping an Open fires its close event with CloseReason::Aborted"]
pub struct Open<T: Subject> {
    chain: HookChain,
    info: Arc<T>,
    closed: bool,
}

impl<T: Subject> std::fmt::Debug for Open<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T: Subject> Open<T> {
    fn new(chain: &HookChain, info: Arc<T>) -> Self {
        Open {
            chain: chain.clone(),
            info,
            closed: false,
        }
    }

    /// The identity, to build child events from.
    pub fn info(&self) -> &Arc<T> {
        &self.info
    }

    /// The chain this was opened on.
    pub fn chain(&self) -> &HookChain {
        &self.chain
    }

    /// Fires the close event with `reason`.
    pub fn close(mut self, reason: CloseReason) {
        self.closed = true;
        self.info.fire_close(&self.chain, &reason);
    }
}

impl<T: Subject> Drop for Open<T> {
    fn drop(&mut self) {
        if !self.closed {
            self.info.fire_close(&self.chain, &CloseReason::Aborted);
        }
    }
}

impl HookChain {
    /// Runs the `on_client_connect` gates; on success the client is open.
    pub fn open_client(
        &self,
        client: Arc<ClientInfo>,
        login: &Login<'_>,
    ) -> Result<Open<ClientInfo>, Refusal> {
        self.client_gate(&client, login)?;
        Ok(Open::new(self, client))
    }

    /// Runs the `on_tunnel_open` gates; on success the tunnel is open.
    pub fn open_tunnel(&self, tunnel: Arc<TunnelInfo>) -> Result<Open<TunnelInfo>, Refusal> {
        self.tunnel_gate(&tunnel)?;
        Ok(Open::new(self, tunnel))
    }

    /// Runs the `on_stream_open` gates; on success the stream is open.
    pub fn open_stream(&self, stream: Arc<StreamInfo>) -> Result<Open<StreamInfo>, Refusal> {
        self.stream_gate(&stream)?;
        Ok(Open::new(self, stream))
    }
}
