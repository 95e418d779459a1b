//! One hook from one `[[hooks]]` table, checked as it is built.

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU32, NonZeroU64};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::proxied::Network;
use reitunnel_hooks::builtin::{
    BandwidthMeter, ByteRate, ClientRules, EventHook, EventRate, HttpAuth, HttpAuthConfig,
    MeterSink, MetricsHook, OnFailure, Policy, Quota, RateLimit, RateLimitConfig, Sampler,
    Sampling, Secret, TracingHook, TracingSink, VisitorRules,
};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::Hook;
use reitunnel_transport::tls::https_client;

use super::sinks::Sink;
use super::Background;
use crate::file_config::{
    expand_env, ByteSize, ClientSpec, ClientsFile, ConfigError, HookSpec, MeterSinkKind,
    OnFailureSpec,
};

/// Distinct client labels of the meter's metrics sink.
const METERED_CLIENT_LABELS: usize = 100;

/// Builds hooks from specs, with the sinks opened beforehand.
pub(super) struct Builder<'a> {
    pub(super) server: &'a str,
    pub(super) path: &'a Path,
    /// Every event sink of the config, for hooks that emit events.
    pub(super) bus: EventBus,
    pub(super) bg: Background,
}

impl Builder<'_> {
    /// The hook of an audit or webhook table: its events, to its own sink.
    pub(super) fn sink_hook(&self, spec: &HookSpec, sink: Sink) -> Arc<dyn Hook> {
        let streams = match spec {
            HookSpec::Audit { streams, .. } | HookSpec::Webhook { streams, .. } => *streams,
            _ => false,
        };
        let bus = EventBus::new().for_server(self.server);
        match sink {
            Sink::Audit(file) => Arc::new(EventHook::new("audit", bus.with(file), streams)),
            Sink::Webhook(webhook) => {
                Arc::new(EventHook::new("webhook", bus.with(webhook), streams))
            }
        }
    }

    pub(super) fn build(&mut self, spec: &HookSpec) -> Result<Arc<dyn Hook>, ConfigError> {
        let path = self.path.to_owned();
        let invalid = |problem: String| ConfigError::Invalid {
            path: path.clone(),
            problem,
        };
        Ok(match spec {
            HookSpec::Log { sample_every } => Arc::new(TracingHook::new(*sample_every)),
            HookSpec::Metrics { max_client_labels } => {
                Arc::new(MetricsHook::new(*max_client_labels))
            }
            HookSpec::Meter {
                interval_secs,
                sinks,
            } => {
                let sinks = sinks
                    .iter()
                    .map(|k| -> Arc<dyn MeterSink> {
                        match k {
                            MeterSinkKind::Log => Arc::new(TracingSink),
                            MeterSinkKind::Events => Arc::new(self.bus.clone()),
                            MeterSinkKind::Metrics => {
                                Arc::new(MetricsHook::new(METERED_CLIENT_LABELS))
                            }
                        }
                    })
                    .collect();
                let meter = BandwidthMeter::new(sinks);
                self.bg
                    .meters
                    .push((meter.clone(), Duration::from_secs((*interval_secs).max(1))));
                meter
            }
            HookSpec::RateLimit {
                per_client_bytes_per_sec,
                per_tunnel_bytes_per_sec,
                burst,
                streams_per_client_per_sec,
                visitors_per_ip_per_sec,
                logins_per_ip_per_sec,
            } => {
                let rate = |r: &Option<ByteSize>| -> Result<Option<ByteRate>, ConfigError> {
                    let Some(r) = r else { return Ok(None) };
                    let per_sec = positive_u32(r.0).ok_or_else(|| {
                        invalid(format!(
                            "rate_limit: byte rate {} must be 1..=4294967295",
                            r.0
                        ))
                    })?;
                    let mut rate = ByteRate::per_sec(per_sec);
                    if let Some(b) = burst {
                        rate.burst = positive_u32(b.0).ok_or_else(|| {
                            invalid(format!("rate_limit: burst {} must be 1..=4294967295", b.0))
                        })?;
                    }
                    Ok(Some(rate))
                };
                let events = |n: &Option<u32>| -> Result<Option<EventRate>, ConfigError> {
                    let Some(n) = n else { return Ok(None) };
                    let per_sec = NonZeroU32::new(*n).ok_or_else(|| {
                        invalid("rate_limit: connection rates must be at least 1".to_owned())
                    })?;
                    Ok(Some(EventRate {
                        per_sec,
                        burst: per_sec,
                    }))
                };
                let limit = Arc::new(RateLimit::new(RateLimitConfig {
                    per_client: rate(per_client_bytes_per_sec)?,
                    per_tunnel: rate(per_tunnel_bytes_per_sec)?,
                    streams_per_client: events(streams_per_client_per_sec)?,
                    visitors_per_ip: events(visitors_per_ip_per_sec)?,
                    logins_per_ip: events(logins_per_ip_per_sec)?,
                }));
                self.bg.rate_limits.push(limit.clone());
                limit
            }
            HookSpec::Quota { bytes, period_secs } => {
                if *period_secs == 0 {
                    return Err(invalid("quota: period_secs must be at least 1".to_owned()));
                }
                let quota = Arc::new(Quota::new(
                    bytes.0,
                    Duration::from_secs(*period_secs),
                    self.bus.clone(),
                ));
                self.bg.quotas.push(quota.clone());
                quota
            }
            HookSpec::HttpAuth {
                url,
                timeout_ms,
                on_failure,
                streams,
                ca,
            } => {
                let tls = match ca {
                    None => None,
                    Some(ca) => Some(
                        https_client(ca).map_err(|e| invalid(format!("http_auth {url}: {e}")))?,
                    ),
                };
                let config = HttpAuthConfig {
                    url: url.clone(),
                    timeout: Duration::from_millis((*timeout_ms).max(1)),
                    on_failure: match on_failure {
                        OnFailureSpec::Deny => OnFailure::Deny,
                        OnFailureSpec::Allow => OnFailure::Allow,
                    },
                    streams: *streams,
                    tls,
                };
                let gate = Arc::new(HttpAuth::new(config).map_err(|e| invalid(e.to_string()))?);
                self.bg.authorizers.push(gate.clone());
                gate
            }
            HookSpec::Policy {
                clients,
                clients_file,
                visitors_allow,
                visitors_deny,
            } => {
                let mut all = clients.clone();
                if let Some(file) = clients_file {
                    for (name, spec) in ClientsFile::load(file)?.clients {
                        if all.insert(name.clone(), spec).is_some() {
                            return Err(invalid(format!(
                                "policy: client '{name}' is in both `clients` and {}",
                                file.display()
                            )));
                        }
                    }
                }
                Arc::new(policy(&all, visitors_allow, visitors_deny).map_err(invalid)?)
            }
            HookSpec::Audit { .. } | HookSpec::Webhook { .. } => {
                unreachable!("audit and webhook tables are built by sink_hook, with their sink")
            }
            HookSpec::Sampled {
                one_in,
                every_ms,
                hook,
            } => {
                let sampling = match (one_in, every_ms) {
                    (Some(n), None) => {
                        Sampling::OneIn(NonZeroU64::new(*n).ok_or_else(|| {
                            invalid("sampled: one_in must be at least 1".to_owned())
                        })?)
                    }
                    (None, Some(ms)) => Sampling::Every(Duration::from_millis(*ms)),
                    _ => {
                        return Err(invalid(
                            "sampled: give exactly one of one_in and every_ms".to_owned(),
                        ))
                    }
                };
                if !matches!(
                    **hook,
                    HookSpec::Log { .. } | HookSpec::Meter { .. } | HookSpec::Metrics { .. }
                ) {
                    return Err(invalid(
                        "sampled: wrap a hook that observes data (log, meter, metrics); limits and quotas must see every chunk".to_owned(),
                    ));
                }
                let inner = self.build(hook)?;
                Arc::new(Sampler::new(inner, sampling))
            }
        })
    }
}

