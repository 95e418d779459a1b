//! SIGHUP: the settings read again and put in force for new logins.

use anyhow::Context;

use super::chain::ChainParts;
use super::settings::{check_admin_token, Settings};
use super::Args;
use crate::{Reload, Reloader};

/// SIGHUP: reads the config again and puts the new token, hooks and
/// allow-lists in force for new logins; sessions already logged in keep
/// theirs. On any error nothing changes, and the error has reached the
/// hooks' `on_error`. `running` is the settings the process started with, for
/// the settings only a restart applies. Returns the new settings, whose
/// admin token the caller puts in force on the admin endpoint before it
/// calls [`announce`]: whoever reads the log line may rely on all of it.
pub(super) fn reload(
    args: &Args,
    running: &Settings,
    parts: &mut ChainParts,
    reloader: &Reloader,
) -> anyhow::Result<Settings> {
    let prepared = Settings::load(args).and_then(|settings| {
        settings
            .check_auth(&running.config.tls)
            .context("with the TLS settings in force (TLS changes need a restart)")?;
        if let Some(addr) = running.admin_listen {
            check_admin_token(addr, &settings.admin_token).context(
                "with the admin endpoint in force (admin_listen changes need a restart)",
            )?;
        }
        let set = parts
            .set
            .rebuild(&settings.hooks, &running.config.name, &settings.path)?;
        Ok((settings, set))
    });
    let (settings, set) = prepared.inspect_err(|e| reloader.report(e.as_ref()))?;
    let chain = parts.chain(&set, &settings);
    reloader.reload(Reload::from_config(&settings.config, chain))?;
    parts.set = set;
    Ok(settings)
}

/// Logs a reload once every part of it is in force, and each setting that
/// changed but waits for a restart.
pub(super) fn announce(reloaded: &Settings, running: &Settings, reloader: &Reloader) {
    tracing::info!(config = %reloaded.path.display(), hooks = ?reloader.chain().names(), "configuration reloaded: new logins use it, connected clients keep theirs");
    for name in reloaded.restart_only_changes(running) {
        tracing::warn!(config = %reloaded.path.display(), "{name} changed: it takes effect only after a restart");
    }
}
