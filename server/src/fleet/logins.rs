//! Failed logins counted fleet-wide: brute force spread over the nodes is
//! counted together. Each node counts its own as before and also adds each
//! failure to `<prefix>failed:<address>:<minute>`; the failure that takes
//! the fleet's count past `failed_logins_per_minute` blocks the address on
//! every node (a `block` command) for the rest of a minute.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::keyed::ip_key;

use super::registry::now_ms;
use super::Fleet;

/// Counts a failure (KEYS[1]) for a minute; the one past the limit
/// (ARGV[1]) publishes a block on the commands channel (KEYS[2]).
const FAILED: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 120) end
if n == tonumber(ARGV[1]) + 1 then
  redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'block', ip = ARGV[2], secs = tonumber(ARGV[3])}))
end
return n
";

impl Fleet {
    /// Adds a failed login from `ip` to the fleet's count of this minute
    /// (`per_minute` of them allowed; 0: not counted).
    pub(crate) fn failed_login(self: &Arc<Self>, ip: IpAddr, per_minute: u32) {
        if per_minute == 0 {
            return;
        }
        let ip = ip_key(ip).to_string();
        let minute = now_ms() / 60_000;
        // The block lasts to the end of the minute counted, at least a second.
        let left = (60 - (now_ms() / 1000) % 60).max(1);
        let fleet = self.clone();
        self.spawn(async move {
            let key = fleet.store.key(&format!("failed:{ip}:{minute}"));
            let mut failed = redis::cmd("EVAL");
            failed
                .arg(FAILED)
                .arg(2)
                .arg(&key)
                .arg(fleet.store.key("commands"));
            failed.arg(per_minute).arg(&ip).arg(left);
            if let Err(e) = fleet.store.call::<i64>(&failed).await {
                tracing::debug!(error = %e, %ip, "failed login counted here only");
            }
        });
    }
}

/// A `block` command's address and time.
pub(super) fn block(ip: &str, secs: u64) -> Option<(IpAddr, Duration)> {
    Some((ip.parse().ok()?, Duration::from_secs(secs)))
}
