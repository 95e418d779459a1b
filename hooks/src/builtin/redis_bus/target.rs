//! The Redis server a bus publishes to, checked before anything starts:
//! a URL that cannot work, or a bus with nowhere to put events, is a
//! config error at load time, not a task that fails forever. The URL may
//! hold a password, so no error shows more of it than `scheme://host:port`.

use std::io;

use super::RedisBusConfig;
use crate::builtin::redact_url;

/// Why a Redis bus cannot be started. Its text shows the URL redacted.
#[derive(Debug, thiserror::Error)]
#[error("redis {shown}: {problem}")]
pub struct BadRedisUrl {
    /// The URL, as [`redact_url`] shows it.
    shown: String,
    problem: Problem,
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("the URL must start with redis:// or rediss://")]
    Scheme,
    /// `redis`' own parser refused it; its kind only (its detail might
    /// quote the URL, password and all).
    #[error("not a usable Redis URL ({0:?})")]
    Unusable(redis::ErrorKind),
    #[error("neither a stream nor a channel prefix: nowhere to send events")]
    Nowhere,
    #[error("the stream name is empty")]
    EmptyStream,
}

impl From<BadRedisUrl> for io::Error {
    fn from(e: BadRedisUrl) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// A checked Redis server and the client that reaches it.
pub(super) struct Target {
    /// `scheme://host:port`: how errors, logs, health and metrics show it.
    pub(super) shown: String,
    pub(super) client: redis::Client,
}

impl Target {
    pub(super) fn parse(config: &RedisBusConfig) -> Result<Target, BadRedisUrl> {
        let shown = redact_url(&config.url);
        let bad = |problem| BadRedisUrl {
            shown: shown.clone(),
            problem,
        };
        if !config.url.starts_with("redis://") && !config.url.starts_with("rediss://") {
            return Err(bad(Problem::Scheme));
        }
        if config.stream.is_none() && config.channel_prefix.is_none() {
            return Err(bad(Problem::Nowhere));
        }
        if config.stream.as_deref() == Some("") {
            return Err(bad(Problem::EmptyStream));
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| bad(Problem::Unusable(e.kind())))?;
        Ok(Target { shown, client })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(url: &str) -> RedisBusConfig {
        RedisBusConfig {
            url: url.into(),
            stream: Some("s".into()),
            maxlen: 10,
            channel_prefix: None,
            events: Vec::new(),
            timeout: Duration::from_secs(1),
            retries: 0,
            queue: 4,
        }
    }

    #[test]
    fn shows_host_and_port_only() {
        let target = Target::parse(&config("redis://:hunter2@127.0.0.1/3")).unwrap();
        assert_eq!(target.shown, "redis://127.0.0.1:6379");
        let tls = Target::parse(&config("rediss://u:pw@cache.example:6380")).unwrap();
        assert_eq!(tls.shown, "rediss://cache.example:6380");
    }

    #[test]
    fn refuses_what_cannot_work_without_showing_the_password() {
        let cases = [
            (config("http://:hunter2@h:1"), "redis:// or rediss://"),
            (config("unix:///tmp/redis.sock"), "redis:// or rediss://"),
            (
                config("redis://:hunter2@h:99999999"),
                "not a usable Redis URL",
            ),
            (
                RedisBusConfig {
                    stream: None,
                    ..config("redis://:hunter2@h")
                },
                "nowhere to send events",
            ),
            (
                RedisBusConfig {
                    stream: Some(String::new()),
                    ..config("redis://:hunter2@h")
                },
                "stream name is empty",
            ),
        ];
        for (config, expected) in cases {
            let e = Target::parse(&config).err().expect("refused").to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
