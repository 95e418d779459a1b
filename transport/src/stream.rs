//! One stream's path, the same on both ends of a session. The side that
//! opens a stream (the server for a visitor, the client for a `-L`
//! connection) introduces it with a header and relays at once, reading the
//! far side's answer in line ([`open_and_relay`]). The side that accepts it
//! (the client for a visitor, the server for a `-L` stream) reads the header
//! ([`read_header`]), reaches the target ([`dial`]), answers and relays
//! ([`accept_and_relay`]), or refuses ([`refuse`]). Both run a stream's
//! work under its session's closer ([`until_closed`]).
//!
//! What differs between the sides (which limits and gates apply, how a
//! failure is reported) stays with the caller; the steps that must match
//! across the wire live here once.

use std::net::SocketAddr;
use std::time::Duration;

use reitunnel_hooks::datagram::relay_datagrams;
use reitunnel_hooks::relay::{relay, RelayConfig};
use reitunnel_hooks::{CloseReason, Open, StreamInfo};
use reitunnel_proto::{Frame, StreamId, TunnelId, MAX_STREAM_HEADER_LEN};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::answer::{AnswerError, Answered};
use crate::datagram::MuxDatagrams;
pub use crate::dial::{dial, dial_for, DialError, Reached};
use crate::{
    cut_by_connection, read_frame, write_frame, Closer, FrameIoError, MuxError, MuxHandle,
    MuxStream, CLOSE_GRACE,
};

/// Why a stream could not be opened to the far side.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The session could not open a stream.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// The header could not be written.
    #[error(transparent)]
    Header(#[from] FrameIoError),
}

/// How the opening side waits for the far side's answer.
pub struct AnswerWait<G, F> {
    /// Longest answer frame accepted.
    pub max_frame_len: usize,
    /// How long the answer may take.
    pub within: Duration,
    /// Held until the answer arrives (the server's pending-visitor slot).
    pub guard: G,
    /// Reports a refusal or a missing answer and turns it into the error
    /// that ends the relay (see [`Answered`]).
    pub not_accepted: F,
}

/// Opens a stream for `open`, writes its header, and relays `local` over it
/// at once: `local`'s first bytes travel right behind the header, and the
/// far side's answer is read before any of its bytes. Returns the reason to
/// close the stream with: `ConnectionLost` where the session's connection
/// ended under a relay that seemed to finish.
pub async fn open_and_relay<L, G, F>(
    mux: &MuxHandle,
    local: &mut L,
    open: &Open<StreamInfo>,
    answer: AnswerWait<G, F>,
    cfg: &RelayConfig,
) -> Result<CloseReason, OpenError>
where
    L: AsyncRead + AsyncWrite + Unpin,
    G: Unpin,
    F: FnMut(AnswerError) -> std::io::Error + Unpin,
{
    let up = introduce(mux, open.info()).await?;
    let AnswerWait {
        max_frame_len,
        within,
        guard,
        not_accepted,
    } = answer;
    let mut up = Answered::new(up, max_frame_len, within, guard, not_accepted);
    let reason = relay(local, &mut up, open, cfg).await;
    Ok(reason.unless_cut(cut_by_connection(up.get_ref())))
}

/// Opens a stream to the far side and writes the header that introduces `info`.
async fn introduce(mux: &MuxHandle, info: &StreamInfo) -> Result<MuxStream, OpenError> {
    let mut up = mux.open().await?;
    let header = Frame::StreamHeader {
        tunnel_id: info.tunnel.id,
        stream_id: info.id,
        peer: info.peer,
    };
    write_frame(&mut up, &header).await?;
    Ok(up)
}

