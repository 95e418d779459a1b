//! Node links: one multiplexed, authenticated TCP connection from a node to
//! each node it relays visitors to, opened on the first visitor and kept.
//! Every relayed visitor is one stream on it, starting with a header that
//! names the public port and the visitor's real address; the rest are the
//! visitor's bytes, both ways.
//!
//! Both ends prove `cluster_secret` the way a client proves its token: the
//! listener sends `RTLINK01` and a fresh nonce; the dialer answers with its
//! node name, an HMAC of both (`reitunnel_proto::auth`) and a nonce of its
//! own; the listener answers one byte, 1 (welcome) or 0, and after a
//! welcome its own HMAC of the dialer's nonce. So a dialer never relays a
//! visitor to something that merely took over a node's address. The
//! secret never travels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use reitunnel_hooks::builtin::Secret;
use reitunnel_proto::auth::{new_nonce, proof, verify, NONCE_LEN, PROOF_LEN};
use reitunnel_transport::tls::{client_connector, server_name, ClientTls};
use reitunnel_transport::{spawn_mux, tune, Inbound, MuxConfig, MuxHandle, MuxStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::{Fleet, CALL_TIMEOUT};
use crate::Admin;

/// What a link starts with, so a stray connection is told apart at once.
const HELLO: &[u8; 8] = b"RTLINK01";

/// The name the listener's proof is made for.
const LISTENER: &str = "link listener";

/// Node links' own settings (`[cluster]` `relay_listen`, `relay_advertise`,
/// `cluster_secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Where this node takes links from other nodes.
    pub listen: SocketAddr,
    /// Where other nodes reach it; `None`: the address bound.
    pub advertise: Option<SocketAddr>,
    /// What every node of the fleet proves to the others.
    pub secret: Secret,
}

/// Why a link could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("node {0} is not in the fleet's store (gone, or it takes no links)")]
    Unknown(String),
    #[error("cannot reach node {node} at {addr}: {source}")]
    Connect {
        node: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("node {0} refused this node's proof of cluster_secret")]
    Refused(String),
    #[error("the node at {0}'s address cannot prove cluster_secret")]
    Impostor(String),
    #[error("the link to node {0} closed")]
    Closed(String),
    #[error("the fleet's store: {0}")]
    Store(#[from] super::StoreError),
}

/// The links this node dialed, one slot per node. A visitor opens its
/// stream on the link outside any lock; only dialing holds the node's slot,
/// so visitors arriving at once share one new link, and a node that cannot
/// be reached holds up no visitor bound for another.
#[derive(Default)]
pub(super) struct Links {
    nodes: std::sync::Mutex<HashMap<String, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Link>>>;

struct Link {
    mux: MuxHandle,
    /// Kept: dropping it would close the session.
    _inbound: Inbound,
}

impl Links {
    fn slot(&self, node: &str) -> Slot {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.entry(node.to_owned()).or_default().clone()
    }
}

impl Fleet {
    /// A new stream to `node` for a relayed visitor: on the open link, or
    /// on a new one if there is none or it broke.
    pub(super) async fn link_stream(&self, node: &str) -> Result<MuxStream, LinkError> {
        let slot = self.links.slot(node);
        let open = slot.lock().await.as_ref().map(|l| l.mux.clone());
        if let Some(mux) = open {
            if let Ok(stream) = mux.open().await {
                return Ok(stream);
            }
        }
        let mut link = slot.lock().await;
        // Another visitor may have dialed it again meanwhile.
        if let Some(open) = link.as_ref() {
            if let Ok(stream) = open.mux.open().await {
                return Ok(stream);
            }
        }
        let dialed = self.dial(node).await?;
        let stream = dialed
            .mux
            .open()
            .await
            .map_err(|_| LinkError::Closed(node.to_owned()))?;
        *link = Some(dialed);
        Ok(stream)
    }

