//! The client's answer to a new visitor stream, read in line with the relay.
//!
//! The server writes the stream header and relays the visitor's first bytes
//! right behind it, without waiting a round trip for the client to reach its
//! target: a visitor's request arrives at the service one one-way trip after
//! it connected, as on a plain TCP path. The client still answers (accepted
//! or refused) before any of the service's bytes, so [`Answered`] reads that
//! frame as the first thing on the stream's way back and only then lets the
//! service's bytes through. A refusal, a malformed answer or no answer
//! within `stream_ack_timeout` ends the relay with the reason the hooks
//! would have seen before (reported once, by this module).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use reitunnel_hooks::relay::Ended;
use reitunnel_hooks::{CloseReason, Open, Scope, StreamInfo};
use reitunnel_proto::{DecodeError, Frame, FrameCodec};
use reitunnel_transport::{FrameIoError, MuxStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::limits::Slot;
use crate::{report_to, StreamError};

/// Reports a failed stream to its hooks and says how it closes.
pub(crate) fn failed(open: &Open<StreamInfo>, e: StreamError) -> CloseReason {
    report_to(open.chain(), Scope::Stream(open.info()), &e);
    match e {
        StreamError::TargetRefused { message, .. } => CloseReason::TargetUnreachable(message),
        other => CloseReason::Error(other.to_string()),
    }
}

/// Where the answer stands.
enum State {
    /// Reading the answer frame: `buf` holds what arrived of it.
    Waiting {
        buf: BytesMut,
        deadline: Pin<Box<Sleep>>,
        /// The tunnel's `max_pending_visitors` slot, given back on the answer.
        _pending: Slot,
    },
    /// Accepted: the stream is the service's from here on.
    Accepted,
    /// Refused or broken; the relay has been told and ends.
    Failed,
}

/// A stream to the client whose reads begin with the client's answer.
pub(crate) struct Answered<'a> {
    up: MuxStream,
    open: &'a Open<StreamInfo>,
    max_frame_len: usize,
    timeout: Duration,
    state: State,
}

impl<'a> Answered<'a> {
    /// `up` has carried the stream header; its answer is due within `timeout`.
    pub(crate) fn new(
        up: MuxStream,
        open: &'a Open<StreamInfo>,
        max_frame_len: usize,
        timeout: Duration,
        pending: Slot,
    ) -> Self {
        Answered {
            up,
            open,
            max_frame_len,
            timeout,
            state: State::Waiting {
                buf: BytesMut::with_capacity(64),
                deadline: Box::pin(tokio::time::sleep(timeout)),
                _pending: pending,
            },
        }
    }

    /// Reports `e`, and turns it into the error that ends the relay.
    fn fail(&mut self, e: StreamError) -> io::Error {
        self.state = State::Failed;
        Ended::into_io(failed(self.open, e))
    }

    /// Reads the answer frame, exactly (the service's bytes follow it).
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let State::Waiting { buf, deadline, .. } = &mut self.state else {
                return Poll::Ready(match self.state {
                    State::Accepted => Ok(()),
                    _ => Err(io::Error::other("the stream's answer already failed")),
                });
            };
            if deadline.as_mut().poll(cx).is_ready() {
                let e = StreamError::AckTimeout(self.timeout);
                return Poll::Ready(Err(self.fail(e)));
            }
            let want = match buf.get(..4) {
                None => 4,
                Some(prefix) => {
                    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
                    if len > self.max_frame_len {
                        let e = DecodeError::FrameTooLarge {
                            len,
                            max: self.max_frame_len,
                        };
                        return Poll::Ready(Err(self.fail(FrameIoError::from(e).into())));
                    }
                    4 + len
                }
            };
            if buf.len() == want && want > 4 {
                let frame = FrameCodec::new(self.max_frame_len).decode_frame(buf);
                return Poll::Ready(self.on_answer(frame));
            }
            let have = buf.len();
            buf.resize(want, 0);
            let mut rb = ReadBuf::new(&mut buf[have..]);
            let read = Pin::new(&mut self.up).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            buf.truncate(have + n);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(self.fail(FrameIoError::from(e).into())))
                }
                Poll::Ready(Ok(())) if n == 0 => {
                    return Poll::Ready(Err(self.fail(FrameIoError::Closed.into())))
                }
                Poll::Ready(Ok(())) => {}
            }
        }
    }

    fn on_answer(&mut self, frame: Result<Option<Frame>, DecodeError>) -> io::Result<()> {
        let e = match frame {
            Ok(Some(Frame::StreamAccepted)) => {
                // Dropping the waiting state gives the pending slot back.
                self.state = State::Accepted;
                return Ok(());
            }
            Ok(Some(Frame::StreamRefused { message })) => StreamError::TargetRefused {
                target: self.open.info().tunnel.target.to_string(),
                message,
            },
            Ok(Some(other)) => StreamError::UnexpectedAnswer(other.kind()),
            Ok(None) => FrameIoError::Closed.into(),
            Err(e) => FrameIoError::from(e).into(),
        };
        Err(self.fail(e))
    }
}

impl AsyncRead for Answered<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.up).poll_read(cx, buf)
    }
}

impl AsyncWrite for Answered<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.up).poll_write(cx, buf)) {
            // A client that refused the stream may have reset it before the
            // refusal was read: the refusal is the better reason.
            Err(e) if matches!(this.state, State::Waiting { .. }) => match this.poll_answer(cx) {
                Poll::Ready(Err(refused)) => Poll::Ready(Err(refused)),
                _ => Poll::Ready(Err(e)),
            },
            written => Poll::Ready(written),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().up).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().up).poll_shutdown(cx)
    }
}
