//! One client connection: login, then the session's control loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use reitunnel_hooks::{
    ClientInfo, CloseReason, Login, Open, Reason, Refusal, RefuseCode, Scope, TunnelId, TunnelInfo,
    TunnelKind,
};
use reitunnel_proto::{CodecError, Frame, FrameCodec};
use reitunnel_transport::{
    listen, spawn_mux, tune, write_frame, Closer, MuxHandle, MuxStream, CLOSE_GRACE,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::handshake::{check_name, read_login};
use crate::{tunnel, SessionError, Shared};

/// Serves one accepted connection from login to disconnect.
pub(crate) async fn serve(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr) {
    let _ = tune(&tcp);
    let cfg = &shared.config;
    let login = match timeout(
        cfg.handshake_timeout,
        read_login(&mut tcp, peer, cfg.max_frame_len),
    )
    .await
    {
        Ok(Ok(login)) => login,
        Ok(Err(e)) => return shared.report(Scope::Server, &e),
        Err(_) => {
            let e = SessionError::HandshakeTimeout {
                peer,
                after: cfg.handshake_timeout,
            };
            return shared.report(Scope::Server, &e);
        }
    };

    let client = Arc::new(ClientInfo::new(
        shared.ids.client(),
        login.name.as_str(),
        peer,
    ));
    let admitted = match check_name(&login.name) {
        Err(why) => Err(shared.chain.refuse(
            Scope::Client(&client),
            Reason::new(RefuseCode::BadRequest, why),
        )),
        Ok(()) => shared.chain.open_client(
            client.clone(),
            &Login {
                nonce: &login.nonce,
                proof: &login.proof,
            },
        ),
    };
    let open = match admitted {
        Ok(open) => open,
        Err(Refusal { reason, by }) => {
            tracing::warn!(client = %client.name, %peer, %by, %reason, "login refused");
            let refusal = Frame::LoginRefused {
                code: reason.code,
                message: reason.message.into_owned(),
            };
            let _ = timeout(cfg.handshake_timeout, write_frame(&mut tcp, &refusal)).await;
            return;
        }
    };
    let ok = Frame::LoginOk {
        client_id: client.id,
        heartbeat_ms: 0,
    };
    if write_frame(&mut tcp, &ok).await.is_err() {
        return open.close(CloseReason::ConnectionLost);
    }
    tracing::info!(client = %client.name, id = %client.id, %peer, "client logged in");
    let reason = Session::start(shared, open, tcp).await;
    tracing::info!(client = %client.name, id = %client.id, %reason, "client gone");
}

/// A logged-in client's state, owned by its connection task.
struct Session {
    shared: Arc<Shared>,
    client: Arc<ClientInfo>,
    mux: MuxHandle,
    closer: Arc<Closer<CloseReason>>,
    tunnels: HashMap<TunnelId, Arc<Closer<CloseReason>>>,
    tasks: JoinSet<()>,
}

impl Session {
    /// Runs the session and closes everything it opened; returns why it ended.
    async fn start(shared: Arc<Shared>, open: Open<ClientInfo>, tcp: TcpStream) -> CloseReason {
        let cfg = &shared.config;
        let (mux, mut inbound, driver) = spawn_mux(tcp, yamux::Mode::Server, &cfg.mux);
        let mut session = Session {
            client: open.info().clone(),
            closer: shared.root.child(),
            shared: shared.clone(),
            mux,
            tunnels: HashMap::new(),
            tasks: JoinSet::new(),
        };
        let reason = match timeout(cfg.handshake_timeout, inbound.recv()).await {
            Ok(Some(control)) => session.control_loop(control, &mut inbound).await,
            _ => {
                let e = SessionError::NoControlStream {
                    peer: session.client.peer,
                    after: cfg.handshake_timeout,
                };
                shared.report(Scope::Client(&session.client), &e);
                CloseReason::Error(e.to_string())
            }
        };
        // Leaf first: streams and tunnels close before the client does.
        session.closer.close(reason.clone());
        while session.tasks.join_next().await.is_some() {}
        session.mux.close();
        drop(inbound);
        let _ = timeout(CLOSE_GRACE, driver).await;
        open.close(reason.clone());
        reason
    }

    async fn control_loop(
        &mut self,
        control: MuxStream,
        inbound: &mut reitunnel_transport::Inbound,
    ) -> CloseReason {
        let mut control = Framed::new(control, FrameCodec::new(self.shared.config.max_frame_len));
        let mut inbound_done = false;
        loop {
            let frame = tokio::select! {
                _ = self.closer.closed() => {
                    let bye = Frame::Goodbye {
                        code: RefuseCode::ShuttingDown,
                        message: "server is shutting down".to_owned(),
                    };
                    let _ = timeout(CLOSE_GRACE, control.send(bye)).await;
                    return self.closer.reason().unwrap_or(CloseReason::Shutdown);
                }
                frame = control.next() => frame,
                // The end of the session is concluded from the control stream, so
                // a Goodbye already received there is read first.
                stream = inbound.recv(), if !inbound_done => match stream {
                    // Client-initiated streams (forward tunnels) are not served yet: dropping resets it.
                    Some(_) => continue,
                    None => {
                        inbound_done = true;
                        continue;
                    }
                },
                Some(_) = self.tasks.join_next() => continue,
            };
            let frame = match frame {
                None | Some(Err(CodecError::Io(_))) => return CloseReason::ConnectionLost,
                Some(Err(source)) => {
                    let e = SessionError::Control {
                        peer: self.client.peer,
                        source,
                    };
                    return self.protocol_error(&mut control, e).await;
                }
                Some(Ok(frame)) => frame,
            };
            let reply = match frame {
                Frame::OpenTunnel {
                    request_id,
                    bind,
                    target,
                } => Some(self.open_tunnel(request_id, bind, target)),
                Frame::CloseTunnel { tunnel_id } => {
                    if let Some(closer) = self.tunnels.remove(&tunnel_id) {
                        closer.close(CloseReason::Finished);
                    }
                    None
                }
                Frame::Ping { seq } => Some(Frame::Pong { seq }),
                Frame::Pong { .. } => None,
                Frame::Goodbye { .. } => return CloseReason::Finished,
                other => {
                    let e = SessionError::UnexpectedFrame {
                        peer: self.client.peer,
                        expected: "a control frame",
                        got: other.kind(),
                    };
                    return self.protocol_error(&mut control, e).await;
                }
            };
            if let Some(reply) = reply {
                if control.send(reply).await.is_err() {
                    return CloseReason::ConnectionLost;
                }
            }
        }
    }

    async fn protocol_error(
        &self,
        control: &mut Framed<MuxStream, FrameCodec>,
        e: SessionError,
    ) -> CloseReason {
        self.shared.report(Scope::Client(&self.client), &e);
        let bye = Frame::Goodbye {
            code: RefuseCode::BadRequest,
            message: e.to_string(),
        };
        let _ = timeout(CLOSE_GRACE, control.send(bye)).await;
        CloseReason::Error(e.to_string())
    }

    /// Checks policy, binds, asks the hooks, and starts the tunnel. Returns the answer frame.
    fn open_tunnel(&mut self, request_id: u32, bind: SocketAddr, target: String) -> Frame {
        let cfg = &self.shared.config;
        let ip = if bind.ip().is_unspecified() {
            cfg.default_bind_ip
        } else {
            bind.ip()
        };
        let requested = SocketAddr::new(ip, bind.port());
        let id = self.shared.ids.tunnel();
        let info = |addr| {
            Arc::new(TunnelInfo::new(
                id,
                self.client.clone(),
                TunnelKind::Reverse,
                addr,
                target.as_str(),
            ))
        };
        let refused = |r: Refusal| Frame::TunnelRefused {
            request_id,
            code: r.reason.code,
            message: r.reason.message.into_owned(),
        };
        let listener = match self.bind_public(requested) {
            Ok(listener) => listener,
            Err(reason) => {
                let pending = info(requested);
                tracing::warn!(client = %self.client.name, %requested, %reason, "tunnel refused");
                return refused(self.shared.chain.refuse(Scope::Tunnel(&pending), reason));
            }
        };
        let bound = listener.local_addr().unwrap_or(requested);
        let open = match self.shared.chain.open_tunnel(info(bound)) {
            Ok(open) => open,
            Err(r) => {
                tracing::warn!(client = %self.client.name, %bound, by = %r.by, reason = %r.reason, "tunnel refused");
                return refused(r);
            }
        };
        tracing::info!(client = %self.client.name, tunnel = %id, %bound, %target, "tunnel open");
        let closer = self.closer.child();
        self.tunnels.insert(id, closer.clone());
        self.tasks.spawn(tunnel::run(
            self.shared.clone(),
            open,
            listener,
            self.mux.clone(),
            closer,
        ));
        Frame::TunnelOpened {
            request_id,
            tunnel_id: id,
            bound,
        }
    }

    /// Binds the public listener within the allow-list; port 0 picks a free allowed port.
    fn bind_public(&self, addr: SocketAddr) -> Result<TcpListener, Reason> {
        let ports = &self.shared.config.allow_ports;
        let unavailable = |msg: String| Reason::new(RefuseCode::Unavailable, msg);
        if addr.port() != 0 || ports.is_unrestricted() {
            if addr.port() != 0 && !ports.contains(addr.port()) {
                return Err(Reason::forbidden(format!(
                    "port {} is outside the server's allowed ports ({ports})",
                    addr.port()
                )));
            }
            return listen(addr).map_err(|e| unavailable(format!("cannot listen on {addr}: {e}")));
        }
        let hint = self.shared.port_hint.fetch_add(1, Ordering::Relaxed);
        ports
            .candidates(hint)
            .find_map(|port| listen(SocketAddr::new(addr.ip(), port)).ok())
            .ok_or_else(|| unavailable(format!("no free port left in the allowed ports ({ports})")))
    }
}