/// Builds the policy hook, expanding `${VAR}` tokens and parsing CIDRs.
fn policy(
    clients: &BTreeMap<String, ClientSpec>,
    allow: &[String],
    deny: &[String],
) -> Result<Policy, String> {
    let nets = |list: &[String], what: &str| -> Result<Vec<IpNet>, String> {
        list.iter()
            .map(|s| {
                s.parse::<Network>()
                    .map(|net| net.0)
                    .map_err(|e| format!("policy: {what} entry {e}"))
            })
            .collect()
    };
    let mut rules = HashMap::new();
    for (name, c) in clients {
        let token = c
            .token
            .as_ref()
            .map(|t| expand_env(t.expose()))
            .transpose()
            .map_err(|var| {
                format!("policy: client '{name}': token refers to ${{{var}}}, which is not set")
            })?;
        rules.insert(
            name.clone(),
            ClientRules {
                token: token.map(Secret::new),
                ports: c.ports.clone(),
                max_tunnels: c.max_tunnels,
                max_streams: c.max_streams,
            },
        );
    }
    Ok(Policy::new(
        rules,
        VisitorRules {
            allow: nets(allow, "visitors_allow")?,
            deny: nets(deny, "visitors_deny")?,
        },
    ))
}

fn positive_u32(n: u64) -> Option<NonZeroU32> {
    u32::try_from(n).ok().and_then(NonZeroU32::new)
}
