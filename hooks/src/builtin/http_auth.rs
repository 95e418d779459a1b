//! `http_auth`: an asynchronous gate ([`crate::authorize`]) that asks an
//! HTTP(S) service of the operator's own whether a login, a tunnel or (with
//! `streams`) a visitor may open, the way frp's server plugins do.
//!
//! Each question is a `POST` of one JSON object (`question.rs`):
//!
//! ```json
//! {"ask":"login","client":"alice","source":"198.51.100.7:40112","certificate":null,
//!  "nonce":"<64 hex digits>","proof":"<64 hex digits>"}
//! {"ask":"tunnel","client":"alice","source":"198.51.100.7:40112","kind":"reverse",
//!  "transport":"tcp","bind":"0.0.0.0:8080","target":"127.0.0.1:3000"}
//! {"ask":"stream","client":"alice","source":"198.51.100.7:40112","kind":"reverse",
//!  "transport":"tcp","bind":"0.0.0.0:8080","target":"127.0.0.1:3000","visitor":"203.0.113.9:5555"}
//! ```
//!
//! A login carries the server's nonce and the client's proof,
//! `HMAC-SHA256(token, nonce || name)`, so a service that knows each
//! client's token can check it without the server knowing any.
//!
//! The service answers `200` with `{"allow": true}` or
//! `{"allow": false, "reason": "…"}` (the reason goes to the client), and
//! may add `"ttl_secs": N` to have a tunnel or stream answer kept that long
//! (at most a day)
//! for the same question (a login's nonce is new each time, so logins are
//! always asked). Anything else (no answer within the timeout, a refused
//! connection, another status, a body that is not such an object) is a
//! failure: refused by default, allowed with [`OnFailure::Allow`]. A
//! refused login counts as a failed login (`failed_logins_per_minute`).
//!
//! The service is spared bursts (`pool.rs`, `flight.rs`): connections are
//! kept open between questions and used again, at most
//! [`HttpAuth::with_max_concurrent`] of them (default
//! [`HTTP_AUTH_MAX_CONCURRENT`]) at once, and a question past that waits
//! for one within its timeout; identical questions asked at the same time
//! (the same tunnel, or visitors of one tunnel from one address) share
//! one request.
//!
//! Its URL's path and query may hold a secret: logs and `Debug` show
//! `scheme://host:port` only.
//!
//! To the `metrics` facade, labelled by the service's `host:port`:
//! `reitunnel_http_auth_requests_total{outcome}` (`allow`, `deny`,
//! `cached`, `failed`), the histogram `reitunnel_http_auth_seconds`, and
//! the gauge `reitunnel_http_auth_healthy` (0 after a failure, 1 after an
//! answer).

mod flight;
mod pool;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::webhook::endpoint::{Failure, Redacted, Target};
use crate::authorize::{Ask, AuthFuture, Authorize};
use crate::hook::Hook;
use crate::info::RefuseCode;
use crate::verdict::{Gate, Reason};
use flight::Flights;
use pool::Pool;

/// Answers kept at most; past it the expired ones go, then the oldest.
const CACHE_ENTRIES: usize = 4096;
/// The longest an answer is kept, whatever `ttl_secs` says: a day.
const MAX_TTL_SECS: u64 = 86_400;
/// Connections to the service open at once, unless
/// [`HttpAuth::with_max_concurrent`] says otherwise.
pub const HTTP_AUTH_MAX_CONCURRENT: NonZeroUsize = NonZeroUsize::new(16).unwrap();

/// What a failure to get an answer means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Let it in (fail open).
    Allow,
}

