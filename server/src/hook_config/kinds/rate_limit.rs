//! `kind = "rate_limit"`: byte rates per client and per tunnel, and
//! connection rates (streams, visitors, logins).

use std::num::NonZeroU32;
use std::sync::Arc;

use reitunnel_hooks::builtin::{ByteRate, EventRate, RateLimitConfig};
use reitunnel_hooks::Hook;
use serde::Deserialize;

use crate::config_types::{ByteSize, ConfigError};
use crate::hook_config::table::{BuildContext, HookKind, Invalid};
use reitunnel_program::config_file;

/// The `rate_limit` kind.
pub(crate) struct RateLimit;

/// Its keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Per client session, each direction, e.g. `"10MiB"`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub(crate) per_client_bytes_per_sec: Option<ByteSize>,
    /// Per tunnel, each direction.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub(crate) per_tunnel_bytes_per_sec: Option<ByteSize>,
    /// Burst above the byte rates (default: a tenth of a second, at least 64 KiB).
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub(crate) burst: Option<ByteSize>,
    /// New visitor streams per client per second.
    pub(crate) streams_per_client_per_sec: Option<u32>,
    /// New visitor connections per source IP per second.
    pub(crate) visitors_per_ip_per_sec: Option<u32>,
    /// Client logins per source IP per second.
    pub(crate) logins_per_ip_per_sec: Option<u32>,
}

impl Config {
    /// The limiter's settings; `Err` names the key out of range.
    fn limits(&self) -> Result<RateLimitConfig, Invalid> {
        // The burst applies to the byte rates only, and is checked with them.
        let rate = |key: &'static str, r: Option<ByteSize>| -> Result<Option<ByteRate>, Invalid> {
            let Some(r) = r else { return Ok(None) };
            let per_sec = positive_u32(r.0).ok_or_else(|| {
                Invalid::new(
                    key,
                    format!("rate_limit: byte rate {} must be 1..=4294967295", r.0),
                )
            })?;
            let mut rate = ByteRate::per_sec(per_sec);
            if let Some(b) = self.burst {
                rate.burst = positive_u32(b.0).ok_or_else(|| {
                    Invalid::new(
                        "burst",
                        format!("rate_limit: burst {} must be 1..=4294967295", b.0),
                    )
                })?;
            }
            Ok(Some(rate))
        };
        let events = |key: &'static str, n: Option<u32>| -> Result<Option<EventRate>, Invalid> {
            let Some(n) = n else { return Ok(None) };
            let per_sec = NonZeroU32::new(n).ok_or_else(|| {
                Invalid::new(key, "rate_limit: connection rates must be at least 1")
            })?;
            Ok(Some(EventRate {
                per_sec,
                burst: per_sec,
            }))
        };
        Ok(RateLimitConfig {
            per_client: rate("per_client_bytes_per_sec", self.per_client_bytes_per_sec)?,
            per_tunnel: rate("per_tunnel_bytes_per_sec", self.per_tunnel_bytes_per_sec)?,
            streams_per_client: events(
                "streams_per_client_per_sec",
                self.streams_per_client_per_sec,
            )?,
            visitors_per_ip: events("visitors_per_ip_per_sec", self.visitors_per_ip_per_sec)?,
            logins_per_ip: events("logins_per_ip_per_sec", self.logins_per_ip_per_sec)?,
        })
    }
}

fn positive_u32(n: u64) -> Option<NonZeroU32> {
    u32::try_from(n).ok().and_then(NonZeroU32::new)
}

impl HookKind for RateLimit {
    const NAME: &'static str = "rate_limit";
    type Config = Config;

    fn check(config: &Config) -> Result<(), Invalid> {
        config.limits().map(drop)
    }

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let limits = config.limits().expect("checked when the table was read");
        let limit = Arc::new(reitunnel_hooks::builtin::RateLimit::new(limits));
        ctx.background.rate_limits.push(limit.clone());
        Ok(limit)
    }
}
