//! The per-stream and per-chunk half of the chain: each hook's state for a
//! new stream, and the dispatch of every data chunk, which allocates
//! nothing and takes no lock.

use std::time::Duration;

use super::{isolated, ErrorStrategy, HookChain};
use crate::hook::StreamState;
use crate::info::{DataEvent, RefuseCode, Scope, StreamInfo};
use crate::verdict::{Reason, Verdict};

impl HookChain {
    /// Each hook's state for a new stream, by hook position. A hook that
    /// panics here gets no state (and the panic is reported).
    /// [`HookChain::open_stream`] does this; call it yourself only together
    /// with the low-level [`HookChain::on_data`].
    pub fn stream_states(&self, stream: &StreamInfo) -> Box<[Option<StreamState>]> {
        self.inner
            .hooks
            .iter()
            .map(|h| {
                isolated(&**h, || h.stream_state(stream)).unwrap_or_else(|e| {
                    self.hook_failed(Scope::Stream(stream), &e);
                    None
                })
            })
            .collect()
    }

    /// The per-chunk dispatch; `states` are the stream's, by hook position
    /// (from [`HookChain::stream_states`]; hooks without an entry get none).
    /// Allocates nothing and takes no lock unless a hook fails. `Close` ends
    /// the stream at once; the longest `Throttle` wins.
    /// Low-level: [`Open::on_data`](crate::Open::on_data) passes the right states for you.
    #[inline]
    pub fn on_data(&self, event: &DataEvent<'_>, states: &[Option<StreamState>]) -> Verdict {
        self.dispatch_data(*event, states)
    }

    /// [`HookChain::on_data`] on an event built by the caller in place: the
    /// relay's path, which copies no event (copying a just-written event
    /// stalls the CPU's store forwarding, which cost more than a hook).
    #[inline]
    pub(crate) fn dispatch_data<'a>(
        &self,
        mut event: DataEvent<'a>,
        states: &'a [Option<StreamState>],
    ) -> Verdict {
        let mut wait = Duration::ZERO;
        for (i, hook) in self.inner.data_hooks.iter() {
            event.state = states.get(*i).and_then(|s| s.as_deref());
            match isolated(&**hook, || hook.on_data(&event)) {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Throttle(d)) => wait = wait.max(d),
                Ok(Verdict::Close(r)) => return Verdict::Close(r),
                Err(err) => {
                    self.hook_failed(Scope::Stream(event.stream), &err);
                    if self.inner.strategy == ErrorStrategy::StopOnError {
                        return Verdict::Close(Reason::new(RefuseCode::Other, format!("{err}")));
                    }
                }
            }
        }
        if wait.is_zero() {
            Verdict::Continue
        } else {
            Verdict::Throttle(wait)
        }
    }
}
