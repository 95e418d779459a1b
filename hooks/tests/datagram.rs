//! The datagram relay over in-memory sides: a burst already waiting goes
//! out with one flush, every datagram still meets the hooks on its own and
//! keeps its order, a throttle sends what is buffered before it waits, and
//! a close ends the burst where it stands.
#![cfg(feature = "tokio")]

mod common;

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::stream;
use reitunnel_hooks::datagram::{relay_datagrams, Datagrams};
use reitunnel_hooks::{
    CloseReason, DataEvent, Direction, Hook, HookChain, Reason, StreamInfo, Verdict,
};

/// What a side was asked to do, in order.
#[derive(Debug, PartialEq)]
enum Op {
    Feed(Bytes),
    Flush,
}

/// A side holding `waiting` datagrams; once they are taken it ends (if
/// `ends`) or waits for good.
struct Side {
    waiting: VecDeque<Bytes>,
    ends: bool,
    ops: Vec<Op>,
}

impl Side {
    fn with(datagrams: &[Bytes], ends: bool) -> Side {
        Side {
            waiting: datagrams.iter().cloned().collect(),
            ends,
            ops: Vec::new(),
        }
    }

    /// The datagrams fed between flushes, by their first byte.
    fn flushed_groups(&self) -> Vec<Vec<u8>> {
        let mut groups = vec![Vec::new()];
        for op in &self.ops {
            match op {
                Op::Feed(d) => groups.last_mut().unwrap().push(d[0]),
                Op::Flush => groups.push(Vec::new()),
            }
        }
        groups
    }
}

impl Datagrams for Side {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match self.waiting.pop_front() {
            Some(datagram) => Ok(Some(datagram)),
            None if self.ends => Ok(None),
            None => std::future::pending().await,
        }
    }

    fn try_recv(&mut self) -> Option<io::Result<Bytes>> {
        self.waiting.pop_front().map(Ok)
    }

    async fn feed(&mut self, datagram: Bytes) -> io::Result<()> {
        self.ops.push(Op::Feed(datagram));
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.ops.push(Op::Flush);
        Ok(())
    }
}

/// Datagrams numbered by their first byte, of sizes 1, 2, 3, ...
fn numbered(n: u8) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(vec![i; usize::from(i) + 1]))
        .collect()
}

/// Records each datagram it is offered (its first byte) and answers the
/// `nth` (counted from 0) with `verdict`.
struct Offered {
    seen: Mutex<Vec<(Direction, u8, usize)>>,
    nth: usize,
    verdict: Verdict,
}

impl Offered {
    fn answering(nth: usize, verdict: Verdict) -> Arc<Offered> {
        Arc::new(Offered {
            seen: Mutex::new(Vec::new()),
            nth,
            verdict,
        })
    }
}

impl Hook for Offered {
    fn name(&self) -> &str {
        "offered"
    }
    fn on_data(&self, ev: &DataEvent<'_>) -> Verdict {
        let mut seen = self.seen.lock().unwrap();
        seen.push((ev.direction, ev.data[0], ev.data.len()));
        if seen.len() == self.nth.saturating_add(1) {
            self.verdict.clone()
        } else {
            Verdict::Continue
        }
    }
}

/// Relays `visitor` to `service` under a chain of `hook`: why it ended,
/// and the stream it carried.
async fn relay(
    hook: Arc<Offered>,
    visitor: &mut Side,
    service: &mut Side,
) -> (CloseReason, Arc<StreamInfo>) {
    let chain = HookChain::builder().shared(hook).build();
    let info = stream();
    let open = chain.open_stream(info.clone()).expect("stream opens");
    let reason = relay_datagrams(visitor, service, &open, None).await;
    open.close(reason.clone());
    (reason, info)
}

#[tokio::test]
async fn a_waiting_burst_goes_out_with_one_flush_each_datagram_offered_in_order() {
    let datagrams = numbered(100);
    let mut visitor = Side::with(&datagrams, true);
    let mut service = Side::with(&[], false);
    let hook = Offered::answering(usize::MAX, Verdict::Continue);
    let (reason, info) = relay(hook.clone(), &mut visitor, &mut service).await;
    assert_eq!(reason, CloseReason::Finished);

    // 64 at most per burst: two writes for a hundred datagrams, in order.
    let groups = service.flushed_groups();
    assert_eq!(groups.len(), 3, "{groups:?}");
    assert_eq!(groups[0], (0..64).collect::<Vec<u8>>());
    assert_eq!(groups[1], (64..100).collect::<Vec<u8>>());
    assert!(groups[2].is_empty(), "nothing fed after the last flush");
    // Each datagram met the hook on its own, whole, in order, and was metered.
    let seen = hook.seen.lock().unwrap().clone();
    let want: Vec<_> = (0..100u8)
        .map(|i| (Direction::Ingress, i, usize::from(i) + 1))
        .collect();
    assert_eq!(seen, want);
    let sent: u64 = datagrams.iter().map(|d| d.len() as u64).sum();
    assert_eq!(info.meter.totals(info.opened_at).bytes_in, sent);
    assert!(visitor.ops.is_empty(), "nothing went back to the visitor");
}

#[tokio::test(start_paused = true)]
async fn a_throttle_sends_what_is_buffered_before_it_waits() {
    let mut visitor = Side::with(&numbered(5), true);
    let mut service = Side::with(&[], false);
    let hook = Offered::answering(2, Verdict::Throttle(Duration::from_millis(50)));
    let (reason, _) = relay(hook, &mut visitor, &mut service).await;
    assert_eq!(reason, CloseReason::Finished);
    assert_eq!(
        service.flushed_groups(),
        [vec![0, 1], vec![2, 3, 4], vec![]]
    );
}

#[tokio::test]
async fn a_close_verdict_ends_the_burst_where_it_stands() {
    let mut visitor = Side::with(&numbered(10), false);
    let mut service = Side::with(&[], false);
    let why = Reason::forbidden("enough");
    let hook = Offered::answering(3, Verdict::Close(why.clone()));
    let (reason, _) = relay(hook.clone(), &mut visitor, &mut service).await;
    assert_eq!(reason, CloseReason::Hook(why));
    assert_eq!(
        service.flushed_groups(),
        [vec![0, 1, 2]],
        "fed, never flushed"
    );
    assert_eq!(hook.seen.lock().unwrap().len(), 4);
    assert_eq!(visitor.waiting.len(), 6, "the rest stay unread");
}
