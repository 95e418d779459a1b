//! The connections to the authorization service: kept open between
//! questions and used again, and at most `max` at once. Before it, every
//! question opened a connection of its own: 300 visitors arriving together
//! made 300 simultaneous connections to the operator's service.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::sync::Semaphore;

use crate::builtin::webhook::endpoint::{Connection, Failure, Target};

/// Connections to one service; each question holds one while it asks.
pub(super) struct Pool {
    target: Target,
    /// One per connection that may be open: a question waits for one.
    permits: Semaphore,
    /// Open connections no question holds. Never more than `max`: a
    /// connection is only opened when none is idle, by a question holding
    /// a permit, and is put back before its permit is released.
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn new(target: Target, max: NonZeroUsize) -> Pool {
        Pool {
            target,
            permits: Semaphore::new(max.get()),
            idle: Mutex::default(),
        }
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// The target, for a pool of another size (before any question).
    pub(super) fn into_target(self) -> Target {
        self.target
    }

    /// Sends one request (built by `request`, again if a kept connection
    /// turned out closed) and reads its answer: over an idle connection if
    /// there is one, else a new one, once fewer than `max` are busy.
    /// Waits as long as the caller lets it (the caller's deadline bounds it).
    pub(super) async fn send(
        &self,
        request: impl Fn() -> Result<Request<Full<Bytes>>, Failure>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the pool never closes its semaphore");
        let kept = self.idle().pop();
        let answered = self.target.exchange(kept, request).await?;
        if let Some(conn) = answered.conn {
            // Before `_permit` goes, so the next question finds it.
            self.idle().push(conn);
        }
        Ok((answered.status, answered.body?))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
