//! Client names, once fleet-wide. A session's entry `<prefix>client:<name>`
//! holds an [`Entry`] (node, session id, since, address); whose it is is
//! decided by comparing the whole value, in scripts, so two nodes never
//! act on a stale read. A node renews all of its entries and its own
//! `<prefix>node:<node>` in one script call per tick (a third of the
//! entries' lifetime): a node killed outright is forgotten within that
//! lifetime, and after Redis restarts empty each node writes its entries
//! again on its next tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use reitunnel_hooks::{
    ClientId, ClientInfo, CloseReason, Reason, RefuseCode, Transport, TunnelId, TunnelInfo,
};
use serde::{Deserialize, Serialize};

use super::{Fleet, OnDuplicateLogin, StoreFailure};
use crate::Admin;

/// Takes the name: refused (0) while another holds it and duplicates are
/// refused, else set (1), telling the holder's node on the commands
/// channel that it was replaced. Returns the previous holder (or "").
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  if ARGV[3] == 'refuse' then return {0, cur} end
  redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'replace', name = ARGV[4], old = cur, by = ARGV[5]}))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, cur or ''}
";

/// Takes a public port for a tunnel of client ARGV[3]: refused (0) while
/// another client's tunnel holds it; taken over from the same client's
/// earlier tunnel (a lease, on any node), whose node is told to let it go.
const CLAIM_PORT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  if cjson.decode(cur).client ~= ARGV[3] then return {0, cur} end
  redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'release_port', key = KEYS[1], old = cur, by = ARGV[4]}))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'port_opened', key = KEYS[1], entry = ARGV[1]}))
return {1, cur or ''}
";

/// Renews the node's key (KEYS[1]) and each of its entries (KEYS[3..],
/// values ARGV[4..]); writes back one that vanished (Redis restarted
/// empty). Where another entry holds the key now and either was made while
/// its node could not reach the store (`local`), the older claim wins: an
/// older one of this node's takes the key back and tells the other's node
/// on the commands channel (KEYS[2]). Returns the positions (from 1) of
/// this node's entries that lost.
const RENEW: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
local lost = {}
for i = 3, #KEYS do
  local mine = ARGV[i + 1]
  local cur = redis.call('GET', KEYS[i])
  if cur == mine then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  elseif not cur then
    redis.call('SET', KEYS[i], mine, 'PX', ARGV[1])
  else
    local c, m = cjson.decode(cur), cjson.decode(mine)
    if (c['local'] or m['local']) and m.since < c.since then
      redis.call('SET', KEYS[i], mine, 'PX', ARGV[1])
      redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'taken_back', key = KEYS[i], old = cur, by = ARGV[3]}))
    else
      table.insert(lost, i - 2)
    end
  end
end
return lost
";

/// Deletes an entry if it is still this one; a port's is announced on
/// the commands channel (KEYS[2]), so other nodes stop relaying it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == 'port' then
  redis.call('PUBLISH', KEYS[2], cjson.encode({cmd = 'port_closed', key = KEYS[1], entry = ARGV[1]}))
end
return 1
";

/// Entries renewed per script call, so one call never blocks Redis long.
const RENEW_BATCH: usize = 500;

/// What a session's entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) node: String,
    /// The session's id on its node.
    pub(crate) id: u64,
    /// When it logged in, milliseconds since the Unix epoch.
    pub(crate) since: u64,
    pub(crate) peer: String,
}

/// What a node's own entry (`<prefix>node:<node>`) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeEntry {
    /// When the node started, milliseconds since the Unix epoch.
    pub(crate) since: u64,
    /// Where other nodes dial it for node links.
    pub(crate) relay: Option<std::net::SocketAddr>,
    /// The fingerprint of its links' TLS certificate, if they have TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<String>,
}

/// What a claim is of: a client's name or a public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Port,
}

impl Kind {
    /// What the release script is told, so a port's end is announced.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Port => "port",
        }
    }

    /// What `store_failure = "refuse"` refuses of it while the store is away.
    fn refused(self) -> &'static str {
        match self {
            Kind::Client => "logins",
            Kind::Port => "tunnels",
        }
    }
}

/// A port entry's key `…port:<transport>:<port>`: its transport and port.
pub(super) fn port_of(key: &str) -> Option<(&str, u16)> {
    let (rest, port) = key.rsplit_once(':')?;
    let (_, transport) = rest.rsplit_once(':')?;
    Some((transport, port.parse().ok()?))
}

/// ` on node <node>` for the holder's entry `holder` (of either kind), for
/// a refusal's message; empty if it names none.
fn held_on(holder: &str) -> String {
    #[derive(Deserialize)]
    struct Holder {
        node: String,
    }
    serde_json::from_str::<Holder>(holder)
        .map(|h| format!(" on node {}", h.node))
        .unwrap_or_default()
}

/// Why a claim was not taken.
pub(crate) enum NotTaken {
    /// Another holds it (what the claimant is told).
    Held(Reason),
    /// The store is away and `store_failure = "refuse"`.
    Store(Reason),
}

