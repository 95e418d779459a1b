//! Socket set-up every Reitunnel socket gets.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use reitunnel_proto::Transport;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Backlog of every listener. A burst of connects must not drop SYNs
/// (128 cost rathole 3 s for 1,000 connects).
pub const LISTEN_BACKLOG: u32 = 1024;

/// The receive buffer asked for on every UDP socket: slack for the moments
/// its reader is not running (the kernel's default, about 208 KiB, is 1.7 ms
/// of 1 Gbit/s). Linux grants at most `net.core.rmem_max`, so raising that
/// sysctl raises what a tunnel's UDP sockets get (docs/PERFORMANCE.md).
pub const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Asks for [`UDP_RECV_BUFFER`] on `socket`; a smaller grant is not an error.
pub fn tune_udp(socket: &UdpSocket) -> io::Result<()> {
    socket2::SockRef::from(socket).set_recv_buffer_size(UDP_RECV_BUFFER)
}

/// Disables Nagle: tunnels relay already-batched writes, and delayed ACKs
/// against Nagle stall request/response traffic by ~40 ms.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Has the kernel probe an idle connection every `interval` and give it up
/// after `timeout` without an answer, or with data unacknowledged for that
/// long. A session's extra connections carry no heartbeats of their own
/// (the control stream's run on its first), so this is how a dead one is
/// found and its streams ended.
pub fn keep_alive(stream: &TcpStream, interval: Duration, timeout: Duration) -> io::Result<()> {
    if interval.is_zero() || timeout.is_zero() {
        return Ok(());
    }
    let probes = u32::try_from(timeout.as_millis() / interval.as_millis().max(1))
        .unwrap_or(u32::MAX)
        .max(1);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(interval)
        .with_interval(interval)
        .with_retries(probes);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(timeout))
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
                let socket = UdpSocket::from_std(socket)?;
                tune_udp(&socket)?;
                Ok(Bound::Udp(socket))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_bound_udp_socket_gets_the_receive_buffer_the_kernel_allows() {
        let Bound::Udp(socket) = Bound::bind(([127, 0, 0, 1], 0).into(), Transport::Udp).unwrap()
        else {
            panic!("a UDP bind gave a listener");
        };
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Linux grants up to net.core.rmem_max of what is asked, and
        // reports twice what it grants (an untouched socket reports its default).
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = 2 * UDP_RECV_BUFFER.min(max);
        assert_eq!(granted, want, "rmem_max {max}");
    }
}