    /// Connects to `node`'s advertised link address and proves the secret.
    async fn dial(&self, node: &str) -> Result<Link, LinkError> {
        let relay = self
            .relay
            .as_ref()
            .ok_or_else(|| LinkError::Unknown(node.to_owned()))?;
        let entry: Option<String> = self
            .store
            .call(redis::cmd("GET").arg(self.store.key(&format!("node:{node}"))))
            .await?;
        let entry = entry
            .and_then(|e| serde_json::from_str::<super::registry::NodeEntry>(&e).ok())
            .ok_or_else(|| LinkError::Unknown(node.to_owned()))?;
        let addr = entry
            .relay
            .ok_or_else(|| LinkError::Unknown(node.to_owned()))?;
        let connect = |source| LinkError::Connect {
            node: node.to_owned(),
            addr,
            source,
        };
        let timed_out = || connect(std::io::ErrorKind::TimedOut.into());
        let tcp = timeout(CALL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(connect)?;
        let _ = tune(&tcp);
        // A node whose control port has TLS has it on its links too: its
        // entry names its certificate, which the dialer pins.
        let Some(pin) = entry.tls else {
            return self.open_link(tcp, node, addr, &relay.secret, false).await;
        };
        let other = |e: &dyn std::fmt::Display| connect(std::io::Error::other(e.to_string()));
        let pinned = ClientTls {
            fingerprint: Some(pin.parse().map_err(|e| other(&e))?),
            ..ClientTls::default()
        };
        let connector = client_connector(&pinned).map_err(|e| other(&e))?;
        let name = server_name("reitunnel-node").map_err(|e| other(&e))?;
        let tls = timeout(CALL_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(connect)?;
        self.open_link(tls, node, addr, &relay.secret, true).await
    }

    /// Proves the secret on a link dialed to `node` at `addr` (over TLS
    /// or not), checks the listener's proof, and starts the link's session.
    async fn open_link<S>(
        &self,
        mut io: S,
        node: &str,
        addr: SocketAddr,
        secret: &Secret,
        tls: bool,
    ) -> Result<Link, LinkError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let welcomed = match timeout(CALL_TIMEOUT, prove(&mut io, &self.config.node, secret)).await
        {
            Ok(welcomed) => welcomed,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        let welcomed = welcomed.map_err(|source| LinkError::Connect {
            node: node.to_owned(),
            addr,
            source,
        })?;
        match welcomed {
            Welcome::Proven => {}
            Welcome::Refused => return Err(LinkError::Refused(node.to_owned())),
            Welcome::Unproven => return Err(LinkError::Impostor(node.to_owned())),
        }
        let (mux, inbound, _driver) = spawn_mux(io, yamux::Mode::Client, &MuxConfig::default());
        tracing::info!(%node, %addr, tls, "link to node open");
        Ok(Link {
            mux,
            _inbound: inbound,
        })
    }

    /// Takes links from other nodes until the fleet stops.
    pub(super) async fn take_links(self: Arc<Self>, listener: TcpListener, admin: Admin) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        self.tasks.spawn(self.clone().serve_link(tcp, peer, admin.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take a link");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    /// One link from another node: the proof, then its relayed visitors.
    async fn serve_link(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, admin: Admin) {
        let _ = tune(&tcp);
        match self.link_tls.clone() {
            None => self.serve_link_on(tcp, peer, admin).await,
            Some(acceptor) => match timeout(CALL_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => self.serve_link_on(tls, peer, admin).await,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "link refused: its TLS handshake failed")
                }
                Err(_) => {
                    tracing::warn!(%peer, "link refused: no TLS handshake within {CALL_TIMEOUT:?}")
                }
            },
        }
    }

    /// A link past its TLS handshake (if any): the proof, then its visitors.
    async fn serve_link_on<S>(self: Arc<Self>, mut io: S, peer: SocketAddr, admin: Admin)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(relay) = &self.relay else { return };
        let node = match timeout(CALL_TIMEOUT, check(&mut io, &relay.secret)).await {
            Ok(Ok(Some(node))) => node,
            Ok(Ok(None)) => {
                tracing::warn!(%peer, "link refused: its proof of cluster_secret is wrong");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "link refused: not a node's link");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "link refused: no proof within {CALL_TIMEOUT:?}");
                return;
            }
        };
        tracing::info!(%node, %peer, tls = self.link_tls.is_some(), "link from node");
        let (mux, mut inbound, driver) = spawn_mux(io, yamux::Mode::Server, &MuxConfig::default());
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                stream = inbound.recv() => match stream {
                    Some(stream) => {
                        self.tasks.spawn(visitor_from_link(stream, admin.clone()));
                    }
                    None => break,
                },
            }
        }
        tracing::info!(%node, "link from node closed");
        mux.close();
        drop(inbound);
        driver.finish().await;
    }
}

