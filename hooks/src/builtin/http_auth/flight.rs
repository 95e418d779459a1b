//! Single flight: identical questions asked at the same time share one
//! request. A burst of visitors from one address asks the same `stream`
//! question many times over before the first answer could be kept.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::OnceCell;

/// The questions being asked, by key, each with the answer its askers wait for.
pub(super) struct Flights<T> {
    asking: Mutex<HashMap<String, Weak<OnceCell<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            asking: Mutex::default(),
        }
    }
}

impl<T> Flights<T> {
    fn asking(&self) -> MutexGuard<'_, HashMap<String, Weak<OnceCell<T>>>> {
        self.asking.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> Flights<T> {
    /// The answer to the question under `key`: that of the request already
    /// asking it, if one is, else of `ask`, run here. If the caller running
    /// the request gives up (its deadline passes, it is dropped), one of
    /// those still waiting runs its own `ask` in its place.
    pub(super) async fn join<F, Fut>(&self, key: &str, ask: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut seat = Seat {
            flights: self,
            key,
            flight: Some(self.board(key)),
        };
        let flight = seat.flight.as_ref().expect("held until dropped");
        let answer = flight.get_or_init(ask).await.clone();
        seat.leave();
        answer
    }

    /// The flight asking `key` now, or a new one. A flight already answered
    /// is not joined: its answer may be stale, and the cache keeps those
    /// worth keeping.
    fn board(&self, key: &str) -> Arc<OnceCell<T>> {
        let mut asking = self.asking();
        let current = asking.get(key).and_then(Weak::upgrade);
        if let Some(flight) = current.filter(|f| !f.initialized()) {
            return flight;
        }
        let flight = Arc::new(OnceCell::new());
        asking.insert(key.to_owned(), Arc::downgrade(&flight));
        flight
    }
}

/// One asker's place on a flight; the last to leave (answered or not)
/// removes the flight, so keys asked once do not pile up.
struct Seat<'a, T> {
    flights: &'a Flights<T>,
    key: &'a str,
    flight: Option<Arc<OnceCell<T>>>,
}

impl<T> Seat<'_, T> {
    fn leave(&mut self) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        drop(flight);
        let mut asking = self.flights.asking();
        if asking.get(self.key).is_some_and(|f| f.strong_count() == 0) {
            asking.remove(self.key);
        }
    }
}

impl<T> Drop for Seat<'_, T> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::task::Poll;

    use super::*;

    /// Polls `fut` once: its output if it was ready.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    #[tokio::test]
    async fn identical_questions_at_once_share_one_ask_and_leave_nothing_behind() {
        let flights = Flights::<u32>::default();
        let asked = AtomicU32::new(0);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut first = Box::pin(flights.join("k", || async {
            asked.fetch_add(1, Ordering::Relaxed);
            released.await.expect("released");
            7
        }));
        assert!(poll_once(&mut first).await.is_none(), "asking");
        let mut second = Box::pin(flights.join("k", || -> std::future::Ready<u32> {
            unreachable!("the second shares the first's request")
        }));
        assert!(
            poll_once(&mut second).await.is_none(),
            "waiting on the first"
        );
        release.send(()).expect("the first waits");
        assert_eq!((first.await, second.await), (7, 7));
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert!(flights.asking().is_empty(), "the flight is gone");
    }

    #[tokio::test]
    async fn a_waiting_asker_takes_over_from_one_that_gave_up() {
        let flights = Flights::<u32>::default();
        let mut gives_up = Box::pin(flights.join("k", std::future::pending::<u32>));
        assert!(poll_once(&mut gives_up).await.is_none());
        let mut waits = Box::pin(flights.join("k", || async { 8 }));
        assert!(poll_once(&mut waits).await.is_none(), "waits on the first");
        drop(gives_up);
        assert_eq!(waits.await, 8);
        assert!(flights.asking().is_empty());
    }
}
