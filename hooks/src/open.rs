//! Open/close balance by construction. Passing every gate yields an
//! [`Open`] handle (and `on_open` on every hook); its close event fires
//! exactly once, either through [`Open::close`] with a reason or, if the
//! owning task is cancelled or panics, from `Drop` with
//! [`CloseReason::Aborted`]. Code that holds the handle cannot forget the
//! close, and cannot fire it twice. A stream's handle also carries every
//! hook's per-stream state, so the data path goes through it.

use std::sync::Arc;

use crate::chain::{HookChain, Refusal};
use crate::hook::StreamState;
use crate::info::{
    ChunkTime, ClientInfo, DataEvent, Direction, Login, Scope, StreamEnd, StreamInfo, Totals,
    TunnelInfo,
};
use crate::verdict::{CloseReason, Reason, Verdict};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ClientInfo {}
    impl Sealed for super::TunnelInfo {}
    impl Sealed for super::StreamInfo {}
}

/// Something with a close event: a client, a tunnel or a stream.
pub trait Subject: sealed::Sealed + Send + Sync + 'static {
    /// What it is, for `on_open`, `on_rejected` and `on_error`.
    fn scope(&self) -> Scope<'_>;

    /// Fires the close event on every hook of `chain`; `states` are the
    /// hooks' per-stream states (empty for clients and tunnels).
    fn fire_close(&self, chain: &HookChain, reason: &CloseReason, states: &[Option<StreamState>]);
}

impl Subject for ClientInfo {
    fn scope(&self) -> Scope<'_> {
        Scope::Client(self)
    }

    fn fire_close(&self, chain: &HookChain, reason: &CloseReason, _: &[Option<StreamState>]) {
        let totals = self.meter.totals(self.opened_at);
        let _ = chain.observe(self.scope(), |h| {
            h.on_client_disconnect(self, reason, &totals)
        });
    }
}

impl Subject for TunnelInfo {
    fn scope(&self) -> Scope<'_> {
        Scope::Tunnel(self)
    }

    fn fire_close(&self, chain: &HookChain, reason: &CloseReason, _: &[Option<StreamState>]) {
        let totals = self.meter.totals(self.opened_at);
        let _ = chain.observe(self.scope(), |h| h.on_tunnel_close(self, reason, &totals));
    }
}

impl Subject for StreamInfo {
    fn scope(&self) -> Scope<'_> {
        Scope::Stream(self)
    }

    fn fire_close(&self, chain: &HookChain, reason: &CloseReason, states: &[Option<StreamState>]) {
        let totals = Totals {
            streams: 1,
            ..self.meter.totals(self.opened_at)
        };
        // Parents learn the stream's bytes before its close event, so a
        // tunnel's (and client's) totals always equal the sum of closed streams.
        self.tunnel.meter.absorb(&totals);
        self.tunnel.client.meter.absorb(&totals);
        chain.observe_each(self.scope(), |i, h| {
            h.on_stream_close(&StreamEnd {
                stream: self,
                reason,
                totals: &totals,
                state: states.get(i).and_then(|s| s.as_deref()),
            })
        });
    }
}

/// A client, tunnel or stream that passed its gates and has not closed yet.
#[must_use = "dropping an Open fires its close event with CloseReason::Aborted"]
pub struct Open<T: Subject> {
    chain: HookChain,
    info: Arc<T>,
    closed: bool,
    /// Per-hook stream states (empty for clients and tunnels); dropped after the close event.
    states: Box<[Option<StreamState>]>,
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
        chain.opened(info.scope());
        Open {
            chain: chain.clone(),
            info,
            closed: false,
            states: Box::default(),
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
        self.info.fire_close(&self.chain, &reason, &self.states);
    }
}

impl Open<StreamInfo> {
    /// Offers one chunk to the chain's data hooks, each with its own
    /// per-stream state. The relay calls this per chunk; embedders moving
    /// bytes themselves call it too.
    #[inline]
    pub fn on_data(&self, direction: Direction, data: &[u8]) -> Verdict {
        self.on_data_at(direction, data, &ChunkTime::new())
    }

    /// [`Open::on_data`] with a stamp shared beyond this chunk: the relay
    /// takes one per wake-up for every chunk it moves in it, so a busy
    /// stream reads the clock once per wake-up, not once per chunk (the
    /// stamp lags by at most the time that wake-up runs).
    #[inline]
    pub fn on_data_at(&self, direction: Direction, data: &[u8], time: &ChunkTime) -> Verdict {
        let event = DataEvent {
            time: Some(time),
            ..DataEvent::new(&self.info, direction, data)
        };
        self.chain.dispatch_data(event, &self.states)
    }

    /// Whether any hook wants data (if not, skip [`Open::on_data`] entirely).
    #[inline]
    pub fn wants_data(&self) -> bool {
        self.chain.wants_data()
    }
}

impl<T: Subject> Drop for Open<T> {
    fn drop(&mut self) {
        if !self.closed {
            self.info
                .fire_close(&self.chain, &CloseReason::Aborted, &self.states);
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

    /// [`HookChain::open_client`] with a check of the caller's own after
    /// every hook's gate: one that only an authenticated client may learn
    /// the answer to (the server's bans: told before the token check, they
    /// would tell anyone which names are banned). Its refusal reaches every
    /// hook as the server's, each knowing its own gate had passed.
    pub fn open_client_then(
        &self,
        client: Arc<ClientInfo>,
        login: &Login<'_>,
        last: impl FnOnce(&ClientInfo) -> Result<(), Reason>,
    ) -> Result<Open<ClientInfo>, Refusal> {
        self.client_gate(&client, login)?;
        if let Err(reason) = last(&client) {
            return Err(self.refuse_after_gates(Scope::Client(&client), reason));
        }
        Ok(Open::new(self, client))
    }

    /// Runs the `on_tunnel_open` gates; on success the tunnel is open.
    pub fn open_tunnel(&self, tunnel: Arc<TunnelInfo>) -> Result<Open<TunnelInfo>, Refusal> {
        self.tunnel_gate(&tunnel)?;
        Ok(Open::new(self, tunnel))
    }

    /// Runs the `on_stream_open` gates; on success the stream is open and
    /// every hook has made its per-stream state.
    pub fn open_stream(&self, stream: Arc<StreamInfo>) -> Result<Open<StreamInfo>, Refusal> {
        self.stream_gate(&stream)?;
        let mut open = Open::new(self, stream);
        open.states = self.stream_states(&open.info);
        Ok(open)
    }
}