/// Where and how an [`HttpAuth`] asks. Its `Debug` shows the URL as
/// `scheme://host:port` only.
#[derive(Clone)]
pub struct HttpAuthConfig {
    /// The service, `http://` or `https://`. Only ever sent: the path may
    /// hold a secret.
    pub url: String,
    /// The longest one question may take, connection included.
    pub timeout: Duration,
    /// What a failure means.
    pub on_failure: OnFailure,
    /// Ask about every visitor too (each waits for the answer).
    pub streams: bool,
    /// For `https://`: the CAs to trust (`None`: the system's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpAuthConfig {
    /// Asks `url` about logins and tunnels, within 2 s, failing closed.
    pub fn new(url: impl Into<String>) -> Self {
        HttpAuthConfig {
            url: url.into(),
            timeout: Duration::from_secs(2),
            on_failure: OnFailure::Deny,
            streams: false,
            tls: None,
        }
    }
}

impl fmt::Debug for HttpAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAuthConfig")
            .field("url", &Redacted(&self.url))
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .field("streams", &self.streams)
            .field("tls", &self.tls.as_ref().map(|_| "custom CAs"))
            .finish()
    }
}

/// Why a question got no answer. Its text goes to the refused client, so
/// it never names the URL.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error(transparent)]
    Endpoint(#[from] Failure),
    #[error("the answer is not {{\"allow\": true|false, \"reason\": \"…\"}}: {0}")]
    Answer(serde_json::Error),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

/// A question's outcome, as shared by the identical questions of one
/// flight (so the error is behind an `Arc`).
type Answered = Result<Answer, Arc<AskError>>;

/// The service's answer.
#[derive(Debug, Clone, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ttl_secs: u64,
}

/// The asynchronous gate; see the module docs.
pub struct HttpAuth {
    pool: Pool,
    config: HttpAuthConfig,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
    /// Questions with a cache key being asked now.
    flights: Flights<Answered>,
}

impl HttpAuth {
    /// Checks the URL (and its TLS settings). At most
    /// [`HTTP_AUTH_MAX_CONCURRENT`] connections to the service.
    pub fn new(config: HttpAuthConfig) -> io::Result<Self> {
        let target = Target::parse("http_auth", &config.url, config.tls.clone())?;
        Ok(HttpAuth {
            pool: Pool::new(target, HTTP_AUTH_MAX_CONCURRENT),
            config,
            cache: Mutex::default(),
            flights: Flights::default(),
        })
    }

    /// At most `max` connections to the service at once (and as many
    /// questions in progress); more questions wait for one, within their
    /// timeout, then fail as `on_failure` says.
    pub fn with_max_concurrent(self, max: NonZeroUsize) -> Self {
        let pool = Pool::new(self.pool.into_target(), max);
        HttpAuth { pool, ..self }
    }

