//! `kind = "http_auth"`: asks an HTTP service whether each login and
//! tunnel (and, with `streams`, each visitor) may open.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{HttpAuthConfig, OnFailure, HTTP_AUTH_MAX_CONCURRENT};
use reitunnel_hooks::Hook;
use reitunnel_transport::tls::https_client;
use serde::Deserialize;

use crate::config_types::{ConfigError, EndpointUrl};
use crate::hook_config::table::{BuildContext, HookKind};

/// The `http_auth` kind.
pub(crate) struct HttpAuth;

/// Its keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The service, `http://` or `https://host[:port][/path]`.
    pub(crate) url: EndpointUrl,
    /// The longest one question may take, milliseconds.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_ms: u64,
    /// What a failure to answer means.
    #[serde(default)]
    pub(crate) on_failure: WhenUnanswered,
    /// Ask about every visitor too.
    #[serde(default)]
    pub(crate) streams: bool,
    /// For `https://`: trust only the CA certificates in this PEM file.
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// Connections to the service open at once, kept open and reused;
    /// questions past them wait (within `timeout_ms`).
    #[serde(default = "default_max_concurrent")]
    pub(crate) max_concurrent: NonZeroUsize,
}

fn default_max_concurrent() -> NonZeroUsize {
    HTTP_AUTH_MAX_CONCURRENT
}

/// `on_failure`: `"deny"` (default) or `"allow"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WhenUnanswered {
    /// Refuse when the service does not answer.
    #[default]
    Deny,
    /// Let in when the service does not answer.
    Allow,
}

fn default_timeout() -> u64 {
    2000
}

impl HookKind for HttpAuth {
    const NAME: &'static str = "http_auth";
    type Config = Config;

    fn build(config: &Config, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        let url = &config.url;
        let tls = match &config.ca {
            None => None,
            Some(ca) => {
                Some(https_client(ca).map_err(|e| ctx.invalid(format!("http_auth {url}: {e}")))?)
            }
        };
        let settings = HttpAuthConfig {
            url: url.expose().to_owned(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            on_failure: match config.on_failure {
                WhenUnanswered::Deny => OnFailure::Deny,
                WhenUnanswered::Allow => OnFailure::Allow,
            },
            streams: config.streams,
            tls,
        };
        let gate = reitunnel_hooks::builtin::HttpAuth::new(settings)
            .map_err(|e| ctx.invalid(e.to_string()))?
            .with_max_concurrent(config.max_concurrent);
        let gate = Arc::new(gate);
        ctx.background.authorizers.push(gate.clone());
        Ok(gate)
    }
}
