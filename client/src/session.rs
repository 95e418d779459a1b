//! The client's session task: control frames, commands from the handle,
//! inbound streams. It owns every tunnel route; see [`Route`] for how a
//! tunnel's close waits for its streams.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use reitunnel_hooks::{
    ClientInfo, CloseReason, HookChain, Open, RefuseCode, TunnelId, TunnelInfo, TunnelKind,
};
use reitunnel_proto::login::LaneGrant;
use reitunnel_proto::{ClientId, Frame};
use reitunnel_transport::control::{Control, ControlEnd, Incoming};
use reitunnel_transport::{Bound, Closer, Inbound, MuxDriver, MuxHandle, MuxStream, CLOSE_GRACE};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lanes::{self, Dialer};
use crate::login::unexpected;
use crate::{
    forward, stream, ClientConfig, ClientError, Command, LocalSpec, ProxyProtocol, RemoteSpec,
    TunnelReady,
};

/// A tunnel as the client's streams see it. The tunnel's close event fires
/// when the last reference drops: the session's (removed on close) and each
/// live stream's. So a tunnel never closes before its streams.
pub(crate) struct Route {
    pub info: Arc<TunnelInfo>,
    pub closer: Arc<Closer<CloseReason>>,
    /// For a reverse tunnel: the PROXY header its targets get first.
    pub proxy_protocol: Option<ProxyProtocol>,
    open: Option<Open<TunnelInfo>>,
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            open.close(self.closer.reason().unwrap_or(CloseReason::Finished));
        }
    }
}

pub(crate) type Routes = Arc<Mutex<HashMap<TunnelId, Arc<Route>>>>;

pub(crate) struct Parts {
    pub cfg: ClientConfig,
    pub chain: HookChain,
    pub open: Open<ClientInfo>,
    pub mux: MuxHandle,
    pub inbound: Inbound,
    pub driver: MuxDriver,
    pub control: Control<MuxStream>,
    pub commands: mpsc::Receiver<Command>,
    /// Connections to add to the session, where the server offered them.
    pub lanes: Option<MoreLanes>,
}

/// What it takes to add connections to the session (see `lanes.rs`).
pub(crate) struct MoreLanes {
    pub dialer: Dialer,
    pub client_id: ClientId,
    pub grant: LaneGrant,
}

/// A tunnel request waiting for the server's answer.
enum Request {
    Reverse(RemoteSpec),
    /// The local listener is bound before asking, so a busy port fails locally.
    Forward(LocalSpec, Bound),
}

type Reply = oneshot::Sender<Result<TunnelReady, ClientError>>;
type Pending = HashMap<u32, (Request, Reply)>;

struct Session {
    cfg: Arc<ClientConfig>,
    chain: HookChain,
    client: Arc<ClientInfo>,
    closer: Arc<Closer<CloseReason>>,
    routes: Routes,
    pending: Pending,
    next_request: u32,
    streams: TaskTracker,
    mux: MuxHandle,
    /// Ids for `-L` streams, which the client numbers itself.
    forward_ids: Arc<AtomicU64>,
    /// `max_forward_streams`, shared by every `-L` tunnel of the session.
    forward_slots: Arc<Semaphore>,
    /// Cancelled by a graceful shutdown: no new streams, local listeners closed.
    draining: CancellationToken,
    /// When a graceful shutdown stops waiting for open streams.
    drain_deadline: Option<Instant>,
    /// Told when a tunnel opens: the session's extra connections are
    /// dialed from then on (a session without tunnels carries nothing).
    in_use: Arc<Notify>,
}

