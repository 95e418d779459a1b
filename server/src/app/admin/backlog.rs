//! The event stream's backlog: the messages sent lately, bounded by their
//! bytes rather than their number, since one `rates` message lists every
//! tunnel and may weigh megabytes on a busy server. Every subscriber reads
//! the one shared backlog at its own pace; one that falls so far behind
//! that messages it had not read were dropped is told how many it lost.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

/// The messages still kept, oldest first, and what was dropped before them.
#[derive(Default)]
struct Ring {
    messages: VecDeque<Bytes>,
    /// The sequence number of `messages[0]`.
    first: u64,
    /// The bytes of `messages`.
    bytes: usize,
}

impl Ring {
    /// The sequence number the next message gets.
    fn end(&self) -> u64 {
        self.first + self.messages.len() as u64
    }
}

/// Messages for any number of subscribers, at most `limit` bytes of them
/// kept (always the newest one, however large).
pub(super) struct Backlog {
    ring: Mutex<Ring>,
    limit: usize,
    /// Wakes the subscribers; its receivers count them.
    sent: watch::Sender<()>,
}

/// What a subscriber reads next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Message(Bytes),
    /// This many messages were dropped before it read them.
    Lost(u64),
}

/// One subscriber's place in the backlog.
pub(super) struct Subscriber {
    next: u64,
    woken: watch::Receiver<()>,
}

impl Backlog {
    pub(super) fn new(limit: usize) -> Backlog {
        Backlog {
            ring: Mutex::default(),
            limit,
            sent: watch::channel(()).0,
        }
    }

    /// How many subscribers there are now.
    pub(super) fn subscribers(&self) -> usize {
        self.sent.receiver_count()
    }

    /// Adds `message` for every subscriber, dropping the oldest messages
    /// past the bound. With no subscriber it goes nowhere, and nothing is kept.
    pub(super) fn send(&self, message: Bytes) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if self.subscribers() == 0 {
                let end = ring.end();
                *ring = Ring {
                    first: end,
                    ..Ring::default()
                };
                return;
            }
            ring.bytes += message.len();
            ring.messages.push_back(message);
            while ring.bytes > self.limit && ring.messages.len() > 1 {
                let dropped = ring.messages.pop_front().map_or(0, |m| m.len());
                ring.bytes -= dropped;
                ring.first += 1;
            }
        }
        // After the message is in: a subscriber woken finds it.
        self.sent.send_replace(());
    }

    /// A subscriber that reads the messages sent from now on.
    pub(super) fn subscribe(&self) -> Subscriber {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        Subscriber {
            next: ring.end(),
            woken: self.sent.subscribe(),
        }
    }

    /// What `sub` reads next, if anything is there yet.
    fn take(&self, sub: &mut Subscriber) -> Option<Next> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if sub.next < ring.first {
            let lost = ring.first - sub.next;
            sub.next = ring.first;
            return Some(Next::Lost(lost));
        }
        let message = ring.messages.get((sub.next - ring.first) as usize)?.clone();
        sub.next += 1;
        Some(Next::Message(message))
    }

    /// Waits for what `sub` reads next.
    pub(super) async fn next(&self, sub: &mut Subscriber) -> Next {
        loop {
            // Marked seen before looking, so a message sent after the look wakes us.
            sub.woken.borrow_and_update();
            if let Some(next) = self.take(sub) {
                return next;
            }
            if sub.woken.changed().await.is_err() {
                // The sender is part of `self`, alive while we borrow it.
                unreachable!("the backlog's sender outlives its borrow");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize, len: usize) -> Bytes {
        let mut m = format!("{n}:").into_bytes();
        m.resize(len, b'.');
        Bytes::from(m)
    }

    #[tokio::test]
    async fn the_bound_is_in_bytes_whatever_the_count() {
        let backlog = Backlog::new(1000);
        let mut sub = backlog.subscribe();
        // Many small messages within the bound: none lost.
        for n in 0..100 {
            backlog.send(message(n, 10));
        }
        for n in 0..100 {
            assert_eq!(backlog.next(&mut sub).await, Next::Message(message(n, 10)));
        }
        // Five of 300 bytes: only the last three fit.
        for n in 0..5 {
            backlog.send(message(n, 300));
        }
        assert_eq!(backlog.next(&mut sub).await, Next::Lost(2));
        for n in 2..5 {
            assert_eq!(backlog.next(&mut sub).await, Next::Message(message(n, 300)));
        }
    }

    #[tokio::test]
    async fn the_newest_message_is_kept_even_over_the_bound() {
        let backlog = Backlog::new(100);
        let mut sub = backlog.subscribe();
        backlog.send(message(0, 10));
        backlog.send(message(1, 500));
        assert_eq!(backlog.next(&mut sub).await, Next::Lost(1));
        assert_eq!(backlog.next(&mut sub).await, Next::Message(message(1, 500)));
    }

    #[tokio::test]
    async fn without_subscribers_nothing_is_kept() {
        let backlog = Backlog::new(1000);
        backlog.send(message(0, 10));
        {
            let ring = backlog.ring.lock().unwrap();
            assert_eq!((ring.messages.len(), ring.bytes), (0, 0));
        }
        // A later subscriber starts after it, with nothing lost.
        let mut sub = backlog.subscribe();
        backlog.send(message(1, 10));
        assert_eq!(backlog.next(&mut sub).await, Next::Message(message(1, 10)));
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_by_the_next_message() {
        let backlog = std::sync::Arc::new(Backlog::new(1000));
        let mut sub = backlog.subscribe();
        let reader = {
            let backlog = backlog.clone();
            tokio::spawn(async move { backlog.next(&mut sub).await })
        };
        tokio::task::yield_now().await;
        backlog.send(message(7, 10));
        assert_eq!(reader.await.unwrap(), Next::Message(message(7, 10)));
    }
}
