//! The two datagram sides every UDP flow has on one end of a session: the
//! mux stream, carrying datagrams as `u16 length | payload` so their
//! boundaries survive the byte stream ([`MuxDatagrams`]), and a UDP socket
//! connected to the flow's target ([`ConnectedUdp`], from
//! `dial_udp`, which `stream::dial_for` uses).
//! The visitor side of a reverse tunnel (many flows on one public socket)
//! is the server's own.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use reitunnel_hooks::datagram::Datagrams;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::MuxStream;

/// The largest datagram UDP carries (over IPv4: 65,535 less the IP and UDP headers).
pub const MAX_DATAGRAM: usize = 65_507;

/// Datagrams buffered for the mux before a write goes out on its own
/// (a burst is flushed sooner): one mux frame's worth.
pub(crate) const WRITE_BURST: usize = 16 * 1024;

/// Datagrams over a mux stream (or a borrowed one), each behind its 2-byte length.
pub struct MuxDatagrams<S = MuxStream>(Framed<S, LengthDelimitedCodec>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> MuxDatagrams<S> {
    /// Frames `up`, whose next bytes are the first datagram's length.
    pub fn new(up: S) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(2)
            .max_frame_length(MAX_DATAGRAM)
            .new_codec();
        let mut framed = Framed::new(up, codec);
        framed.set_backpressure_boundary(WRITE_BURST);
        MuxDatagrams(framed)
    }

    /// The stream under the framing.
    pub fn get_ref(&self) -> &S {
        self.0.get_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Datagrams for MuxDatagrams<S> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        self.0
            .next()
            .await
            .transpose()
            .map(|d| d.map(BytesMut::freeze))
    }

    fn try_recv(&mut self) -> Option<io::Result<Bytes>> {
        // One poll: a datagram already decoded or in the read buffer comes
        // out; otherwise the waker it leaves is replaced by the next `recv`.
        // The end of the stream (`None`) is for `recv` to report.
        let got = self.0.next().now_or_never()??;
        Some(got.map(BytesMut::freeze))
    }

    async fn feed(&mut self, datagram: Bytes) -> io::Result<()> {
        self.0.feed(datagram).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        SinkExt::<Bytes>::flush(&mut self.0).await
    }
}

/// A UDP socket connected to one target: what it receives comes from there.
pub struct ConnectedUdp {
    socket: UdpSocket,
    /// Received datagrams are split off this buffer, refilled a datagram's
    /// worth at a time, so most receives allocate nothing.
    buf: BytesMut,
}

impl Datagrams for ConnectedUdp {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        self.reserve();
        self.socket.recv_buf(&mut self.buf).await?;
        Ok(Some(self.buf.split().freeze()))
    }

    fn try_recv(&mut self) -> Option<io::Result<Bytes>> {
        self.reserve();
        match self.socket.try_recv_buf(&mut self.buf) {
            Ok(_) => Some(Ok(self.buf.split().freeze())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn feed(&mut self, datagram: Bytes) -> io::Result<()> {
        self.socket.send(&datagram).await.map(drop)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConnectedUdp {
    /// A flow's side on `socket`, already connected to its target.
    pub(crate) fn new(socket: UdpSocket) -> ConnectedUdp {
        ConnectedUdp {
            socket,
            buf: BytesMut::new(),
        }
    }

    /// Room for the largest datagram in the receive buffer.
    fn reserve(&mut self) {
        if self.buf.capacity() < MAX_DATAGRAM {
            self.buf.reserve(MAX_DATAGRAM);
        }
    }
}