    /// The request carrying one question.
    fn request(&self, body: &Bytes) -> Result<Request<Full<Bytes>>, Failure> {
        let target = self.pool.target();
        Ok(Request::post(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))?)
    }

    /// One question, one answer (or why not).
    async fn post(&self, body: Bytes) -> Result<Answer, AskError> {
        let (status, answer) = self.pool.send(|| self.request(&body)).await?;
        if status != StatusCode::OK {
            return Err(Failure::Status(status).into());
        }
        serde_json::from_slice(&answer).map_err(AskError::Answer)
    }

    /// Asks, sharing the request with identical questions asked meanwhile
    /// (those with the same cache key; a login, without one, asks alone).
    /// The answer is kept (once) for its `ttl_secs`.
    async fn ask(&self, body: Bytes, key: Option<String>) -> Answered {
        let Some(key) = key else {
            return self.post(body).await.map_err(Arc::new);
        };
        let ask = || async {
            let answered = self.post(body).await;
            if let Ok(answer) = &answered {
                self.keep(key.clone(), answer);
            }
            answered.map_err(Arc::new)
        };
        self.flights.join(&key, ask).await
    }

    fn cached(&self, key: &str) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, answer)| answer.clone())
    }

    fn keep(&self, key: String, answer: &Answer) {
        if answer.ttl_secs == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (until, _)| now < *until);
        }
        if cache.len() >= CACHE_ENTRIES {
            let oldest = cache.iter().min_by_key(|(_, (until, _))| *until);
            if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                cache.remove(&oldest);
            }
        }
        let until = now + Duration::from_secs(answer.ttl_secs.min(MAX_TTL_SECS));
        cache.insert(key, (until, answer.clone()));
    }

    async fn decide(&self, ask: &Ask<'_>) -> Gate {
        let (body, key) = question(ask);
        let endpoint = self.pool.target().authority.clone();
        if let Some(answer) = key.as_deref().and_then(|k| self.cached(k)) {
            metrics::counter!("reitunnel_http_auth_requests_total", "endpoint" => endpoint, "outcome" => "cached").increment(1);
            return gate(ask, &answer);
        }
        let started = Instant::now();
        let timeout = self.config.timeout;
        let answered = match tokio::time::timeout(timeout, self.ask(body, key)).await {
            Ok(answered) => answered,
            Err(_) => Err(Arc::new(AskError::NoAnswer(timeout))),
        };
        metrics::histogram!("reitunnel_http_auth_seconds", "endpoint" => endpoint.clone())
            .record(started.elapsed().as_secs_f64());
        let healthy = f64::from(u8::from(answered.is_ok()));
        metrics::gauge!("reitunnel_http_auth_healthy", "endpoint" => endpoint.clone()).set(healthy);
        match answered {
            Ok(answer) => {
                let outcome = if answer.allow { "allow" } else { "deny" };
                metrics::counter!("reitunnel_http_auth_requests_total", "endpoint" => endpoint, "outcome" => outcome).increment(1);
                gate(ask, &answer)
            }
            Err(why) => {
                metrics::counter!("reitunnel_http_auth_requests_total", "endpoint" => endpoint, "outcome" => "failed").increment(1);
                let url = self.pool.target().shown();
                tracing::warn!(url, ask = ask.kind(), error = %why, "authorization service failed");
                match self.config.on_failure {
                    OnFailure::Allow => Gate::Allow,
                    OnFailure::Deny => Gate::Refuse(Reason::new(
                        RefuseCode::Unavailable,
                        format!("the authorization service failed ({why}), so the {} is refused (on_failure = \"deny\")", ask.kind()),
                    )),
                }
            }
        }
    }
}

impl Authorize for HttpAuth {
    fn name(&self) -> &str {
        "http_auth"
    }

    fn asks_streams(&self) -> bool {
        self.config.streams
    }

    fn authorize<'a>(&'a self, ask: &'a Ask<'a>) -> AuthFuture<'a> {
        Box::pin(self.decide(ask))
    }
}

/// As a hook it only stands in the chain's list (so a reload keeps or
/// replaces it like any other); its work is the [`Authorize`] gate's.
impl Hook for HttpAuth {
    fn name(&self) -> &str {
        "http_auth"
    }

    // A gate only: the chain skips it per chunk.
    fn wants_data(&self) -> bool {
        false
    }
}

/// The answer as a gate's.
fn gate(ask: &Ask<'_>, answer: &Answer) -> Gate {
    if answer.allow {
        return Gate::Allow;
    }
    let reason = answer
        .reason
        .clone()
        .unwrap_or_else(|| "refused by the authorization service".to_owned());
    Gate::Refuse(ask.refusal(reason))
}

/// The request body, and the key its answer may be kept under (none for a
/// login, whose nonce is new each time).
fn question(ask: &Ask<'_>) -> (Bytes, Option<String>) {
    let body = super::question::question(ask);
    let key = match ask {
        Ask::Login { .. } => None,
        // The body is the whole question, so it is its own key.
        Ask::Tunnel(_) => Some(format!("tunnel {body}")),
        // Kept per visitor address, not per connection: its port changes.
        Ask::Stream(stream) => {
            let mut keyed = body.clone();
            if let Some(fields) = keyed.as_object_mut() {
                fields.remove("visitor");
            }
            Some(format!("stream {keyed} {}", stream.peer.ip()))
        }
    };
    (Bytes::from(body.to_string()), key)
}
