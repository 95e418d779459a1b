//! Support code for the fuzz targets in `fuzz_targets/`.
//!
//! [`harness`] holds the sans-IO checks that `proto/tests/fuzz_corpus.rs`
//! replays in the ordinary test suite; this file holds what only the targets
//! need: in-memory I/O and a runtime that turns a hang into a crash.

#![forbid(unsafe_code)]

pub mod harness;

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::{Builder, Runtime};

/// A connection whose peer already sent all of `input` and then closed:
/// reads hand it out (in uneven pieces, so code relying on whole reads would
/// show) and then report end of file; writes always succeed at once and are
/// kept in [`Wire::written`]. Nothing here ever returns `Pending`.
pub struct Wire<'a> {
    input: &'a [u8],
    reads: usize,
    /// Everything written so far.
    pub written: Vec<u8>,
}

impl<'a> Wire<'a> {
    /// A connection that will deliver `input`, then end of file.
    pub fn new(input: &'a [u8]) -> Self {
        Wire {
            input,
            reads: 0,
            written: Vec::new(),
        }
    }
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        // Piece sizes 1, 8, 2, 9, 3, ...: fixed, so every run is reproducible.
        let piece = 1 + (me.reads * 7) % 13;
        me.reads += 1;
        let n = piece.min(buf.remaining()).min(me.input.len());
        let (head, rest) = me.input.split_at(n);
        buf.put_slice(head);
        me.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: Runtime = Builder::new_current_thread()
        .build()
        .expect("building a current-thread runtime");
}

/// Runs `fut` inside a current-thread runtime and requires it to finish in a
/// single poll. All input is in memory and writes never block, so a future
/// still pending is waiting for something that will never come: in
/// production that is a connection stuck until its timeout, so it counts as
/// a crash here rather than hanging the fuzzer.
pub fn run_to_completion<F: Future>(fut: F) -> F::Output {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut fut = pin!(fut);
            std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(out),
                Poll::Pending => panic!("future still pending with all input delivered (a hang)"),
            })
            .await
        })
    })
}