pub(crate) async fn run(parts: Parts) -> Result<(), ClientError> {
    let Parts {
        cfg,
        chain,
        open,
        mux,
        mut inbound,
        driver,
        mut control,
        mut commands,
        lanes,
    } = parts;
    let forward_slots = Arc::new(Semaphore::new(cfg.max_forward_streams));
    let mut session = Session {
        cfg: Arc::new(cfg),
        chain,
        client: open.info().clone(),
        closer: Closer::root(),
        routes: Arc::default(),
        pending: HashMap::new(),
        next_request: 0,
        streams: TaskTracker::new(),
        mux: mux.clone(),
        forward_ids: Arc::default(),
        forward_slots,
        draining: CancellationToken::new(),
        drain_deadline: None,
        in_use: Arc::default(),
    };
    // Aborted (its runtime shut down), this task ends its streams at once.
    let _abort = session.closer.close_on_drop(CloseReason::Aborted);
    // Announce the control stream (a yamux stream reaches the peer with its first write).
    let result = match control.send(Frame::Ping { seq: 0 }).await {
        Ok(()) => {
            // Joins after the control stream, which must be the first
            // connection's, once a tunnel opened. The task ends with the
            // session, a join under way once it is through: cut short, it
            // would leave the server a handshake broken off, an error.
            if let Some(more) = lanes {
                let (cfg, mux, in_use) = (session.cfg.clone(), mux.clone(), session.in_use.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = in_use.notified() => {}
                        _ = mux.closed() => return,
                    }
                    lanes::keep(more.dialer, cfg, more.client_id, more.grant, mux).await
                });
            }
            session
                .serve(&mut control, &mut inbound, &mut commands)
                .await
        }
        Err(_) => Err(ClientError::ConnectionLost),
    };
    let reason = match &result {
        // Our own shutdown (or the handle dropped): what it cuts closes as
        // such; streams that ended before it closed as `Finished` already.
        Ok(()) => CloseReason::Shutdown,
        Err(ClientError::ConnectionLost) => CloseReason::ConnectionLost,
        Err(e @ ClientError::HeartbeatTimeout(_)) => CloseReason::Timeout(e.to_string()),
        Err(e) => CloseReason::Error(e.to_string()),
    };
    commands.close();
    for (_, (_, reply)) in session.pending.drain() {
        let _ = reply.send(Err(ClientError::Closed));
    }
    // Streams first, then tunnels (their routes drop), then the client.
    session.closer.close(reason.clone());
    session.streams.close();
    session.streams.wait().await;
    let routes: Vec<_> = session
        .routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    drop(routes);
    if result.is_ok() {
        // We said goodbye: let the server close first. Closing now would
        // leave its last frames (a Pong, window updates) unread here, and a
        // socket closed with unread data sends a reset, which can destroy
        // the goodbye in the server's receive queue before it is read: the
        // server then sees a lost connection and holds the ports on a lease.
        let _ = timeout(CLOSE_GRACE, mux.closed()).await;
    }
    mux.close();
    drop(inbound);
    driver.finish().await;
    open.close(reason);
    result
}

impl Session {
    async fn serve(
        &mut self,
        control: &mut Control<MuxStream>,
        inbound: &mut Inbound,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), ClientError> {
        let mut inbound_done = false;
        loop {
            tokio::select! {
                // A drain ends when the streams are done or the deadline passes.
                _ = self.streams.wait(), if self.drain_deadline.is_some() => return self.goodbye(control).await,
                _ = sleep_until(self.drain_deadline.unwrap_or_else(Instant::now)), if self.drain_deadline.is_some() => {
                    return self.goodbye(control).await
                }
                command = commands.recv() => match command {
                    Some(Command::OpenReverse { spec, reply }) => {
                        self.next_request = self.next_request.wrapping_add(1);
                        let request = Frame::OpenTunnel {
                            request_id: self.next_request,
                            bind: spec.bind,
                            target: spec.target.clone(),
                            transport: spec.transport,
                        };
                        self.pending.insert(self.next_request, (Request::Reverse(spec), reply));
                        self.send(control, request).await?;
                    }
                    Some(Command::OpenForward { spec, listener, reply }) => {
                        self.next_request = self.next_request.wrapping_add(1);
                        let request = Frame::OpenForward {
                            request_id: self.next_request,
                            target: spec.target.clone(),
                            transport: spec.transport,
                        };
                        let pending = (Request::Forward(spec, listener), reply);
                        self.pending.insert(self.next_request, pending);
                        self.send(control, request).await?;
                    }
                    Some(Command::CloseTunnel(id)) => {
                        self.close_route(id, CloseReason::Finished);
                        self.send(control, Frame::CloseTunnel { tunnel_id: id }).await?;
                    }
                    Some(Command::Drain(deadline)) => {
                        self.draining.cancel();
                        self.streams.close();
                        self.drain_deadline = Some(deadline);
                    }
                    Some(Command::Shutdown) | None => return self.goodbye(control).await,
                },
                incoming = control.next() => match incoming.map_err(|e| self.ended(e))? {
                    Incoming::Frame(frame) => {
                        if let Some(reply) = self.on_frame(frame)? {
                            self.send(control, reply).await?;
                        }
                    }
                    Incoming::RoundTrip(rtt) => self.chain.heartbeat(&self.client, rtt),
                    Incoming::Goodbye { code, message } => {
                        return Err(ClientError::ServerGoodbye { code, message })
                    }
                },
                // When the session ends, frames already received on the control
                // stream (a Goodbye saying why) are still read before the end is
                // concluded from the control stream itself.
                stream = inbound.recv(), if !inbound_done => match stream {
                    Some(stream) => {
                        let serve = stream::serve(stream, self.routes.clone(), self.chain.clone(), self.cfg.clone(), self.draining.clone());
                        self.streams.spawn(serve);
                    }
                    None => inbound_done = true,
                },
            }
        }
    }

