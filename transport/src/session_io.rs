//! The socket as yamux sees it: tokio I/O behind futures' traits, with
//! vectored writes, a queue for small frames and a small read buffer.
//!
//! yamux writes each frame as a header and a body and flushes after every
//! frame. A large frame (bulk data) goes to the socket in one vectored
//! write, its body never copied into a buffer. Small frames (acks, window
//! updates, resets, pongs, short data) are queued and written together at
//! the flush. tokio-util's `Compat` would turn the vectored write into two
//! plain ones, hence this adapter.
//!
//! The queue is also slack that yamux needs: it stops reading while an
//! answer to what it read (a reset, a pong) cannot be written, so two peers
//! that both write faster than they read would wait on each other for good
//! once their socket buffers fill. So small frames may queue up to
//! `slack` bytes while the socket is full (512 KiB by default: tens of
//! thousands of control frames); the queue's memory is taken only while it
//! is used and given back once it drains. With no queue at all a client
//! opening 20,000 streams as fast as it could stalled its session within a
//! few hundred (`server/tests/adversarial.rs`).
//!
//! Reads go through a small buffer so the 12-byte headers don't cost a
//! system call each; the rest of a body larger than the buffer is read
//! straight into yamux's frame.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// A session's socket (TCP or TLS), for yamux.
#[derive(Debug)]
pub struct SessionIo<T> {
    io: BufReader<T>,
    /// Small frames not yet written; `sent` bytes of it already were.
    queued: Vec<u8>,
    sent: usize,
    /// Frames smaller than this are queued (and this much queue capacity is
    /// kept after draining); larger ones go straight to the socket.
    small: usize,
    /// The most bytes queued before a write waits for the socket.
    slack: usize,
}

impl<T: AsyncRead + AsyncWrite + Unpin> SessionIo<T> {
    /// `io` with a read buffer of `buffer` bytes, frames under `buffer`
    /// bytes queued, up to `slack` bytes of them.
    pub fn new(io: T, buffer: usize, slack: usize) -> Self {
        SessionIo {
            io: BufReader::with_capacity(buffer, io),
            queued: Vec::new(),
            sent: 0,
            small: buffer,
            slack: slack.max(buffer),
        }
    }

    /// Writes the queue out; gives its memory back if it grew past `small`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.queued.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.queued[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.queued.clear();
        if self.queued.capacity() > self.small {
            self.queued = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// One frame (or part of one), as `bufs`.
    fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if total >= self.small {
            // Whatever is queued goes first, then this straight to the socket.
            ready!(self.poll_drain(cx))?;
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        if self.queued.len() + total > self.slack {
            ready!(self.poll_drain(cx))?;
        }
        for b in bufs {
            self.queued.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> futures::AsyncRead for SessionIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> futures::AsyncWrite for SessionIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_parts(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_parts(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWrite as _;
    use std::task::Waker;
    use tokio::io::AsyncReadExt;

    /// One poll, with a waker that does nothing (the test polls again itself).
    fn once<R>(f: impl FnOnce(&mut Context<'_>) -> Poll<R>) -> Poll<R> {
        f(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn small_frames_queue_up_to_the_slack_while_the_peer_reads_nothing() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = SessionIo::new(near, 256, 4096);
        let frame = [7u8; 12];
        let mut accepted = 0;
        // Write and flush as yamux does, until a write has to wait.
        while let Poll::Ready(n) = once(|cx| Pin::new(&mut io).poll_write(cx, &frame)) {
            accepted += n.unwrap();
            let _ = once(|cx| Pin::new(&mut io).poll_flush(cx));
        }
        // The pipe holds 1024 bytes; past that, 4096 bytes of queue.
        assert!(
            (4096..=1024 + 4096).contains(&accepted),
            "{accepted} bytes accepted"
        );
        // Once the peer reads, everything arrives, in order.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; accepted];
            far.read_exact(&mut got).await.unwrap();
            got
        });
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
            .await
            .unwrap();
        assert!(reader.await.unwrap().iter().all(|&b| b == 7));
        assert_eq!(io.queued.capacity(), 0, "the queue's memory is given back");
    }

    #[tokio::test]
    async fn a_large_frame_goes_to_the_socket_without_queueing() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = SessionIo::new(near, 256, 4096);
        let header = [1u8; 12];
        let body = [2u8; 500];
        let parts = [IoSlice::new(&header), IoSlice::new(&body)];
        let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &parts))
            .await
            .unwrap();
        assert_eq!(n, 512);
        assert_eq!(io.queued.capacity(), 0, "nothing was copied into the queue");
        let mut got = [0u8; 512];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..12], header);
        assert_eq!(got[12..], body);
    }
}
