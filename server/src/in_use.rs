//! Which hook instances the settings of live sessions hold.
//!
//! A reload takes hooks out of the chain for new logins, but a session that
//! logged in before keeps its settings to the end (leased tunnels
//! included). A hook is stopped (`on_server_stop`) and let go as soon as no
//! settings hold it any more, not at exit: with its last reference goes
//! whatever it runs in the background (an audit writer thread and its file,
//! a webhook's delivery task, which first delivers what is queued, a
//! meter's reporter). A server reloaded daily for months so holds only
//! what its sessions use.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use reitunnel_hooks::{Hook, HookChain, ServerInfo};

/// Counts, per hook instance, the [`Hold`]s on it.
pub(crate) struct HooksInUse {
    server: ServerInfo,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once the server started its hooks: from then on a hook nobody
    /// holds is stopped. Before, it was never started.
    running: bool,
    /// Set once the server stopped every hook at exit: nothing is stopped twice.
    stopped: bool,
    held: Vec<Held>,
}

struct Held {
    hook: Arc<dyn Hook>,
    holds: usize,
}

impl State {
    fn find(&mut self, hook: &Arc<dyn Hook>) -> Option<usize> {
        self.held.iter().position(|h| Arc::ptr_eq(&h.hook, hook))
    }
}

/// The hooks of one chain counted as in use until this is dropped; the
/// ones nobody else holds then are stopped.
pub(crate) struct Hold {
    registry: Arc<HooksInUse>,
    chain: HookChain,
}

impl HooksInUse {
    pub(crate) fn new(server: ServerInfo) -> Arc<HooksInUse> {
        Arc::new(HooksInUse {
            server,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `chain`'s hooks as in use; also returns those that nobody
    /// held (in order, with `chain`'s strategy): the ones to start, if
    /// the server runs. Counting and finding them is one step, so a hook
    /// a session is letting go of at this moment is either kept or
    /// reported new, never lost between the two.
    pub(crate) fn hold(self: &Arc<Self>, chain: &HookChain) -> (Hold, HookChain) {
        let mut state = self.lock();
        let mut fresh = HookChain::builder().strategy(chain.strategy());
        for hook in chain.hooks() {
            match state.find(hook) {
                Some(i) => state.held[i].holds += 1,
                None => {
                    state.held.push(Held {
                        hook: hook.clone(),
                        holds: 1,
                    });
                    fresh = fresh.shared(hook.clone());
                }
            }
        }
        let hold = Hold {
            registry: self.clone(),
            chain: chain.clone(),
        };
        (hold, fresh.build())
    }

    /// From now on a hook nobody holds is stopped.
    pub(crate) fn started(&self) {
        self.lock().running = true;
    }

    /// At exit: stops every hook still held, `first`'s in its order, then
    /// the rest; none is stopped again afterwards.
    pub(crate) fn stop_all(&self, first: &HookChain) {
        let rest = {
            let mut state = self.lock();
            if state.stopped || !state.running {
                return;
            }
            state.stopped = true;
            let mut rest = HookChain::builder();
            for held in state.held.drain(..) {
                rest = rest.shared(held.hook);
            }
            rest.build().without(first)
        };
        for chain in [first, &rest] {
            if let Err(e) = chain.server_stop(&self.server) {
                tracing::warn!(error = %e, "on_server_stop");
            }
        }
    }

    /// Takes `fresh` (from [`HooksInUse::hold`]) off the count without
    /// stopping it: its start failed and was undone.
    pub(crate) fn forget(&self, fresh: &HookChain) {
        let mut state = self.lock();
        for hook in fresh.hooks() {
            if let Some(i) = state.find(hook) {
                state.held.swap_remove(i);
            }
        }
    }

    /// One hold on `chain` ended: stops the hooks nobody holds any more.
    fn release(&self, chain: &HookChain) {
        let unused = {
            let mut state = self.lock();
            let mut unused = HookChain::builder();
            for hook in chain.hooks() {
                let Some(i) = state.find(hook) else { continue };
                state.held[i].holds -= 1;
                if state.held[i].holds == 0 {
                    let held = state.held.swap_remove(i);
                    if state.running && !state.stopped {
                        unused = unused.shared(held.hook);
                    }
                }
            }
            unused.build()
        };
        if unused.hooks().is_empty() {
            return;
        }
        // Outside the lock: a hook's stop may take a moment (a flush).
        tracing::info!(hooks = ?unused.names(), "hooks a reload took out are no longer in use: stopped");
        if let Err(e) = unused.server_stop(&self.server) {
            tracing::warn!(error = %e, "on_server_stop");
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.registry.release(&self.chain);
    }
}
