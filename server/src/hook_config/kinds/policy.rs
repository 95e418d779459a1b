//! `kind = "policy"`: per-client tokens and limits, and the networks
//! visitors may come from. Replaces the global token.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use reitunnel_hooks::builtin::{ClientRules, Secret, VisitorRules};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::ConfigError;
use crate::hook_config::table::{BuildContext, HookKind, Invalid, Relation};
use crate::proxied::Network;
use crate::PortRanges;
use reitunnel_program::config_file;
use reitunnel_program::expand_env;

/// The `policy` kind.
pub(crate) struct Policy;

/// Its keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `[hooks.clients.NAME]` tables.
    #[serde(default)]
    pub(crate) clients: BTreeMap<String, ClientSpec>,
    /// A TOML file of `[clients.NAME]` tables (same fields), merged with `clients`.
    pub(crate) clients_file: Option<PathBuf>,
    /// Networks visitors may come from (CIDR); empty = anywhere.
    #[serde(default)]
    pub(crate) visitors_allow: Vec<String>,
    /// Networks visitors may not come from (CIDR).
    #[serde(default)]
    pub(crate) visitors_deny: Vec<String>,
}

/// One client of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientSpec {
    /// The client's token; `${VAR}` takes it from the environment. Without
    /// one, the client must log in with a verified client certificate (mTLS).
    pub(crate) token: Option<Secret>,
    /// Ports it may open, e.g. `"20000-20010"`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub(crate) ports: Option<PortRanges>,
    /// Tunnels at once.
    pub(crate) max_tunnels: Option<u32>,
    /// Visitor streams at once.
    pub(crate) max_streams: Option<u32>,
}

/// A `clients_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    /// `[clients.NAME]` tables.
    #[serde(default)]
    clients: BTreeMap<String, ClientSpec>,
}

impl Config {
    /// The visitor networks; `Err` names the key with a bad entry.
    fn visitors(&self) -> Result<VisitorRules, Invalid> {
        Ok(VisitorRules {
            allow: nets(&self.visitors_allow, "visitors_allow")?,
            deny: nets(&self.visitors_deny, "visitors_deny")?,
        })
    }
}

fn nets(list: &[String], key: &'static str) -> Result<Vec<IpNet>, Invalid> {
    list.iter()
        .map(|s| {
            s.parse::<Network>()
                .map(|net| net.0)
                .map_err(|e| Invalid::new(key, format!("policy: {key} entry {e}")))
        })
        .collect()
}

impl HookKind for Policy {
    const NAME: &'static str = "policy";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        config.visitors().map(drop)
    }

    fn relation(_: &Config) -> Relation {
        Relation::AlwaysRebuilt
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let mut all = config.clients.clone();
        if let Some(file) = &config.clients_file {
            for (name, spec) in load_clients(file)? {
                if all.insert(name.clone(), spec).is_some() {
                    return Err(ctx.invalid(format!(
                        "policy: client '{name}' is in both `clients` and {}",
                        file.display()
                    )));
                }
            }
        }
        let mut rules = HashMap::new();
        for (name, c) in all {
            let token = c
                .token
                .as_ref()
                .map(|t| expand_env(t.expose()))
                .transpose()
                .map_err(|var| {
                    ctx.invalid(format!(
                        "policy: client '{name}': token refers to ${{{var}}}, which is not set"
                    ))
                })?;
            let client = ClientRules {
                token: token.map(Secret::new),
                ports: c.ports,
                max_tunnels: c.max_tunnels,
                max_streams: c.max_streams,
            };
            rules.insert(name, client);
        }
        let visitors = config.visitors().map_err(|e| ctx.invalid(e.problem))?;
        Ok(Arc::new(reitunnel_hooks::builtin::Policy::new(
            rules, visitors,
        )))
    }
}

/// Reads a `clients_file`; errors name the file and line.
fn load_clients(path: &Path) -> Result<BTreeMap<String, ClientSpec>, ConfigError> {
    let file: ClientsFile = config_file::load(path)?;
    Ok(file.clients)
}
