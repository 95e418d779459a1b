//! Chains made from other chains: the server puts its own gates in front
//! of the user's hooks, merges the chains of a reload, and tells which
//! hooks a reload added or retired (by instance, not by name).

use std::sync::Arc;

use super::{HookChain, HookChainBuilder};
use crate::hook::Hook;

impl HookChain {
    /// A new chain with `hook` in front of this chain's hooks (same strategy).
    /// Used by the server to put its token check ahead of user hooks.
    pub fn prepend(&self, hook: impl Hook) -> HookChain {
        self.prepend_shared(Arc::new(hook))
    }

    /// [`HookChain::prepend`] with a shared hook, so chains built from the
    /// same one hold the same instance ([`HookChain::without`] tells them apart by it).
    pub fn prepend_shared(&self, hook: Arc<dyn Hook>) -> HookChain {
        let builder = HookChain::builder()
            .strategy(self.inner.strategy)
            .shared(hook);
        self.with_authorizers(self.with_hooks(builder)).build()
    }

    /// This chain's hooks (and asynchronous gates), then those of `other`
    /// that are not among them (by instance), with this chain's strategy.
    pub fn with(&self, other: &HookChain) -> HookChain {
        let builder = HookChain::builder().strategy(self.inner.strategy);
        let theirs = other.without(self);
        let builder = theirs.with_hooks(self.with_hooks(builder));
        theirs
            .with_authorizers(self.with_authorizers(builder))
            .build()
    }

    /// `builder` with this chain's hooks appended.
    fn with_hooks(&self, mut builder: HookChainBuilder) -> HookChainBuilder {
        for hook in self.inner.hooks.iter() {
            builder = builder.shared(hook.clone());
        }
        builder
    }

    /// `builder` with this chain's asynchronous gates appended.
    fn with_authorizers(&self, mut builder: HookChainBuilder) -> HookChainBuilder {
        for gate in self.inner.authorizers.iter() {
            builder = builder.authorizer(gate.clone());
        }
        builder
    }

    /// The hooks of this chain that are not in `other` (the same instance,
    /// by pointer), in order, with this chain's strategy. A server that
    /// reloads its configuration starts the hooks `new.without(&old)` and,
    /// at exit, also stops those of `old.without(&new)` that it retired.
    pub fn without(&self, other: &HookChain) -> HookChain {
        let mut builder = HookChain::builder().strategy(self.inner.strategy);
        for h in self.inner.hooks.iter() {
            if !other.inner.hooks.iter().any(|o| Arc::ptr_eq(o, h)) {
                builder = builder.shared(h.clone());
            }
        }
        for gate in self.inner.authorizers.iter() {
            if !other.inner.authorizers.iter().any(|o| Arc::ptr_eq(o, gate)) {
                builder = builder.authorizer(gate.clone());
            }
        }
        builder.build()
    }
}
