//! What nodes tell each other, over one pub/sub channel
//! (`<prefix>commands`), and the tasks that keep a node in the fleet: the
//! listener that obeys those commands and the renewal of its entries.
//!
//! Bans are also kept in the hash `<prefix>bans` (name → end, milliseconds
//! since the Unix epoch), read whenever the listener (re)subscribes: a node
//! that started, or lost Redis, while a ban was made learns of it then.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::registry::{now_ms, port_of, PortEntry};
use super::{Fleet, CALL_TIMEOUT};
use crate::Admin;

/// Listener reconnects back off up to this.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(1);

/// A message on the commands channel, as JSON: `{"cmd": "kick", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Command {
    /// A login on node `by` took `name` from the session entry `old`
    /// (published by the claim script itself).
    Replace {
        name: String,
        old: String,
        by: String,
    },
    /// A tunnel of the same client on node `by` took over the port whose
    /// entry `key` was `old` (published by the claim script itself).
    ReleasePort {
        key: String,
        old: String,
        by: String,
    },
    /// Node `by`'s older claim took `key` back from the entry `old`, both
    /// made while the store was away.
    TakenBack {
        key: String,
        old: String,
        by: String,
    },
    /// A tunnel took the port whose entry `key` is now `entry`.
    PortOpened { key: String, entry: String },
    /// The tunnel whose entry `key` was `entry` let the port go.
    PortClosed { key: String, entry: String },
    /// The fleet's failed logins from `ip` passed the limit: refuse it for `secs`.
    Block { ip: String, secs: u64 },
    /// An operator on node `from` kicked `name` (and banned it for `ban_ms`).
    Kick {
        name: String,
        ban_ms: Option<u64>,
        by: String,
        from: String,
    },
}

impl Fleet {
    /// Starts the listener and the renewal; both stop at [`Fleet::finish`].
    pub(crate) fn run(self: &Arc<Self>, admin: Admin) {
        let listener = self
            .link_listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            tracing::info!(advertised = ?self.advertised, "taking links from other nodes");
            self.tasks
                .spawn(self.clone().take_links(listener, admin.clone()));
        }
        self.tasks.spawn(self.clone().listen(admin.clone()));
        self.tasks.spawn(self.clone().add_quota_bytes());
        self.tasks.spawn(self.clone().keep(admin));
    }

    /// Tells every node that `by` kicked `name` here (banned for `ban`),
    /// keeping the ban in the store.
    pub(crate) fn kicked(self: &Arc<Self>, name: &str, ban: Option<Duration>, by: &str) {
        let ban_ms = ban.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX));
        let command = Command::Kick {
            name: name.to_owned(),
            ban_ms,
            by: by.to_owned(),
            from: self.config.node.clone(),
        };
        let mut pipe = redis::pipe();
        if let Some(ms) = ban_ms {
            pipe.hset(self.store.key("bans"), name, now_ms().saturating_add(ms))
                .ignore();
        }
        let message = serde_json::to_string(&command).unwrap_or_default();
        pipe.publish(self.store.key("commands"), message).ignore();
        let fleet = self.clone();
        self.spawn(async move {
            if let Err(e) = fleet.store.pipeline(&pipe).await {
                tracing::error!(error = %e, "the kick did not reach the other nodes");
            }
        });
    }

    /// Renews this node's entries every third of their lifetime.
    async fn keep(self: Arc<Self>, admin: Admin) {
        let mut tick = tokio::time::interval(self.config.entry_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {
                    self.renew(&admin).await;
                    self.sync_ports(&admin).await;
                }
            }
        }
    }

    /// Subscribes to the commands channel and obeys it; subscribes again
    /// whenever the connection is lost, reading the bans made meanwhile.
    async fn listen(self: Arc<Self>, admin: Admin) {
        let channel = self.store.key("commands");
        let mut delay = Duration::from_millis(50);
        loop {
            let subscribed = async {
                let mut pubsub = self.store.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let subscribed = tokio::select! {
                _ = self.stop.cancelled() => return,
                s = tokio::time::timeout(CALL_TIMEOUT, subscribed) => s,
            };
            match subscribed {
                Ok(Ok(pubsub)) => {
                    self.store.answered(true);
                    delay = Duration::from_millis(50);
                    self.load_bans(&admin).await;
                    self.sync_ports(&admin).await;
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => self.obey(&admin, message.get_payload_bytes()).await,
                                None => break,
                            },
                        }
                    }
                    tracing::debug!(channel, "commands channel lost; subscribing again");
                }
                Ok(Err(e)) => {
                    self.store.failed(&e);
                }
                Err(_) => self.store.answered(false),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RESUBSCRIBE_MAX);
        }
    }

    /// Does what a command says, where it concerns this node.
    async fn obey(self: &Arc<Self>, admin: &Admin, payload: &[u8]) {
        let command = match serde_json::from_slice::<Command>(payload) {
            Ok(command) => command,
            Err(e) => {
                let shown = String::from_utf8_lossy(payload);
                tracing::warn!(error = %e, message = %shown, "ignoring a message on the commands channel that is no command");
                return;
            }
        };
        match command {
            Command::Replace { name, old, by } => self.replaced(admin, &name, &old, &by),
            Command::ReleasePort { key, old, by } => {
                let why = format!("a new tunnel of the same client took the port, on node {by}");
                self.lost(admin, &key, &old, &why);
            }
            Command::TakenBack { key, old, by } => {
                let why = format!("an older claim on node {by} took it back once the fleet's store answered again");
                self.lost(admin, &key, &old, &why);
            }
            Command::Block { ip, secs } => {
                if let Some((ip, wait)) = super::logins::block(&ip, secs) {
                    tracing::warn!(%ip, ?wait, "too many failed logins across the fleet; refusing this address for a while");
                    admin.0.admission.failed_logins.block(ip, wait);
                }
            }
            Command::PortOpened { key, entry } => {
                if let Some((port, entry)) = tcp_port(&key, &entry) {
                    self.relay_port(admin, port, &entry.node);
                }
            }
            Command::PortClosed { key, entry } => {
                if let Some((port, entry)) = tcp_port(&key, &entry) {
                    self.unrelay_port(port, Some(&entry.node)).await;
                }
            }
            Command::Kick { from, .. } if from == self.config.node => {}
            Command::Kick {
                name,
                ban_ms,
                by,
                from,
            } => {
                let by = format!("{by} on node {from}");
                admin.kick_here(&name, ban_ms.map(Duration::from_millis), &by);
            }
        }
    }

    /// Puts the bans kept in the store in force here; drops those over.
    async fn load_bans(&self, admin: &Admin) {
        let key = self.store.key("bans");
        let bans: HashMap<String, u64> =
            match self.store.call(redis::cmd("HGETALL").arg(&key)).await {
                Ok(bans) => bans,
                Err(_) => return,
            };
        let now = now_ms();
        let mut over = redis::cmd("HDEL");
        over.arg(&key);
        let mut any_over = false;
        for (name, until) in bans {
            match until.checked_sub(now) {
                Some(left) if left > 0 => admin.ban_here(&name, Duration::from_millis(left)),
                _ => {
                    over.arg(name);
                    any_over = true;
                }
            }
        }
        if any_over {
            let _ = self.store.call::<i64>(&over).await;
        }
    }
}

/// A TCP port entry's port and what it says (UDP ports are not relayed).
fn tcp_port(key: &str, entry: &str) -> Option<(u16, PortEntry)> {
    let (transport, port) = port_of(key)?;
    let entry = serde_json::from_str(entry).ok()?;
    (transport == "tcp").then_some((port, entry))
}
