//! The control stream, the same on both sides of a session: frames in and
//! out, heartbeats (pings when due, pongs to the peer's, the round trip
//! from pongs to ours, silence caught at the timeout), bounded sends, and
//! the goodbye that ends it. A session sees only what it must act on:
//! [`Incoming`] frames, round trips and the peer's goodbye, or how the
//! stream ended ([`ControlEnd`]).
//!
//! Frames this side owes the peer (pings, pongs, the session's own) wait in
//! a short queue and leave it only when the codec has taken them, so
//! [`Control::next`] can sit in a `select!` beside other work and lose
//! nothing when another branch wins.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::ready;
use std::time::Duration;

use futures::{Sink, StreamExt};
use reitunnel_proto::{CodecError, DecodeError, Frame, FrameCodec, RefuseCode};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;

use crate::heartbeat::{Beat, Heartbeat};
use crate::CLOSE_GRACE;

/// What the control stream brought that the session must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A request or answer (tunnels, forwards).
    Frame(Frame),
    /// A pong answered our timed ping: the session's round trip.
    RoundTrip(Duration),
    /// The peer is leaving, saying why.
    Goodbye {
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        message: String,
    },
}

/// Why the control stream ended.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlEnd {
    /// The connection closed or broke.
    #[error("connection lost")]
    Lost,
    /// The peer sent nothing, or took nothing we sent, for this long.
    #[error("no sign of life for {0:?}")]
    Silent(Duration),
    /// The peer sent a malformed frame.
    #[error("malformed control frame: {0}")]
    Malformed(DecodeError),
}

/// One side's control stream.
pub struct Control<T> {
    framed: Framed<T, FrameCodec>,
    heartbeat: Heartbeat,
    /// Frames owed to the peer, not yet taken by the codec.
    owed: VecDeque<Frame>,
    /// Since when the peer has not taken what we owe it.
    stalled_since: Option<Instant>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Control<T> {
    /// A control stream over `io`, refusing frames over `max_frame_len`.
    pub fn new(io: T, max_frame_len: usize, heartbeat: Heartbeat) -> Self {
        Control {
            framed: Framed::new(io, FrameCodec::new(max_frame_len)),
            heartbeat,
            owed: VecDeque::with_capacity(2),
            stalled_since: None,
        }
    }

    /// The next thing the session must act on. Meanwhile sends what is
    /// owed, pings when due and answers the peer's pings. Cancel-safe.
    pub async fn next(&mut self) -> Result<Incoming, ControlEnd> {
        loop {
            self.flush().await?;
            let frame = tokio::select! {
                beat = self.heartbeat.due() => match beat {
                    Beat::Ping(ping) => {
                        self.owed.push_back(ping);
                        continue;
                    }
                    Beat::Dead(silent) => return Err(ControlEnd::Silent(silent)),
                },
                frame = self.framed.next() => match frame {
                    None | Some(Err(CodecError::Io(_))) => return Err(ControlEnd::Lost),
                    Some(Err(CodecError::Decode(e))) => return Err(ControlEnd::Malformed(e)),
                    Some(Ok(frame)) => frame,
                },
            };
            self.heartbeat.heard();
            match frame {
                Frame::Ping { seq } => self.owed.push_back(Frame::Pong { seq }),
                Frame::Pong { seq } => {
                    if let Some(rtt) = self.heartbeat.pong(seq) {
                        return Ok(Incoming::RoundTrip(rtt));
                    }
                }
                Frame::Goodbye { code, message } => return Ok(Incoming::Goodbye { code, message }),
                other => return Ok(Incoming::Frame(other)),
            }
        }
    }

    /// Sends `frame`, with whatever is owed before it. A peer that takes
    /// nothing for the heartbeat timeout ends the stream as silent.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ControlEnd> {
        self.owed.push_back(frame);
        self.flush().await
    }

    /// Tells the peer this side is leaving, giving it [`CLOSE_GRACE`] to
    /// take the goodbye; the stream is done after this either way.
    pub async fn goodbye(&mut self, code: RefuseCode, message: String) {
        self.owed.push_back(Frame::Goodbye { code, message });
        let _ = timeout(CLOSE_GRACE, self.flush()).await;
    }

