//! Failures before a login is authenticated, reported without letting their
//! senders flood the hooks.
//!
//! Anyone who can reach the control port can fail a TLS handshake, send a
//! garbled login or time out, as often as they like. Each failure is
//! logged (the log is the operator's, and rotates), but the hooks (audit log, webhooks, metrics) hear only the first
//! of each kind as it happens and then, once per summary interval, one
//! error that counts the rest and quotes the last. So one unauthenticated
//! peer can no longer grow the audit file without limit or fill a webhook's
//! queue until real events drop.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reitunnel_hooks::{HookChain, Scope};

use crate::error::SessionError;
use crate::{log_error, report_to};

/// Counts of each kind of failure since the last summary.
#[derive(Debug)]
pub(crate) struct PreLoginErrors {
    interval: Duration,
    seen: Mutex<BTreeMap<&'static str, Repeats>>,
}

/// Failures of one kind after the first, since the last summary.
#[derive(Debug, Default)]
struct Repeats {
    count: u64,
    last: String,
}

impl PreLoginErrors {
    /// Summaries every `interval` (the server's loop calls [`Self::summarize`]).
    pub(crate) fn new(interval: Duration) -> Self {
        PreLoginErrors {
            interval,
            seen: Mutex::default(),
        }
    }

    /// How often [`Self::summarize`] is due.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Logs `err`. The first of its kind since the last summary goes to
    /// `chain`'s hooks now (in `scope`); later ones are only counted.
    pub(crate) fn report(&self, chain: &HookChain, scope: Scope<'_>, err: &SessionError) {
        let kind = err.kind();
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            match seen.get_mut(kind) {
                Some(repeats) => {
                    repeats.count += 1;
                    repeats.last = err.to_string();
                    false
                }
                None => {
                    seen.insert(kind, Repeats::default());
                    true
                }
            }
        };
        if first {
            report_to(chain, scope, err);
        } else {
            // Logged like any error; only the hooks are spared.
            log_error(scope, err);
        }
    }

    /// Reports one error per kind that repeated since the last summary, and
    /// starts counting afresh.
    pub(crate) fn summarize(&self, chain: &HookChain) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        for (kind, repeats) in seen {
            if repeats.count > 0 {
                let e = SessionError::Repeated {
                    kind,
                    count: repeats.count,
                    last: repeats.last,
                };
                report_to(chain, Scope::Server, &e);
            }
        }
    }
}
