//! `[cluster]` and its flags: whether this server is a node of a fleet,
//! and which.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reitunnel_program::expand_env;

use super::Args;
use crate::file_config::ClusterSpec;
use crate::hook_config::kinds::redis::{self, Redis};
use crate::hook_config::HookTable;
use crate::{FleetConfig, LinkConfig};

/// The fleet this server is a node of, if `--cluster-redis` or
/// `[cluster] redis` names its store; `path` is the config file, for messages.
pub(super) fn fleet(
    args: &Args,
    spec: Option<ClusterSpec>,
    path: &Path,
) -> anyhow::Result<Option<FleetConfig>> {
    let spec = spec.unwrap_or_default();
    let redis = match (&args.cluster_redis, &spec.redis) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => expand_env(url.expose()).map_err(|var| {
            anyhow::anyhow!(
                "config {}: [cluster] redis refers to ${{{var}}}, which is not set",
                path.display()
            )
        })?,
        (None, None) if spec != ClusterSpec::default() || args.node.is_some() => {
            anyhow::bail!("a fleet needs its store: set [cluster] redis (or --cluster-redis)")
        }
        (None, None) => return Ok(None),
    };
    let node = match args.node.clone().or(spec.node) {
        Some(node) => node,
        None => host_name().context("naming this node: set [cluster] node (or --node)")?,
    };
    check_node(&node)?;
    let mut config = FleetConfig::new(redis, node);
    if let Some(prefix) = spec.key_prefix {
        config.key_prefix = prefix;
    }
    if let Some(failure) = spec.store_failure {
        config.store_failure = failure;
    }
    if let Some(duplicate) = spec.on_duplicate_login {
        config.on_duplicate_login = duplicate;
    }
    if let Some(secs) = spec.entry_ttl_secs {
        anyhow::ensure!(secs >= 1, "[cluster] entry_ttl_secs must be at least 1");
        config.entry_ttl = Duration::from_secs(secs);
    }
    let secret = args
        .cluster_secret
        .clone()
        .or(spec.cluster_secret)
        .filter(|s| !s.expose().is_empty());
    config.links = match (args.relay_listen.or(spec.relay_listen), secret) {
        (None, _) => None,
        (Some(_), None) => anyhow::bail!(
            "relay_listen takes links from other nodes, which must prove cluster_secret: set [cluster] cluster_secret (or REITUNNEL_CLUSTER_SECRET)"
        ),
        (Some(listen), Some(secret)) => {
            let advertise = args.relay_advertise.or(spec.relay_advertise);
            if listen.ip().is_unspecified() && advertise.is_none() {
                anyhow::bail!("relay_listen {listen} is no address other nodes can dial: set relay_advertise");
            }
            Some(LinkConfig {
                listen,
                advertise,
                secret,
            })
        }
    };
    Ok(Some(config))
}

/// The `redis` hook a fleet adds (unless `[cluster] events = false` or the
/// file has one): every event of every node on one stream,
/// `<key_prefix>events`, in order per node.
pub(super) fn event_hook(
    fleet: &FleetConfig,
    spec_events: Option<bool>,
    hooks: &[HookTable],
) -> anyhow::Result<Option<HookTable>> {
    if !spec_events.unwrap_or(true) || hooks.iter().any(HookTable::is::<Redis>) {
        return Ok(None);
    }
    let config = redis::Config::to(fleet.redis.clone(), format!("{}events", fleet.key_prefix));
    HookTable::new::<Redis>(config)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("[cluster] events: {}", e.problem))
}

/// The kernel's host name.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name")?;
    Ok(name.trim().to_owned())
}

/// A node's name goes into keys and messages: a plain word.
fn check_node(node: &str) -> anyhow::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    anyhow::ensure!(
        !node.is_empty() && node.len() <= 64 && node.chars().all(plain),
        "node name {node:?}: use 1 to 64 letters, digits and . _ -"
    );
    Ok(())
}