/// How the listener answered the dialer's proof.
enum Welcome {
    /// Welcomed, and it proved the secret too.
    Proven,
    /// Refused: this node's secret is not the listener's.
    Refused,
    /// Welcomed without a valid proof of its own.
    Unproven,
}

/// The dialer's side of the handshake.
async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    node: &str,
    secret: &Secret,
) -> std::io::Result<Welcome> {
    let mut hello = [0u8; HELLO.len() + NONCE_LEN];
    io.read_exact(&mut hello).await?;
    if hello[..HELLO.len()] != HELLO[..] {
        return Err(std::io::Error::other("not a node's link listener"));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&hello[HELLO.len()..]);
    let proof = proof(secret.expose().as_bytes(), &nonce, node);
    let ours = new_nonce();
    let mut answer = Vec::with_capacity(1 + node.len() + PROOF_LEN + NONCE_LEN);
    answer.push(u8::try_from(node.len()).unwrap_or(u8::MAX));
    answer.extend_from_slice(node.as_bytes());
    answer.extend_from_slice(&proof);
    answer.extend_from_slice(&ours);
    io.write_all(&answer).await?;
    let mut welcome = [0u8; 1];
    io.read_exact(&mut welcome).await?;
    if welcome[0] != 1 {
        return Ok(Welcome::Refused);
    }
    let mut theirs = [0u8; PROOF_LEN];
    io.read_exact(&mut theirs).await?;
    Ok(
        match verify(secret.expose().as_bytes(), &ours, LISTENER, &theirs) {
            true => Welcome::Proven,
            false => Welcome::Unproven,
        },
    )
}

/// The listener's side: the dialer's node name if its proof holds.
async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    secret: &Secret,
) -> std::io::Result<Option<String>> {
    let nonce = new_nonce();
    let mut hello = HELLO.to_vec();
    hello.extend_from_slice(&nonce);
    io.write_all(&hello).await?;
    let mut len = [0u8; 1];
    io.read_exact(&mut len).await?;
    let mut name = vec![0u8; usize::from(len[0])];
    io.read_exact(&mut name).await?;
    let mut proof = [0u8; PROOF_LEN];
    io.read_exact(&mut proof).await?;
    let mut theirs = [0u8; NONCE_LEN];
    io.read_exact(&mut theirs).await?;
    let name = String::from_utf8_lossy(&name).into_owned();
    let secret = secret.expose().as_bytes();
    if !verify(secret, &nonce, &name, &proof) {
        io.write_all(&[0]).await?;
        return Ok(None);
    }
    let mut welcome = vec![1];
    welcome.extend_from_slice(&reitunnel_proto::auth::proof(secret, &theirs, LISTENER));
    io.write_all(&welcome).await?;
    Ok(Some(name))
}

/// Writes a relayed visitor's header: its public port and real address.
pub(super) async fn write_header<S: AsyncWrite + Unpin>(
    io: &mut S,
    port: u16,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let peer = peer.to_string();
    let mut header = Vec::with_capacity(3 + peer.len());
    header.extend_from_slice(&port.to_be_bytes());
    header.push(u8::try_from(peer.len()).unwrap_or(u8::MAX));
    header.extend_from_slice(peer.as_bytes());
    io.write_all(&header).await
}

/// Reads a relayed visitor's header.
async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<(u16, SocketAddr)> {
    let mut head = [0u8; 3];
    io.read_exact(&mut head).await?;
    let mut peer = vec![0u8; usize::from(head[2])];
    io.read_exact(&mut peer).await?;
    let peer = String::from_utf8_lossy(&peer)
        .parse()
        .map_err(|_| std::io::Error::other("a visitor header with no address"))?;
    Ok((u16::from_be_bytes([head[0], head[1]]), peer))
}

/// A visitor another node relayed here: handed to the tunnel on its port,
/// or (none here any more) its stream closed at once.
async fn visitor_from_link(mut stream: MuxStream, admin: Admin) {
    match timeout(CALL_TIMEOUT, read_header(&mut stream)).await {
        Ok(Ok((port, peer))) => admin.relayed_visitor(port, peer, stream),
        Ok(Err(e)) => tracing::debug!(error = %e, "a relayed visitor without a header"),
        Err(_) => tracing::debug!("a relayed visitor sent no header in time"),
    }
}