    /// Hands the codec what is owed and flushes it, within the heartbeat
    /// timeout counted from when the peer first stopped taking it (so a
    /// `next` cancelled over and over does not restart the count).
    async fn flush(&mut self) -> Result<(), ControlEnd> {
        if self.owed.is_empty() && self.stalled_since.is_none() {
            return Ok(());
        }
        let limit = self.heartbeat.timeout();
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        let framed = &mut self.framed;
        let owed = &mut self.owed;
        let sent = poll_fn(|cx| {
            while !owed.is_empty() {
                ready!(Pin::new(&mut *framed).poll_ready(cx))?;
                let frame = owed.pop_front().expect("checked non-empty");
                Pin::new(&mut *framed).start_send(frame)?;
            }
            Pin::new(&mut *framed).poll_flush(cx)
        });
        match timeout_at(since + limit, sent).await {
            Ok(Ok(())) => {
                self.stalled_since = None;
                Ok(())
            }
            Ok(Err(_)) => Err(ControlEnd::Lost),
            Err(_) => Err(ControlEnd::Silent(limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use tokio::io::DuplexStream;

    use super::*;

    const MAX: usize = 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Our control stream (pings every 100 ms, dead after 1 s) and the
    /// peer's end, framed. `buffer` bounds what the pipe holds unread.
    fn pair(buffer: usize) -> (Control<DuplexStream>, Framed<DuplexStream, FrameCodec>) {
        let (ours, theirs) = tokio::io::duplex(buffer);
        let control = Control::new(ours, MAX, Heartbeat::new(ms(100), ms(1000)));
        (control, Framed::new(theirs, FrameCodec::new(MAX)))
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_answered_pongs_give_the_round_trip_and_frames_come_through() {
        let (mut control, mut peer) = pair(4096);
        peer.send(Frame::Ping { seq: 41 }).await.unwrap();
        let open = Frame::CloseTunnel {
            tunnel_id: reitunnel_proto::TunnelId(3),
        };
        peer.send(open.clone()).await.unwrap();
        assert_eq!(control.next().await, Ok(Incoming::Frame(open)));
        assert_eq!(peer.next().await.unwrap().unwrap(), Frame::Pong { seq: 41 });
        // Our ping goes out when due; the peer's pong 5 ms later is the round trip.
        let next = tokio::spawn(async move {
            let got = control.next().await;
            (control, got)
        });
        let Frame::Ping { seq } = peer.next().await.unwrap().unwrap() else {
            panic!("a ping first");
        };
        tokio::time::advance(ms(5)).await;
        peer.send(Frame::Pong { seq }).await.unwrap();
        let (mut control, got) = next.await.unwrap();
        assert_eq!(got, Ok(Incoming::RoundTrip(ms(5))));
        let bye = Frame::Goodbye {
            code: RefuseCode::Other,
            message: "bye".into(),
        };
        peer.send(bye).await.unwrap();
        let goodbye = Incoming::Goodbye {
            code: RefuseCode::Other,
            message: "bye".into(),
        };
        assert_eq!(control.next().await, Ok(goodbye));
        drop(peer);
        assert_eq!(control.next().await, Err(ControlEnd::Lost));
    }

    /// `next` dropped again and again while a pong is owed still sends it.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_next_loses_no_owed_frame() {
        let (mut control, mut peer) = pair(4096);
        for seq in 0..20 {
            peer.send(Frame::Ping { seq }).await.unwrap();
            // Long enough for the frame to be read, never for a ping of ours.
            let _ = timeout(ms(1), control.next()).await;
        }
        let sent = control.send(Frame::Pong { seq: 99 });
        sent.await.unwrap();
        let mut pongs = Vec::new();
        while pongs.last() != Some(&99) {
            match peer.next().await.unwrap().unwrap() {
                Frame::Pong { seq } => pongs.push(seq),
                Frame::Ping { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pongs, (0..20).chain([99]).collect::<Vec<_>>());
    }

    /// A peer that reads nothing ends the stream as silent at the timeout,
    /// however often `next` is cancelled meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_silent_at_the_timeout() {
        let (mut control, mut peer) = pair(64);
        let start = Instant::now();
        let big = Frame::Goodbye {
            code: RefuseCode::Other,
            message: "x".repeat(200),
        };
        let stalled = timeout(ms(10), control.send(big)).await;
        assert!(stalled.is_err(), "a 200-byte frame fit a 64-byte pipe");
        let ended = loop {
            // The peer keeps talking (so it is not silent) while the pipe
            // takes it, but never reads.
            let _ = timeout(ms(1), peer.send(Frame::Pong { seq: 0 })).await;
            if let Ok(result) = timeout(ms(50), control.next()).await {
                break result;
            }
        };
        assert_eq!(ended, Err(ControlEnd::Silent(ms(1000))));
        assert!(start.elapsed() <= ms(1100), "{:?}", start.elapsed());
    }
}
