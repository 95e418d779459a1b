//! Reaching a stream's target: a TCP connection, or a UDP socket
//! connected to it for a flow, each within a deadline and with the reason
//! it failed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use reitunnel_hooks::{Transport, TunnelInfo};
use thiserror::Error;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::datagram::ConnectedUdp;
use crate::tune;

/// Why a target could not be reached.
#[derive(Debug, Error)]
pub enum DialError {
    /// The connection failed (refused, unreachable, no such host).
    #[error("{0}")]
    Failed(std::io::Error),
    /// It took too long.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Connects to a stream's target within `within`, and tunes the socket.
pub async fn dial(target: &str, within: Duration) -> Result<TcpStream, DialError> {
    let tcp = timeout(within, TcpStream::connect(target))
        .await
        .map_err(|_| DialError::TimedOut(within))?
        .map_err(DialError::Failed)?;
    let _ = tune(&tcp);
    Ok(tcp)
}

/// A stream's target, reached: a TCP connection, or a UDP socket
/// connected to it for a flow.
pub enum Reached {
    /// For a TCP tunnel.
    Tcp(TcpStream),
    /// For a UDP tunnel.
    Udp(ConnectedUdp),
}

/// Reaches a stream's target over its tunnel's transport within `within`.
pub async fn dial_for(tunnel: &TunnelInfo, within: Duration) -> Result<Reached, DialError> {
    match tunnel.transport {
        Transport::Tcp => dial(&tunnel.target, within).await.map(Reached::Tcp),
        Transport::Udp => dial_udp(&tunnel.target, within).await.map(Reached::Udp),
    }
}

/// A UDP socket bound to an ephemeral port of `target`'s family and
/// connected to it (the name resolved within `within`).
pub async fn dial_udp(target: &str, within: Duration) -> Result<ConnectedUdp, DialError> {
    let resolve = tokio::net::lookup_host(target);
    let addr = timeout(within, resolve)
        .await
        .map_err(|_| DialError::TimedOut(within))?
        .map_err(DialError::Failed)?
        .next()
        .ok_or_else(|| {
            let none = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
            DialError::Failed(none)
        })?;
    let local = match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = UdpSocket::bind(local).await.map_err(DialError::Failed)?;
    crate::socket::tune_udp(&socket).map_err(DialError::Failed)?;
    socket.connect(addr).await.map_err(DialError::Failed)?;
    Ok(ConnectedUdp::new(socket))
}
