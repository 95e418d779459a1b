//! Socket set-up every Reitunnel socket gets.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

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
