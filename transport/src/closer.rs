//! Cancellation that carries its reason down the tree.
//!
//! A session owns a root closer, each tunnel a child, each stream watches its
//! tunnel's. Closing a parent cancels every child; a child that was not
//! closed for a reason of its own reports its parent's (so the streams of a
//! killed client close with "connection lost", those of a stopping server
//! with "shutdown").

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cancellation token with a first-wins close reason.
#[derive(Debug)]
pub struct Closer<R> {
    token: CancellationToken,
    reason: OnceLock<R>,
    parent: Option<Arc<Closer<R>>>,
}

impl<R: Clone> Closer<R> {
    /// A closer with no parent.
    pub fn root() -> Arc<Self> {
        Arc::new(Closer {
            token: CancellationToken::new(),
            reason: OnceLock::new(),
            parent: None,
        })
    }

    /// A closer cancelled with `self` (and able to close on its own).
    pub fn child(self: &Arc<Self>) -> Arc<Self> {
        Arc::new(Closer {
            token: self.token.child_token(),
            reason: OnceLock::new(),
            parent: Some(self.clone()),
        })
    }

    /// Cancels this closer and its children. The first reason given wins.
    pub fn close(&self, reason: R) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether this closer (or a parent) was closed.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once closed.
    pub async fn closed(&self) {
        self.token.cancelled().await
    }

    /// The reason this closer, or the nearest closed parent, was given.
    pub fn reason(&self) -> Option<R> {
        self.reason
            .get()
            .cloned()
            .or_else(|| self.parent.as_ref().and_then(|p| p.reason()))
    }

    /// A guard that closes this closer with `reason` when dropped, unless it
    /// was closed already: a task that owns children holds one, so if the
    /// task is aborted (dropped mid-way), its children end with it instead
    /// of outliving it.
    pub fn close_on_drop(self: &Arc<Self>, reason: R) -> CloseOnDrop<R> {
        CloseOnDrop {
            closer: self.clone(),
            reason: Some(reason),
        }
    }

    /// Runs `work` until this closer closes; `Err(reason)` if it was cut.
    /// If the reason is one `lets_finish` accepts (the peer left in
    /// order, so its last bytes are already on the wire behind its
    /// goodbye), `work` gets up to `grace` more to land them first.
    pub async fn run<F: Future>(
        &self,
        work: F,
        grace: Duration,
        lets_finish: impl Fn(&R) -> bool,
    ) -> Result<F::Output, R> {
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => return Ok(done),
            _ = self.closed() => {}
        }
        // Only `close` cancels a token, and it sets the reason first.
        let reason = self.reason().expect("a closed closer has a reason");
        if !lets_finish(&reason) {
            return Err(reason);
        }
        tokio::time::timeout(grace, work).await.map_err(|_| reason)
    }
}

/// Closes its closer when dropped; see [`Closer::close_on_drop`].
#[derive(Debug)]
pub struct CloseOnDrop<R: Clone> {
    closer: Arc<Closer<R>>,
    reason: Option<R>,
}

impl<R: Clone> Drop for CloseOnDrop<R> {
    fn drop(&mut self) {
        if let Some(reason) = self.reason.take().filter(|_| !self.closer.is_closed()) {
            self.closer.close(reason);
        }
    }
}
