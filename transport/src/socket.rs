//! Socket set-up every Reitunnel socket gets.

use std::io;
use std::net::SocketAddr;

use reitunnel_proto::Transport;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Backlog of every listener. A burst of connects must not drop SYNs
/// (128 cost rathole 3 s for 1,000 connects).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Disables Nagle: tunnels relay already-batched writes, and delayed ACKs
/// against Nagle stall request/response traffic by ~40 ms.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Binds a listener with `SO_REUSEADDR` (a restarted server rebinds at once)
/// and a backlog of 1,024 (`LISTEN_BACKLOG`).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A tunnel's own socket: a listener for TCP connections, or a UDP socket
/// for datagrams (the server's public side of `-R`, the client's local
/// side of `-L`).
pub enum Bound {
    /// Accepts connections.
    Tcp(TcpListener),
    /// Receives datagrams.
    Udp(UdpSocket),
}

impl Bound {
    /// Binds `addr` for `transport` (a TCP listener as [`listen`] binds it).
    pub fn bind(addr: SocketAddr, transport: Transport) -> io::Result<Bound> {
        match transport {
            Transport::Tcp => listen(addr).map(Bound::Tcp),
            Transport::Udp => {
                let socket = std::net::UdpSocket::bind(addr)?;
                socket.set_nonblocking(true)?;
                UdpSocket::from_std(socket).map(Bound::Udp)
            }
        }
    }

    /// The address bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(listener) => listener.local_addr(),
            Bound::Udp(socket) => socket.local_addr(),
        }
    }
}
