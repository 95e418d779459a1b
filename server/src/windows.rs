//! The window growth pool, shared fairly by the sessions.
//!
//! A stream's receive window starts at yamux's initial credit and grows
//! while its reader keeps up, so that one stream can fill a long fat path.
//! What windows grow by is memory peers may fill, so it comes out of
//! `max_buffered_bytes`: at most half of it (the other half stays for
//! visitors to open at all). That half used to be reserved per session at
//! login, as much as each wanted while any was left: the first sessions
//! took all of it and later ones got none, so one client with a few
//! sessions could starve every other client's speed across distance.
//!
//! Now yamux asks for each step of growth as it happens, and a session
//! gets it only while its streams hold less than a fair share: the pool
//! divided by the sessions using it now (those that asked to grow and have
//! not given everything back; idle sessions take no share from busy
//! ones). A session that came first may
//! hold more than its share once others arrive; it grows no further, its
//! streams shrink their windows by the excess each time they grant their
//! sender more credit (never revoking credit granted), and what they give
//! back, or free when they close, goes to whoever needs it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// The growth pool and the whole budget it is part of, counted in KiB.
#[derive(Debug)]
pub(crate) struct WindowShares {
    /// Half the budget: what windows may grow by, together.
    growth: Arc<Semaphore>,
    /// The whole budget, which visitors' streams reserve from too.
    total: Arc<Semaphore>,
    /// The growth pool's size.
    capacity_kib: usize,
    /// Sessions using the pool now: counted from their first ask to grow
    /// until they hold nothing again (or end).
    active: AtomicUsize,
}

impl WindowShares {
    pub(crate) fn new(growth: Arc<Semaphore>, total: Arc<Semaphore>) -> Arc<WindowShares> {
        Arc::new(WindowShares {
            capacity_kib: growth.available_permits(),
            growth,
            total,
            active: AtomicUsize::new(0),
        })
    }

    /// A new session's part, counted once it asks to grow.
    pub(crate) fn join(self: &Arc<Self>) -> Arc<SessionWindows> {
        Arc::new(SessionWindows {
            shares: self.clone(),
            held_kib: AtomicUsize::new(0),
            counted: AtomicBool::new(false),
        })
    }

    /// What one session may hold now.
    fn fair_kib(&self) -> usize {
        self.capacity_kib / self.active.load(Ordering::Acquire).max(1)
    }
}

/// One session's part of the pool: what its streams' windows grew by.
/// yamux holds it (through the session's config) until the session's last
/// stream is gone, and gives each stream's growth back when it drops.
#[derive(Debug)]
pub(crate) struct SessionWindows {
    shares: Arc<WindowShares>,
    held_kib: AtomicUsize,
    /// Whether it is among the pool's active sessions.
    counted: AtomicBool,
}

impl SessionWindows {
    /// Counts it among the sessions using the pool (once).
    fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.shares.active.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// No longer counts it.
    fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.shares.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl yamux::WindowPool for SessionWindows {
    fn grow(&self, wanted: usize) -> usize {
        self.count();
        let shares = &self.shares;
        let room = shares
            .fair_kib()
            .saturating_sub(self.held_kib.load(Ordering::Acquire));
        let kib = (wanted / 1024)
            .min(room)
            .min(shares.growth.available_permits())
            .min(shares.total.available_permits());
        let Ok(kib) = u32::try_from(kib) else {
            return 0;
        };
        if kib == 0 {
            return 0;
        }
        let Ok(growth) = shares.growth.try_acquire_many(kib) else {
            return 0;
        };
        let Ok(total) = shares.total.try_acquire_many(kib) else {
            return 0;
        };
        // Given back by `release`, in the same KiB: grants are whole KiB.
        growth.forget();
        total.forget();
        self.held_kib.fetch_add(kib as usize, Ordering::AcqRel);
        kib as usize * 1024
    }

    fn excess(&self) -> usize {
        let held = self.held_kib.load(Ordering::Acquire);
        held.saturating_sub(self.shares.fair_kib()) * 1024
    }

    fn release(&self, bytes: usize) {
        let kib = bytes / 1024;
        if self.held_kib.fetch_sub(kib, Ordering::AcqRel) == kib {
            // It gave everything back: its share goes to the others.
            self.uncount();
        }
        self.shares.growth.add_permits(kib);
        self.shares.total.add_permits(kib);
    }
}

impl Drop for SessionWindows {
    fn drop(&mut self) {
        self.uncount();
        // Streams give their growth back before; anything left goes back now.
        let left = self.held_kib.swap(0, Ordering::AcqRel);
        self.shares.growth.add_permits(left);
        self.shares.total.add_permits(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yamux::WindowPool;

    const MIB: usize = 1 << 20;

    /// A pool of `mib` MiB, in a budget of twice that.
    fn shares(mib: usize) -> Arc<WindowShares> {
        let kib = mib * 1024;
        WindowShares::new(
            Arc::new(Semaphore::new(kib)),
            Arc::new(Semaphore::new(2 * kib)),
        )
    }

    #[test]
    fn a_lone_session_may_take_the_pool_and_a_second_gets_half_as_the_first_gives_back() {
        let shares = shares(32);
        let alice = shares.join();
        // One stream asks for more than there is: it gets the pool.
        assert_eq!(alice.grow(256 * MIB), 32 * MIB);
        assert_eq!(alice.grow(MIB), 0);
        assert_eq!(
            alice.excess(),
            0,
            "alone, alice holds no more than her share"
        );
        // Bob logs in: an idle session takes no share.
        let bob = shares.join();
        assert_eq!(alice.excess(), 0);
        // Bob's stream asks to grow: his fair share is half, but alice
        // holds it all, and her streams are asked to give back the rest.
        assert_eq!(bob.grow(MIB), 0, "nothing is free yet");
        assert_eq!(alice.excess(), 16 * MIB);
        assert_eq!(bob.excess(), 0);
        // Alice's stream closes: her 32 MiB go back; she may take 16 again,
        // and so may bob.
        alice.release(32 * MIB);
        assert_eq!(alice.grow(64 * MIB), 16 * MIB);
        assert_eq!(alice.grow(MIB), 0, "alice is at her share");
        assert_eq!(bob.grow(64 * MIB), 16 * MIB);
        assert_eq!(bob.grow(MIB), 0);
        // Bob leaves: alice may grow to the whole pool again.
        drop(bob);
        assert_eq!(alice.grow(64 * MIB), 16 * MIB);
        assert_eq!(shares.growth.available_permits(), 0);
    }

    #[test]
    fn grants_come_out_of_the_whole_budget_too_and_go_back_with_the_session() {
        let shares = shares(8);
        // Visitors took all but 1 MiB of the whole budget.
        let visitors = shares
            .total
            .clone()
            .try_acquire_many_owned(15 * 1024)
            .unwrap();
        let carol = shares.join();
        assert_eq!(carol.grow(4 * MIB), MIB);
        drop(visitors);
        assert_eq!(carol.grow(4 * MIB + 100), 4 * MIB, "whole KiB only");
        drop(carol);
        assert_eq!(shares.growth.available_permits(), 8 * 1024);
        assert_eq!(shares.total.available_permits(), 16 * 1024);
        assert_eq!(shares.active.load(Ordering::Acquire), 0);
    }
}
