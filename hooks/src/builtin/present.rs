//! What the reporting hooks (StatsD, alerts) look at besides their own
//! counts, each kept where the event happens and read on their timer: the
//! clients connected now, and the other hooks of the config (quotas,
//! webhooks) handed over after the chain is built.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::info::ClientInfo;

/// The names of the clients connected now, with their sessions.
#[derive(Debug, Default)]
pub(crate) struct Connected(Mutex<HashMap<Arc<str>, usize>>);

impl Connected {
    /// A session of `client` opened.
    pub(crate) fn opened(&self, client: &ClientInfo) {
        *self.lock().entry(client.name.clone()).or_default() += 1;
    }

    /// A session of `client` closed.
    pub(crate) fn closed(&self, client: &ClientInfo) {
        let mut connected = self.lock();
        if let Some(n) = connected.get_mut(&client.name) {
            *n -= 1;
            if *n == 0 {
                connected.remove(&client.name);
            }
        }
    }

    /// The names connected now.
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Other hooks looked at, held weakly: a reload hands over its own.
#[derive(Debug)]
pub(crate) struct Watched<T>(Mutex<Vec<Weak<T>>>);

impl<T> Default for Watched<T> {
    fn default() -> Self {
        Watched(Mutex::new(Vec::new()))
    }
}

impl<T> Watched<T> {
    /// Looks at `these` from now on, instead of those given before.
    pub(crate) fn set(&self, these: &[Arc<T>]) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            these.iter().map(Arc::downgrade).collect();
    }

    /// Those still alive.
    pub(crate) fn alive(&self) -> Vec<Arc<T>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}
