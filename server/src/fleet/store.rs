//! The fleet's Redis: one reconnecting connection for commands and
//! scripts, whether it answers (logged once per change, and exported as
//! `reitunnel_store_up`), and keys under the fleet's prefix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, RetryMethod};
use reitunnel_hooks::builtin::redact_url;

/// Keys read per `SCAN` call.
const SCAN_COUNT: usize = 1000;

/// Reconnects stop backing off beyond this, so a returning Redis is
/// noticed within about this long.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why the store could not answer. Its text shows the URL redacted.
#[derive(Debug, thiserror::Error)]
#[error("the fleet's store {shown} {problem}")]
pub struct StoreError {
    shown: String,
    problem: String,
}

/// The connection and what the fleet knows of its health.
pub(crate) struct Store {
    /// `scheme://host:port`, for logs and errors.
    pub(crate) shown: String,
    pub(crate) client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    /// Whether the last call was answered; starts true so that the first
    /// failure is logged.
    up: AtomicBool,
}

impl Store {
    /// Checks `url` and prepares the connection; nothing is sent yet, so a
    /// node starts while Redis is away.
    pub(crate) fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let bad = |problem: String| StoreError {
            shown: shown.clone(),
            problem,
        };
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(bad("is not a redis:// or rediss:// URL".to_owned()));
        }
        // Only the kind of `redis`' own complaint: its detail may quote the password.
        let client = redis::Client::open(url)
            .map_err(|e| bad(format!("is not a usable Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| bad(format!("cannot be used ({:?})", e.kind())))?;
        metrics::gauge!("reitunnel_store_up").set(1.0);
        Ok(Store {
            shown,
            client,
            conn,
            prefix: prefix.to_owned(),
            up: AtomicBool::new(true),
        })
    }

    /// `<prefix><name>`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `cmd` (a command or an `EVAL`), noting whether Redis answered.
    pub(crate) async fn call<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.noted(cmd.query_async(&mut conn).await)
    }

    /// `answer`, noting whether Redis answered.
    fn noted<T>(&self, answer: redis::RedisResult<T>) -> Result<T, StoreError> {
        answer
            .inspect(|_| self.answered(true))
            .map_err(|e| self.failed(&e))
    }

    /// Every entry whose key matches `<prefix><pattern>`, with its key
    /// (prefix included) and its value parsed; unparsable ones skipped.
    pub(crate) async fn scan<T: serde::de::DeserializeOwned>(
        &self,
        pattern: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let pattern = self.key(pattern);
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) = self.call(&scan).await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = self.call(redis::cmd("MGET").arg(&keys)).await?;
                let parsed = values
                    .into_iter()
                    .map(|v| v.and_then(|v| serde_json::from_str(&v).ok()));
                found.extend(
                    keys.into_iter()
                        .zip(parsed)
                        .filter_map(|(k, v)| Some((k, v?))),
                );
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Runs `pipe`, returning its answers (those not ignored).
    pub(crate) async fn pipeline_query<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.noted(pipe.query_async(&mut conn).await)
    }

    /// Runs `pipe`, its answers ignored, noting whether Redis answered.
    pub(crate) async fn pipeline(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.noted(pipe.exec_async(&mut conn).await)
    }

    /// Notes `e` (a failure to reach Redis turns the health to down) and
    /// says what it was, without the URL's secrets.
    pub(crate) fn failed(&self, e: &RedisError) -> StoreError {
        let away = is_away(e);
        if away {
            self.answered(false);
        }
        StoreError {
            shown: self.shown.clone(),
            problem: match away {
                true => format!("cannot be reached ({})", kind_name(e)),
                false => format!("answered with an error: {e}"),
            },
        }
    }

    /// Records a call's outcome; a change is logged once and exported.
    pub(crate) fn answered(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        metrics::gauge!("reitunnel_store_up").set(if up { 1.0 } else { 0.0 });
        match up {
            true => tracing::info!(store = %self.shown, "the fleet's store answers again"),
            false => {
                tracing::warn!(store = %self.shown, "the fleet's store cannot be reached; running on what this node knows")
            }
        }
    }
}

/// A connection that failed or timed out, rather than an answer.
fn is_away(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}

/// What went wrong reaching Redis, in a word or two.
fn kind_name(e: &RedisError) -> String {
    match e.is_timeout() {
        true => "timed out".to_owned(),
        false => format!("{:?}", e.kind()),
    }
}
