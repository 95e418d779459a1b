//! The room of a queued sink's bounded queue, shared out by [`Lane`]: a
//! flood of stream events (thousands of refused visitors) once filled a
//! webhook's queue while its receiver was down, and the next client's
//! `client.connected` was dropped with them. Stream events may now hold at
//! most half of the queue, so the other half is always free for the rest.
//! Drops are counted per lane.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::events::Lane;

/// The smallest queue that can keep room for [`Lane::Main`].
const MIN_QUEUE: usize = 2;

/// One sink's accounting: how many stream events it holds, and its drops.
#[derive(Debug)]
pub(crate) struct Lanes {
    /// The queue's capacity (what the sink's channel must be built with).
    capacity: usize,
    /// The most [`Lane::Stream`] events queued or in hand at once.
    stream_room: usize,
    /// Those queued or in hand now; each [`Ticket`] of the lane holds one.
    streams: Arc<AtomicUsize>,
    dropped_main: AtomicU64,
    dropped_stream: AtomicU64,
}

/// A place in the queue, carried with the queued event and given back
/// when the sink is done with it (delivered, written or given up).
#[derive(Debug)]
#[must_use = "the place is given back when the ticket is dropped"]
pub(crate) struct Ticket(Option<Arc<AtomicUsize>>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(streams) = &self.0 {
            streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Lanes {
    /// For a queue of `queue` events (at least 2); half of it, rounded
    /// down, may hold stream events.
    pub(crate) fn new(queue: usize) -> Lanes {
        let capacity = queue.max(MIN_QUEUE);
        Lanes {
            capacity,
            stream_room: capacity / 2,
            streams: Arc::default(),
            dropped_main: AtomicU64::new(0),
            dropped_stream: AtomicU64::new(0),
        }
    }

    /// The capacity to build the sink's channel with.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// A ticket for an event of `lane`, or `None` (the drop counted) when
    /// its lane has no room left. The channel may still turn it away:
    /// then call [`Lanes::dropped_one`].
    pub(crate) fn admit(&self, lane: Lane) -> Option<Ticket> {
        match lane {
            Lane::Main => Some(Ticket(None)),
            Lane::Stream => {
                let room = self.stream_room;
                let taken = self
                    .streams
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < room).then_some(n + 1)
                    });
                match taken {
                    Ok(_) => Some(Ticket(Some(self.streams.clone()))),
                    Err(_) => {
                        self.dropped_one(lane);
                        None
                    }
                }
            }
        }
    }

    /// Counts an event of `lane` dropped.
    pub(crate) fn dropped_one(&self, lane: Lane) {
        self.counter(lane).fetch_add(1, Ordering::Relaxed);
    }

    /// Events of `lane` dropped so far.
    pub(crate) fn dropped(&self, lane: Lane) -> u64 {
        self.counter(lane).load(Ordering::Relaxed)
    }

    /// Events dropped so far, both lanes.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped(Lane::Main) + self.dropped(Lane::Stream)
    }

    fn counter(&self, lane: Lane) -> &AtomicU64 {
        match lane {
            Lane::Main => &self.dropped_main,
            Lane::Stream => &self.dropped_stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_hold_at_most_half_and_give_their_place_back() {
        let lanes = Lanes::new(8);
        assert_eq!(lanes.capacity(), 8);
        let held: Vec<Ticket> = (0..10).filter_map(|_| lanes.admit(Lane::Stream)).collect();
        assert_eq!(held.len(), 4, "half of 8");
        assert_eq!(lanes.dropped(Lane::Stream), 6);
        assert!(
            lanes.admit(Lane::Main).is_some(),
            "main events always get a ticket"
        );
        drop(held);
        assert!(lanes.admit(Lane::Stream).is_some(), "places given back");
        assert_eq!((lanes.dropped(Lane::Main), lanes.dropped_total()), (0, 6));
    }

    #[test]
    fn a_tiny_queue_still_keeps_room_for_main_events() {
        let lanes = Lanes::new(0);
        assert_eq!(lanes.capacity(), 2);
        let one = lanes.admit(Lane::Stream);
        assert!(one.is_some());
        assert!(lanes.admit(Lane::Stream).is_none());
    }
}