/// Opens a stream for `open` and writes its header, then waits for the far
/// side's answer within `within`: for UDP flows, whose first datagram waits
/// in the flow's queue until the far side has its socket.
pub async fn open_and_await(
    mux: &MuxHandle,
    open: &Open<StreamInfo>,
    within: Duration,
    max_frame_len: usize,
) -> Result<MuxStream, AwaitError> {
    let mut up = introduce(mux, open.info()).await?;
    let answer = match timeout(within, read_frame(&mut up, max_frame_len)).await {
        Err(_) => Err(AnswerError::Timeout(within)),
        Ok(Err(e)) => Err(AnswerError::Frame(e)),
        Ok(Ok(Frame::StreamAccepted)) => Ok(up),
        Ok(Ok(Frame::StreamRefused { message })) => Err(AnswerError::Refused(message)),
        Ok(Ok(other)) => Err(AnswerError::Unexpected(other.kind())),
    };
    answer.map_err(AwaitError::Answer)
}

/// Why [`open_and_await`] has no accepted stream.
#[derive(Debug)]
pub enum AwaitError {
    /// The stream could not be opened or introduced.
    Open(OpenError),
    /// The far side did not accept it.
    Answer(AnswerError),
}

impl From<OpenError> for AwaitError {
    fn from(e: OpenError) -> Self {
        AwaitError::Open(e)
    }
}

/// What a stream's header says.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// The tunnel the stream belongs to.
    pub tunnel_id: TunnelId,
    /// The opening side's id for it.
    pub stream_id: StreamId,
    /// The visitor's (or local connection's) address.
    pub peer: SocketAddr,
}

/// Reads a new stream's header within `within`; `None` for anything else
/// (no frame in time, a broken one, another kind, a length past
/// [`MAX_STREAM_HEADER_LEN`]): such a stream is not one of ours, and
/// dropping it, which resets it, is the answer.
pub async fn read_header(up: &mut MuxStream, within: Duration) -> Option<Header> {
    match timeout(within, read_frame(up, MAX_STREAM_HEADER_LEN)).await {
        Ok(Ok(Frame::StreamHeader {
            tunnel_id,
            stream_id,
            peer,
        })) => Some(Header {
            tunnel_id,
            stream_id,
            peer,
        }),
        _ => None,
    }
}

/// Refuses a stream, saying why. The stream then ends.
pub async fn refuse(up: &mut MuxStream, message: String) {
    let _ = write_frame(up, &Frame::StreamRefused { message }).await;
}

/// [`accept_and_relay`] for whichever target was reached: a UDP flow
/// relays datagrams, closed after `udp_idle` without one (if set).
pub async fn accept_reached(
    up: &mut MuxStream,
    reached: Reached,
    open: &Open<StreamInfo>,
    cfg: &RelayConfig,
    udp_idle: Option<Duration>,
) -> Result<CloseReason, FrameIoError> {
    match reached {
        Reached::Tcp(mut tcp) => accept_and_relay(up, &mut tcp, open, cfg).await,
        Reached::Udp(mut udp) => {
            write_frame(up, &Frame::StreamAccepted).await?;
            let mut datagrams = MuxDatagrams::new(&mut *up);
            let reason = relay_datagrams(&mut datagrams, &mut udp, open, udp_idle).await;
            Ok(reason.unless_cut(cut_by_connection(up)))
        }
    }
}

/// Tells the opening side its stream is accepted, then relays between it
/// and the reached `target`. Returns the reason to close the stream with,
/// or why the answer could not be written.
pub async fn accept_and_relay(
    up: &mut MuxStream,
    target: &mut TcpStream,
    open: &Open<StreamInfo>,
    cfg: &RelayConfig,
) -> Result<CloseReason, FrameIoError> {
    write_frame(up, &Frame::StreamAccepted).await?;
    let reason = relay(up, target, open, cfg).await;
    Ok(reason.unless_cut(cut_by_connection(up)))
}

/// Runs a stream's `work` under its session's closer: it ends when the work
/// does or the session closes; on an orderly close (the peer said goodbye)
/// the work gets [`CLOSE_GRACE`] more to land its last bytes. Returns the
/// reason to close the stream with.
pub async fn until_closed(
    closer: &Closer<CloseReason>,
    work: impl std::future::Future<Output = CloseReason>,
) -> CloseReason {
    closer
        .run(work, CLOSE_GRACE, CloseReason::is_orderly)
        .await
        .unwrap_or_else(|cut| cut)
}
