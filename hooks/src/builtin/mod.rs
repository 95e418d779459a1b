//! Hooks that ship with Reitunnel. Each is usable on its own in any chain.

mod audit;
mod counters;
mod log;
mod meter;
mod metrics;
mod notify;
mod policy;
mod quota;
mod rate_limit;
mod sampler;
mod token_auth;
#[cfg(feature = "tokio")]
mod webhook;

pub use audit::JsonLinesFile;
pub use counters::{Counters, CountersSnapshot};
pub use log::TracingHook;
pub use meter::{BandwidthMeter, MeterReport, MeterSink, TracingSink, Usage};
pub use metrics::MetricsHook;
pub use notify::EventHook;
pub use policy::{ClientRules, Policy, VisitorRules};
pub use quota::Quota;
pub use rate_limit::{ByteRate, EventRate, RateLimit, RateLimitConfig};
pub use sampler::{Sampler, Sampling};
pub use token_auth::{Secret, TokenAuth};
#[cfg(feature = "tokio")]
pub use webhook::{Webhook, WebhookConfig, WebhookHealth, UNHEALTHY_AFTER};
