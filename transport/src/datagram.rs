//! The two datagram sides every UDP flow has on one end of a session: the
//! mux stream, carrying datagrams as `u16 length | payload` so their
//! boundaries survive the byte stream ([`MuxDatagrams`]), and a UDP socket
//! connected to the flow's target ([`ConnectedUdp`], from
//! `dial_udp`, which `stream::dial_for` uses).
//! The visitor side of a reverse tunnel (many flows on one public socket)
//! is the server's own.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use reitunnel_hooks::datagram::Datagrams;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::MuxStream;

/// The largest datagram UDP carries (over IPv4: 65,535 less the IP and UDP headers).
pub const MAX_DATAGRAM: usize = 65_507;

/// Datagrams over a mux stream (or a borrowed one), each behind its 2-byte length.
pub struct MuxDatagrams<S = MuxStream>(Framed<S, LengthDelimitedCodec>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> MuxDatagrams<S> {
    /// Frames `up`, whose next bytes are the first datagram's length.
    pub fn new(up: S) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(2)
            .max_frame_length(MAX_DATAGRAM)
            .new_codec();
        MuxDatagrams(Framed::new(up, codec))
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

    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        self.0.send(datagram).await
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
        if self.buf.capacity() < MAX_DATAGRAM {
            self.buf.reserve(MAX_DATAGRAM);
        }
        self.socket.recv_buf(&mut self.buf).await?;
        Ok(Some(self.buf.split().freeze()))
    }

    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        self.socket.send(&datagram).await.map(drop)
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
}