    /// Handles one control frame; returns the answer to send, if any.
    fn on_frame(&mut self, frame: Frame) -> Result<Option<Frame>, ClientError> {
        match frame {
            Frame::TunnelOpened {
                request_id,
                tunnel_id,
                bound,
            } => {
                let Some((request, reply)) = self.pending.remove(&request_id) else {
                    return Err(unexpected(
                        "an answer to a pending request",
                        &Frame::TunnelOpened {
                            request_id,
                            tunnel_id,
                            bound,
                        },
                    ));
                };
                let (kind, addr, target, listener, proxy_protocol, transport) = match request {
                    Request::Reverse(spec) => (
                        TunnelKind::Reverse,
                        bound,
                        spec.target,
                        None,
                        spec.proxy_protocol,
                        spec.transport,
                    ),
                    Request::Forward(spec, listener) => {
                        let local = listener.local_addr().unwrap_or(spec.bind);
                        (
                            TunnelKind::Forward,
                            local,
                            spec.target,
                            Some(listener),
                            None,
                            spec.transport,
                        )
                    }
                };
                self.in_use.notify_one();
                let info =
                    TunnelInfo::new(tunnel_id, self.client.clone(), kind, addr, target.as_str());
                let info = Arc::new(info.over(transport));
                match self.chain.open_tunnel(info.clone()) {
                    Ok(open) => {
                        let route = Arc::new(Route {
                            info,
                            closer: self.closer.child(),
                            proxy_protocol,
                            open: Some(open),
                        });
                        if let Some(listener) = listener {
                            let forward = forward::Forward {
                                draining: self.draining.clone(),
                                route: route.clone(),
                                mux: self.mux.clone(),
                                chain: self.chain.clone(),
                                cfg: self.cfg.clone(),
                                streams: self.streams.clone(),
                                ids: self.forward_ids.clone(),
                                slots: self.forward_slots.clone(),
                            };
                            self.streams.spawn(forward.serve(listener));
                        }
                        self.routes
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(tunnel_id, route);
                        let _ = reply.send(Ok(TunnelReady {
                            id: tunnel_id,
                            public_addr: addr,
                            target,
                        }));
                        Ok(None)
                    }
                    Err(r) => {
                        let _ = reply.send(Err(ClientError::RefusedLocally {
                            by: r.by,
                            message: r.reason.message.into_owned(),
                        }));
                        Ok(Some(Frame::CloseTunnel { tunnel_id }))
                    }
                }
            }
            Frame::TunnelRefused {
                request_id,
                code,
                message,
            } => {
                if let Some((request, reply)) = self.pending.remove(&request_id) {
                    let spec = match request {
                        Request::Reverse(spec) => spec.to_string(),
                        Request::Forward(spec, _) => spec.to_string(),
                    };
                    let _ = reply.send(Err(ClientError::TunnelRefused {
                        spec,
                        code,
                        message,
                    }));
                }
                Ok(None)
            }
            Frame::CloseTunnel { tunnel_id } => {
                self.close_route(tunnel_id, CloseReason::Finished);
                Ok(None)
            }
            other => Err(unexpected("a control frame", &other)),
        }
    }

    fn close_route(&self, id: TunnelId, reason: CloseReason) {
        let route = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(route) = route {
            route.closer.close(reason);
        }
    }
}

impl Session {
    /// Tells the server we are leaving; the session then ends.
    async fn goodbye(&self, control: &mut Control<MuxStream>) -> Result<(), ClientError> {
        control
            .goodbye(RefuseCode::Other, "client closing".to_owned())
            .await;
        Ok(())
    }

    /// Sends a control frame; a server that stopped reading times out like a silent one.
    async fn send(
        &self,
        control: &mut Control<MuxStream>,
        frame: Frame,
    ) -> Result<(), ClientError> {
        control.send(frame).await.map_err(|e| self.ended(e))
    }

    /// The session's error for how its control stream ended.
    fn ended(&self, end: ControlEnd) -> ClientError {
        match end {
            ControlEnd::Lost => ClientError::ConnectionLost,
            ControlEnd::Silent(after) => ClientError::HeartbeatTimeout(after),
            ControlEnd::Malformed(e) => ClientError::Handshake {
                server: self.client.peer.to_string(),
                source: e.into(),
            },
        }
    }
}
