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

/// Unsent bytes a session's connection may hold in the kernel
/// ([`tune_session`]). Without a bound the kernel queues up to its whole
/// send buffer (4 MiB by default) first in first out, so a stream's first
/// bytes, a goodbye or a ping wait behind every bulk byte already queued
/// there: across 150 ms a new visitor's first bytes arrived a quarter second late,
/// at the same moment as an older stream's last ones, and iperf3's server,
/// still busy with the test those ended, turned the new test away. With
/// the bound the multiplexer's own queue, which takes the streams in turn,
/// holds the rest. 1 MiB keeps the throughput of no bound across 50 ms
/// (256 KiB cost a tenth of it: more wake-ups of the writer).
pub const SESSION_NOTSENT: u32 = 1024 * 1024;

/// Sets up a connection that carries a session (multiplexed streams):
/// at most [`SESSION_NOTSENT`] unsent bytes in the kernel; and the kernel
/// probes it when idle every `interval` and gives it up after `timeout`
/// without an answer, or with data unacknowledged for that long. A
/// session's extra connections carry no heartbeats of their own (the
/// control stream's run on its first), so this is how a dead one is found
/// and its streams ended.
pub fn tune_session(stream: &TcpStream, interval: Duration, timeout: Duration) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_notsent_lowat(SESSION_NOTSENT)?;
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_session_connection_bounds_its_unsent_bytes_and_is_probed() {
        let listener = listen(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stream, _accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let stream = stream.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert_eq!(
            socket.tcp_notsent_lowat().unwrap(),
            0,
            "the kernel's default: no bound"
        );
        tune_session(&stream, Duration::from_secs(10), Duration::from_secs(30)).unwrap();
        assert_eq!(socket.tcp_notsent_lowat().unwrap(), SESSION_NOTSENT);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
    }
}
