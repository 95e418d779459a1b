//! Hooks that ship with Reitunnel. Each is usable on its own in any chain.

#[cfg(feature = "tokio")]
mod alert;
mod audit;
#[cfg(feature = "tokio")]
mod body_shape;
#[cfg(all(feature = "tokio", unix))]
mod command;
mod counters;
mod event_hook;
#[cfg(feature = "tokio")]
mod http_auth;
mod lanes;
mod log;
mod meter;
mod metrics;
#[cfg(feature = "tokio")]
mod outbox;
mod policy;
#[cfg(feature = "tokio")]
mod present;
#[cfg(feature = "tokio")]
mod question;
mod quota;
mod rate_limit;
#[cfg(feature = "tokio")]
mod redis_bus;
mod sampler;
#[cfg(feature = "tokio")]
mod statsd;
mod token_auth;
#[cfg(feature = "tokio")]
mod webhook;

/// Also at the crate root, where it now lives.
pub use crate::Secret;
#[cfg(feature = "tokio")]
pub use alert::{AlertMetric, AlertRule, Alerts, Notice, Turn};
pub use audit::JsonLinesFile;
#[cfg(feature = "tokio")]
pub use body_shape::BodyShape;
#[cfg(all(feature = "tokio", unix))]
pub use command::{
    CommandAsks, CommandConfig, CommandGate, CommandHealth, CommandSink, COMMAND_MAX_CONCURRENT,
    DROPS_LOGGED_EVERY,
};
pub use counters::{Counters, CountersSnapshot};
pub use event_hook::EventHook;
#[cfg(feature = "tokio")]
pub use http_auth::{HttpAuth, HttpAuthConfig, OnFailure, HTTP_AUTH_MAX_CONCURRENT};
pub use log::TracingHook;
pub use meter::{BandwidthMeter, MeterReport, MeterSink, TracingSink, Usage};
pub use metrics::MetricsHook;
pub use policy::{ClientRules, Policy, VisitorRules};
pub use quota::{Quota, Unshared};
pub use rate_limit::{ByteRate, EventRate, RateLimit, RateLimitConfig};
#[cfg(feature = "tokio")]
pub use redis_bus::{BadRedisUrl, RedisBus, RedisBusConfig, RedisHealth};
pub use sampler::{Sampler, Sampling};
#[cfg(feature = "tokio")]
pub use statsd::{
    Flavor, Statsd, StatsdConfig, StatsdError, StatsdHealth, DEFAULT_MAX_PACKET, MAX_TIMINGS,
};
pub use token_auth::TokenAuth;
#[cfg(feature = "tokio")]
pub use webhook::endpoint::redact as redact_url;
#[cfg(feature = "tokio")]
pub use webhook::{Webhook, WebhookConfig, WebhookHealth, UNHEALTHY_AFTER};