impl NotTaken {
    pub(crate) fn into_reason(self) -> Reason {
        match self {
            NotTaken::Held(reason) | NotTaken::Store(reason) => reason,
        }
    }
}

/// What a public port's entry (`<prefix>port:<tcp|udp>:<port>`) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortEntry {
    pub(crate) node: String,
    /// The client's name: its later tunnels may take the port over.
    pub(crate) client: String,
    /// The tunnel's id on its node.
    pub(crate) tunnel: u64,
    pub(crate) since: u64,
}

/// The entries this node holds: key → value as written.
#[derive(Default)]
pub(super) struct Registry {
    held: Mutex<HashMap<String, String>>,
}

impl Registry {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets `key` if it still holds `value`; true if it did.
    fn forget(&self, key: &str, value: &str) -> bool {
        let mut held = self.held();
        let ours = held.get(key).is_some_and(|v| v == value);
        if ours {
            held.remove(key);
        }
        ours
    }
}

/// A session's hold on its name; let go (in the store too) when dropped.
pub(crate) struct Claim {
    fleet: Arc<Fleet>,
    kind: Kind,
    key: String,
    value: String,
}

impl Claim {
    /// Whether the entry is still this one's: a tunnel whose port another
    /// node took over keeps no lease on it.
    pub(crate) fn is_held(&self) -> bool {
        self.fleet
            .registry
            .held()
            .get(&self.key)
            .is_some_and(|v| *v == self.value)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.fleet.registry.forget(&self.key, &self.value) {
            return; // replaced meanwhile: the entry is another session's
        }
        let fleet = self.fleet.clone();
        let (key, value, kind) = (self.key.clone(), self.value.clone(), self.kind.as_str());
        self.fleet.spawn(async move {
            let mut release = redis::cmd("EVAL");
            release
                .arg(RELEASE)
                .arg(2)
                .arg(&key)
                .arg(fleet.store.key("commands"));
            release.arg(&value).arg(kind);
            if let Err(e) = fleet.store.call::<i64>(&release).await {
                tracing::debug!(error = %e, %key, "entry left to expire");
            }
        });
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Fleet {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.config.entry_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes `client`'s name fleet-wide, or says why not. While the store
    /// is away the login goes on (`store_failure = "local"`) with the
    /// entry written on the next renewal once it is back, or is refused.
    pub(crate) async fn claim(self: &Arc<Self>, client: &ClientInfo) -> Result<Claim, Reason> {
        let key = self.store.key(&format!("client:{}", client.name));
        let entry = Entry {
            node: self.config.node.clone(),
            id: client.id.0,
            since: now_ms(),
            peer: client.peer.to_string(),
        };
        let value = serde_json::to_string(&entry).unwrap_or_default();
        let mode = match self.config.on_duplicate_login {
            OnDuplicateLogin::Replace => "replace",
            OnDuplicateLogin::Refuse => "refuse",
        };
        let mut claim = redis::cmd("EVAL");
        claim
            .arg(CLAIM)
            .arg(2)
            .arg(&key)
            .arg(self.store.key("commands"));
        claim.arg(&value).arg(self.ttl_ms()).arg(mode);
        claim.arg(&*client.name).arg(&self.config.node);
        self.take(Kind::Client, key, value, &claim, |holder| {
            duplicate(&client.name, holder)
        })
        .await
        .map_err(NotTaken::into_reason)
    }

    /// Takes public port `port` (`transport`) fleet-wide for `tunnel`, or
    /// says why not: another client's tunnel holds it, or the store is
    /// away and `store_failure = "refuse"`.
    pub(crate) async fn claim_port(
        self: &Arc<Self>,
        transport: Transport,
        port: u16,
        tunnel: &TunnelInfo,
    ) -> Result<Claim, NotTaken> {
        let key = self.store.key(&format!("port:{transport}:{port}"));
        let entry = PortEntry {
            node: self.config.node.clone(),
            client: tunnel.client.name.to_string(),
            tunnel: tunnel.id.0,
            since: now_ms(),
        };
        let value = serde_json::to_string(&entry).unwrap_or_default();
        let mut claim = redis::cmd("EVAL");
        claim
            .arg(CLAIM_PORT)
            .arg(2)
            .arg(&key)
            .arg(self.store.key("commands"));
        claim
            .arg(&value)
            .arg(self.ttl_ms())
            .arg(&*tunnel.client.name);
        claim.arg(&self.config.node);
        self.take(Kind::Port, key, value, &claim, |holder| {
            Reason::new(
                RefuseCode::Unavailable,
                format!(
                    "port {port} ({transport}) is in use by another client's tunnel{}",
                    held_on(holder)
                ),
            )
        })
        .await
    }

    /// Runs a claim script (`{taken, holder}`) of `kind`: the claim, the
    /// refusal `held_by` makes of the holder's entry, or what
    /// `store_failure` says while the store is away.
    async fn take(
        self: &Arc<Self>,
        kind: Kind,
        key: String,
        value: String,
        script: &redis::Cmd,
        held_by: impl FnOnce(&str) -> Reason,
    ) -> Result<Claim, NotTaken> {
        let mut value = value;
        match self.store.call::<(i64, String)>(script).await {
            Ok((0, holder)) => return Err(NotTaken::Held(held_by(&holder))),
            Ok(_) => {}
            Err(e) => match self.config.store_failure {
                StoreFailure::Local => {
                    tracing::warn!(%key, error = %e, "decided by this node alone (store_failure = \"local\")");
                    value = made_locally(&value);
                }
                StoreFailure::Refuse => {
                    let why = format!(
                        "{e}: {} are refused until it answers (store_failure = \"refuse\")",
                        kind.refused()
                    );
                    return Err(NotTaken::Store(Reason::new(RefuseCode::Unavailable, why)));
                }
            },
        }
        self.registry.held().insert(key.clone(), value.clone());
        Ok(Claim {
            fleet: self.clone(),
            kind,
            key,
            value,
        })
    }

    /// One renewal of this node's key and entries; closes the sessions
    /// whose names another session took meanwhile (while the store was
    /// away, or by a login it could not tell this node of).
    pub(super) async fn renew(&self, admin: &Admin) {
        let held: Vec<(String, String)> = self
            .registry
            .held()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let node_key = self.store.key(&format!("node:{}", self.config.node));
        let node_value = serde_json::to_string(&NodeEntry {
            since: self.since,
            relay: self.advertised,
            tls: self.fingerprint.map(|f| f.to_string()),
        })
        .unwrap_or_default();
        // The node's own key is renewed even when it holds no entry.
        let batches: Vec<&[(String, String)]> = match held.is_empty() {
            true => vec![&[]],
            false => held.chunks(RENEW_BATCH).collect(),
        };
        for batch in batches {
            let mut renew = redis::cmd("EVAL");
            renew.arg(RENEW).arg(batch.len() + 2).arg(&node_key);
            renew.arg(self.store.key("commands"));
            for (key, _) in batch {
                renew.arg(key);
            }
            renew
                .arg(self.ttl_ms())
                .arg(&node_value)
                .arg(&self.config.node);
            for (_, value) in batch {
                renew.arg(value);
            }
            let lost = match self.store.call::<Vec<usize>>(&renew).await {
                Ok(lost) => lost,
                Err(_) => return, // logged once by the store; the next tick tries again
            };
            for (key, value) in lost.iter().filter_map(|&i| batch.get(i.checked_sub(1)?)) {
                let why = "another node took it while this node could not reach the fleet's store";
                self.lost(admin, key, value, why);
            }
        }
    }

    /// Another holds `key` now, whose entry here was `value`: the session
    /// or tunnel it named on this node is closed, replaced (`why`), and a
    /// port keeps no lease.
    pub(super) fn lost(&self, admin: &Admin, key: &str, value: &str, why: &str) {
        self.registry.forget(key, value);
        let replaced = || CloseReason::Replaced(why.to_owned());
        if let Ok(entry) = serde_json::from_str::<Entry>(value) {
            if entry.node == self.config.node {
                admin.close_session(ClientId(entry.id), replaced());
            }
        } else if let Ok(entry) = serde_json::from_str::<PortEntry>(value) {
            if entry.node == self.config.node {
                admin.close_port(TunnelId(entry.tunnel), replaced());
            }
        }
    }

    /// A `replace` command: the entry `old` was taken over by a login on `by`.
    pub(super) fn replaced(&self, admin: &Admin, name: &str, old: &str, by: &str) {
        let key = self.store.key(&format!("client:{name}"));
        let why = format!("client '{name}' logged in again, on node {by}");
        self.lost(admin, &key, old, &why);
    }
}

/// `value` (an entry) marked as made while the store was away: when the
/// store is back, such a claim and one it meets there go to the older.
fn made_locally(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(mut entry)) => {
            entry.insert("local".to_owned(), true.into());
            serde_json::Value::Object(entry).to_string()
        }
        _ => value.to_owned(),
    }
}

/// The refusal of a login whose name `holder` (an entry) has.
fn duplicate(name: &str, holder: &str) -> Reason {
    Reason::new(
        RefuseCode::Unavailable,
        format!("client '{name}' is logged in already{}; this login is admitted once that session ends (on_duplicate_login = \"refuse\")", held_on(holder)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_key_gives_its_transport_and_port_whatever_the_prefix() {
        assert_eq!(port_of("reitunnel:port:tcp:8080"), Some(("tcp", 8080)));
        assert_eq!(port_of("a:b:port:udp:53"), Some(("udp", 53)));
        assert_eq!(port_of("reitunnel:port:tcp:http"), None);
    }

    #[test]
    fn a_refusal_names_the_holders_node_of_either_kind_of_entry() {
        assert_eq!(
            held_on(r#"{"node":"a","id":1,"since":2,"peer":"x"}"#),
            " on node a"
        );
        assert_eq!(
            held_on(r#"{"node":"b","client":"c","tunnel":3,"since":4}"#),
            " on node b"
        );
        assert_eq!(held_on("garbled"), "");
    }
}
