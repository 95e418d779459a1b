//! Every kind of hook a config file can name, one file each. Adding a kind
//! is a file here with a [`HookKind`](super::table::HookKind) and its line
//! in [`KINDS`].

pub(crate) mod alert;
pub(crate) mod audit;
#[cfg(unix)]
pub(crate) mod command;
pub(crate) mod http_auth;
pub(crate) mod log;
pub(crate) mod meter;
pub(crate) mod metrics;
pub(crate) mod policy;
pub(crate) mod quota;
pub(crate) mod rate_limit;
pub(crate) mod redis;
pub(crate) mod sampled;
pub(crate) mod statsd;
pub(crate) mod webhook;

use super::table::{entry, Entry};

/// The kinds, in the order an unknown kind's error lists them.
pub(crate) const KINDS: &[Entry] = &[
    entry::<log::Log>(),
    entry::<meter::Meter>(),
    entry::<rate_limit::RateLimit>(),
    entry::<quota::Quota>(),
    entry::<sampled::Sampled>(),
    entry::<metrics::Metrics>(),
    entry::<policy::Policy>(),
    entry::<audit::Audit>(),
    entry::<webhook::Webhook>(),
    entry::<redis::Redis>(),
    entry::<statsd::Statsd>(),
    entry::<alert::Alert>(),
    entry::<http_auth::HttpAuth>(),
    #[cfg(unix)]
    entry::<command::Command>(),
];

#[cfg(test)]
mod tests {
    use super::KINDS;

    #[test]
    fn each_kind_has_one_name_and_is_documented() {
        let config = include_str!("../../../../docs/CONFIG.md");
        let hooks = include_str!("../../../../docs/HOOKS.md");
        for (i, kind) in KINDS.iter().enumerate() {
            assert!(
                KINDS[..i].iter().all(|k| k.name != kind.name),
                "{} is registered twice",
                kind.name
            );
            let named = format!("`{}`", kind.name);
            assert!(config.contains(&named), "docs/CONFIG.md lists no {named}");
            assert!(
                hooks.contains(&format!("{named}: ")) || hooks.contains(&format!("| {named}")),
                "docs/HOOKS.md section 11 has no row for {named}"
            );
        }
    }
}
