//! A new stream's answer, read in line with the relay: one trip, not two.
//!
//! The side that opens a stream (the server for a visitor, the client for a
//! `-L` connection) writes the stream header and relays the first bytes
//! right behind it, without waiting a round trip for the far side to reach
//! its target: a request reaches the service one one-way trip after its
//! connection was accepted, as on a plain TCP path. The far side still
//! answers (accepted or refused) before any of the service's bytes, so
//! [`Answered`] reads that frame as the first thing on the way back and only
//! then lets the service's bytes through.
//!
//! A refusal, a malformed answer or no answer within the deadline goes to
//! the caller's `fail`, which reports it and turns it into the `io::Error`
//! that ends the relay (the hooks' `relay::Ended`, carrying the close reason).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use reitunnel_proto::{DecodeError, Frame, FrameCodec, FrameKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::FrameIoError;

/// Why a stream was not accepted.
#[derive(Debug)]
pub enum AnswerError {
    /// The far side refused it, saying why.
    Refused(String),
    /// It answered with a frame that is neither accept nor refuse.
    Unexpected(FrameKind),
    /// The answer could not be read: the stream ended, broke, or the frame was malformed.
    Frame(FrameIoError),
    /// No answer within the deadline.
    Timeout(Duration),
}

/// Where the answer stands.
enum State<G> {
    /// Reading the answer frame: `buf` holds what arrived of it.
    Waiting {
        buf: BytesMut,
        deadline: Pin<Box<Sleep>>,
        /// Dropped on the answer (the server's pending-visitor slot).
        _guard: G,
    },
    Accepted,
    Failed,
}

/// A stream whose reads begin with the far side's answer. `G` is held until
/// the answer arrives; `F` handles a failure (see the module docs).
pub struct Answered<S, G, F> {
    io: S,
    fail: F,
    max_frame_len: usize,
    timeout: Duration,
    state: State<G>,
}

impl<S, G, F> Answered<S, G, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    G: Unpin,
    F: FnMut(AnswerError) -> io::Error + Unpin,
{
    /// `io` has carried the stream header; its answer is due within `timeout`.
    pub fn new(io: S, max_frame_len: usize, timeout: Duration, guard: G, fail: F) -> Self {
        Answered {
            io,
            fail,
            max_frame_len,
            timeout,
            state: State::Waiting {
                buf: BytesMut::with_capacity(64),
                deadline: Box::pin(tokio::time::sleep(timeout)),
                _guard: guard,
            },
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    fn failed(&mut self, e: AnswerError) -> io::Error {
        self.state = State::Failed;
        (self.fail)(e)
    }

    /// Reads the answer frame, exactly: the service's bytes follow it.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let State::Waiting { buf, deadline, .. } = &mut self.state else {
                return Poll::Ready(match self.state {
                    State::Accepted => Ok(()),
                    _ => Err(io::Error::other("the stream was not accepted")),
                });
            };
            if deadline.as_mut().poll(cx).is_ready() {
                let e = AnswerError::Timeout(self.timeout);
                return Poll::Ready(Err(self.failed(e)));
            }
            let want = match buf.get(..4) {
                None => 4,
                Some(prefix) => {
                    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
                    if len > self.max_frame_len {
                        let max = self.max_frame_len;
                        let e = FrameIoError::from(DecodeError::FrameTooLarge { len, max });
                        return Poll::Ready(Err(self.failed(AnswerError::Frame(e))));
                    }
                    4 + len
                }
            };
            if buf.len() >= 4 && buf.len() == want {
                let frame = FrameCodec::new(self.max_frame_len).decode_frame(buf);
                return Poll::Ready(self.on_answer(frame));
            }
            let have = buf.len();
            buf.resize(want, 0);
            let mut rb = ReadBuf::new(&mut buf[have..]);
            let read = Pin::new(&mut self.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            buf.truncate(have + n);
            let e = match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if n > 0 => continue,
                Poll::Ready(Ok(())) => FrameIoError::Closed,
                Poll::Ready(Err(e)) => FrameIoError::from(e),
            };
            return Poll::Ready(Err(self.failed(AnswerError::Frame(e))));
        }
    }

    fn on_answer(&mut self, frame: Result<Option<Frame>, DecodeError>) -> io::Result<()> {
        let e = match frame {
            Ok(Some(Frame::StreamAccepted)) => {
                // Leaving the waiting state drops the guard.
                self.state = State::Accepted;
                return Ok(());
            }
            Ok(Some(Frame::StreamRefused { message })) => AnswerError::Refused(message),
            Ok(Some(other)) => AnswerError::Unexpected(other.kind()),
            Ok(None) => AnswerError::Frame(FrameIoError::Closed),
            Err(e) => AnswerError::Frame(e.into()),
        };
        Err(self.failed(e))
    }
}

impl<S, G, F> AsyncRead for Answered<S, G, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    G: Unpin,
    F: FnMut(AnswerError) -> io::Error + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S, G, F> AsyncWrite for Answered<S, G, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    G: Unpin,
    F: FnMut(AnswerError) -> io::Error + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.io).poll_write(cx, buf)) {
            // A far side that refused the stream may have reset it before
            // its refusal was read: the refusal is the better reason.
            Err(e) if matches!(this.state, State::Waiting { .. }) => match this.poll_answer(cx) {
                Poll::Ready(Err(refused)) => Poll::Ready(Err(refused)),
                _ => Poll::Ready(Err(e)),
            },
            written => Poll::Ready(written),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
