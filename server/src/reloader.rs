//! Settings a running server can change: what a reload brings
//! ([`Reload`]), the settings each login takes and keeps for its session
//! ([`LoginSettings`]), and the handle that swaps them ([`Reloader`]).

use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use reitunnel_hooks::builtin::{Secret, TokenAuth};
use reitunnel_hooks::{Hook, HookChain, Scope};

use crate::in_use::{Hold, HooksInUse};
use crate::{ForwardRule, PortRanges, ServerConfig, ServerError, ServerState};

/// What a reload may change. Everything else in [`ServerConfig`] (the
/// addresses, TLS, limits, leases) needs a restart.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The shared token; `Some` puts a [`TokenAuth`] in front of `chain`, as at bind.
    pub token: Option<Secret>,
    /// The hooks, in order. Hooks that are also in the current chain (the
    /// same instance) keep their state; new ones get `on_server_start` now.
    pub chain: HookChain,
    /// Ports clients may ask for.
    pub allow_ports: PortRanges,
    /// Targets `-L` forwards may reach.
    pub allow_forward: Vec<ForwardRule>,
    /// Where tunnels listen when the client leaves the address unspecified.
    pub default_bind_ip: IpAddr,
}

impl Reload {
    /// The reloadable part of `config`, with `chain`.
    pub fn from_config(config: &ServerConfig, chain: HookChain) -> Reload {
        Reload {
            token: config.token.clone(),
            chain,
            allow_ports: config.allow_ports.clone(),
            allow_forward: config.allow_forward.clone(),
            default_bind_ip: config.default_bind_ip,
        }
    }

    /// The settings to put in force, held in `in_use`, and the hooks of
    /// them nobody held before (to start, once the server runs); the token
    /// check of `current` is kept (the same hook) when the token did not change.
    pub(crate) fn into_settings(
        self,
        current: Option<&LoginSettings>,
        in_use: &Arc<HooksInUse>,
    ) -> (LoginSettings, HookChain) {
        let token_auth = self.token.map(|token| {
            let same = current
                .and_then(|c| c.token_auth.as_ref())
                .filter(|(old, _)| old.expose() == token.expose());
            match same {
                Some((_, hook)) => (token, hook.clone()),
                None => {
                    let hook: Arc<dyn Hook> = Arc::new(TokenAuth::new(token.clone()));
                    (token, hook)
                }
            }
        });
        let chain = match &token_auth {
            Some((_, hook)) => self.chain.prepend_shared(hook.clone()),
            None => self.chain,
        };
        let (hold, fresh) = in_use.hold(&chain);
        let live = LoginSettings {
            chain,
            token_auth,
            allow_ports: self.allow_ports,
            allow_forward: self.allow_forward,
            default_bind_ip: self.default_bind_ip,
            _hold: hold,
        };
        (live, fresh)
    }
}

/// The settings in force for new logins. A session takes the current one
/// at login and keeps it to the end (see the crate docs), and so do its
/// leased tunnels, through the client's hold: when the last of them lets
/// go, hooks that a reload took out meanwhile are stopped.
pub(crate) struct LoginSettings {
    /// The hooks, with the token check in front when a token is set.
    pub(crate) chain: HookChain,
    /// The token and its check, kept across reloads that do not change it.
    token_auth: Option<(Secret, Arc<dyn Hook>)>,
    pub(crate) allow_ports: PortRanges,
    pub(crate) allow_forward: Vec<ForwardRule>,
    pub(crate) default_bind_ip: IpAddr,
    /// Counts the hooks as in use while these settings live.
    _hold: Hold,
}

#[cfg(test)]
impl LoginSettings {
    /// Settings with `chain`, for unit tests.
    pub(crate) fn with_chain(chain: HookChain) -> Arc<LoginSettings> {
        let server = reitunnel_hooks::ServerInfo {
            name: "test".into(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let reload = Reload {
            token: None,
            chain,
            allow_ports: PortRanges::unprivileged(),
            allow_forward: Vec::new(),
            default_bind_ip: server.listen.ip(),
        };
        Arc::new(reload.into_settings(None, &HooksInUse::new(server)).0)
    }
}

/// Applies new settings to a running server; cheap to clone. Get one from
/// [`Server::reloader`](crate::Server::reloader).
#[derive(Clone)]
pub struct Reloader(pub(crate) Arc<ServerState>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("hooks", &self.0.live().chain.names())
            .finish()
    }
}

impl Reloader {
    /// Puts `update` in force for every login from now on; sessions already
    /// logged in keep theirs. Hooks new to the chain get `on_server_start`
    /// first, outside any lock sessions use: if one fails, those that
    /// started are stopped again, nothing changes, and the error is returned
    /// (and reported to the current hooks' `on_error`). Hooks taken out
    /// are stopped once no session uses them (at once if none does); a hook
    /// that a session still uses and this reload brings back was never
    /// stopped, so it is not started again.
    pub fn reload(&self, update: Reload) -> Result<(), ServerError> {
        let shared = &self.0;
        let started = shared
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = shared.live();
        let (next, added) = update.into_settings(Some(&current), &shared.in_use);
        if !*started {
            // Before the start: the start will start whatever is in force.
            *shared.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
            return Ok(());
        }
        if let Err(e) = added.server_start_or_undo(&shared.info) {
            shared.in_use.forget(&added);
            let e = ServerError::HookReload(e);
            shared.report(Scope::Server, &e);
            return Err(e);
        }
        let removed = current.chain.without(&next.chain);
        tracing::info!(hooks = ?next.chain.names(), added = ?added.names(), removed = ?removed.names(), "settings reloaded");
        *shared.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// Tells the current hooks, through `on_error`, of a reload that never
    /// reached [`Reloader::reload`] (a broken config file, say), so an
    /// audit log or webhook records it too.
    pub fn report(&self, err: &(dyn std::error::Error + Send + Sync + 'static)) {
        self.0.live().chain.error(Scope::Server, err);
    }

    /// The hooks in force for new logins (the token check first, if any).
    pub fn chain(&self) -> HookChain {
        self.0.live().chain.clone()
    }
}
