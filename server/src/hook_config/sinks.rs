//! The event sinks a config opens (audit files, webhooks): opened once,
//! before the hooks, so every hook that emits events reaches all of them.

use std::sync::Arc;
use std::time::Duration;

use reitunnel_hooks::builtin::{JsonLinesFile, Secret, Webhook, WebhookConfig};

use reitunnel_transport::tls::https_client;

use crate::file_config::{expand_env, HookSpec};

/// Lines the audit writer may queue before it drops (and counts) new ones.
const AUDIT_QUEUE: usize = 65_536;
/// Events a webhook may queue before it drops (and counts) new ones.
const WEBHOOK_QUEUE: usize = 4_096;
/// An event sink of the config (kept beside the spec it was opened for).
#[derive(Clone)]
pub(super) enum Sink {
    Audit(Arc<JsonLinesFile>),
    Webhook(Arc<Webhook>),
}
/// Opens the audit file or starts the webhook of a sink spec.
pub(super) fn open_sink(spec: &HookSpec) -> Result<Sink, String> {
    match spec {
        HookSpec::Audit { path: file, .. } => JsonLinesFile::open(file, AUDIT_QUEUE)
            .map(Sink::Audit)
            .map_err(|e| format!("cannot open audit log {}: {e}", file.display())),
        HookSpec::Webhook {
            url,
            secret,
            events,
            timeout_secs,
            retries,
            ca,
            ..
        } => {
            if *timeout_secs == 0 {
                return Err(format!("webhook {url}: timeout_secs must be at least 1"));
            }
            let secret = expand_env(secret.expose()).map_err(|var| {
                format!("webhook {url}: secret refers to ${{{var}}}, which is not set")
            })?;
            let tls = match ca {
                None => None,
                Some(ca) => Some(https_client(ca).map_err(|e| format!("webhook {url}: {e}"))?),
            };
            let config = WebhookConfig {
                url: url.clone(),
                secret: Secret::new(secret),
                events: events.clone(),
                timeout: Duration::from_secs(*timeout_secs),
                retries: *retries,
                queue: WEBHOOK_QUEUE,
                tls,
            };
            // Inside a runtime the delivery task joins it; otherwise (the
            // server binary builds its chain first) it gets a thread of its own.
            let sink = if tokio::runtime::Handle::try_current().is_ok() {
                Webhook::new(config)
            } else {
                Webhook::new_on_thread(config)
            };
            sink.map(Sink::Webhook).map_err(|e| e.to_string())
        }
        _ => unreachable!("open_sink is only called for audit and webhook specs"),
    }
}
