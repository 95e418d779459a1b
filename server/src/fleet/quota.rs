//! Quotas counted fleet-wide. Each node keeps counting a client's bytes in
//! its own `quota` hook (the data path never waits on Redis) and adds them
//! to `<prefix>quota:<period secs>:<period>:<client>` with `INCRBY` every
//! [`FLUSH_EVERY`], or at once when a client has [`FLUSH_BYTES`] not yet
//! added; the answer, the fleet's total, tells the hook what the rest of
//! the fleet used. A client moving between nodes is cut at the shared
//! total, overshooting it by at most [`FLUSH_BYTES`] per node that carried
//! its bytes in the period. While Redis is away the bytes wait in the
//! hooks and are added once it is back: none is lost, and a Redis that
//! came back empty gets each node's whole count again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::builtin::Quota;
use tokio::sync::Notify;

use super::Fleet;

/// How often a node adds its quota bytes to the fleet's totals.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A client's bytes not yet in the fleet's total that make a node add them
/// at once: the most a node can overshoot a shared quota by.
pub const FLUSH_BYTES: u64 = 4 << 20;

/// The quota hooks in force, shared with the fleet.
#[derive(Default)]
pub(super) struct Quotas {
    hooks: Mutex<Vec<Arc<Quota>>>,
    due: Arc<Notify>,
}

impl Fleet {
    /// Counts `quotas` (the quota hooks in force: at start and after each
    /// reload) fleet-wide. Hooks a reload retired stay counted: sessions
    /// from before it still use them.
    pub(crate) fn share_quotas(&self, quotas: &[Arc<Quota>]) {
        let mut hooks = self
            .quotas
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for quota in quotas {
            if hooks.iter().any(|q| Arc::ptr_eq(q, quota)) {
                continue;
            }
            let due = self.quotas.due.clone();
            quota.share(FLUSH_BYTES, move || due.notify_one());
            hooks.push(quota.clone());
        }
    }

    /// Adds the quota hooks' bytes to the fleet's totals every
    /// [`FLUSH_EVERY`], or when one asks, until the fleet stops.
    pub(super) async fn add_quota_bytes(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = self.quotas.due.notified() => {}
            }
            self.flush_quotas().await;
        }
        // The last bytes, at shutdown.
        self.flush_quotas().await;
    }

    /// One round: every hook's unshared bytes in one pipeline each.
    async fn flush_quotas(&self) {
        let hooks = self
            .quotas
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for quota in hooks {
            let unshared = quota.unshared();
            if unshared.is_empty() {
                continue;
            }
            let secs = quota.period_secs();
            // Kept a period past its end, for late adders and operators.
            let keep_ms = i64::try_from(secs.saturating_mul(2000)).unwrap_or(i64::MAX);
            let mut pipe = redis::pipe();
            for u in &unshared {
                let key = self
                    .store
                    .key(&format!("quota:{secs}:{}:{}", u.period, u.client));
                pipe.incr(&key, u.bytes).pexpire(&key, keep_ms).ignore();
            }
            let Ok(totals) = self.store.pipeline_query::<Vec<u64>>(&pipe).await else {
                continue; // the bytes stay unshared; the next round tries again
            };
            for (u, total) in unshared.iter().zip(totals) {
                quota.settle(&u.client, u.period, u.bytes, total);
            }
        }
    }
}
