//! Turns the config file's `[[hooks]]` into a hook chain, in order. Event
//! sinks (audit logs, webhooks) are opened first so every hook that emits events
//! (quota, meter) reaches all of them, wherever they stand in the list.

use std::num::{NonZeroU32, NonZeroU64};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use reitunnel_hooks::builtin::{
    BandwidthMeter, ByteRate, ClientRules, EventHook, EventRate, JsonLinesFile, MeterSink,
    MetricsHook, Policy, Quota, RateLimit, RateLimitConfig, Sampler, Sampling, Secret, TracingHook,
    TracingSink, VisitorRules, Webhook, WebhookConfig,
};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{Hook, HookChainBuilder};

use crate::file_config::{
    expand_env, ByteSize, ClientSpec, ClientsFile, ConfigError, HookSpec, MeterSinkKind,
};

/// Distinct client labels of the meter's metrics sink.
const METERED_CLIENT_LABELS: usize = 100;

/// Lines the audit writer may queue before it drops (and counts) new ones.
const AUDIT_QUEUE: usize = 65_536;
/// Events a webhook may queue before it drops (and counts) new ones.
const WEBHOOK_QUEUE: usize = 4_096;

/// What the configured hooks need besides their place in the chain.
#[derive(Debug, Default)]
pub struct Background {
    /// Meters and how often each reports; the server spawns their reporters.
    pub meters: Vec<(Arc<BandwidthMeter>, Duration)>,
    /// Audit files, to report dropped lines.
    pub audit: Vec<Arc<JsonLinesFile>>,
    /// Webhooks, to report their health.
    pub webhooks: Vec<Arc<Webhook>>,
}

/// An event sink of the config (kept beside the spec it was opened for).
#[derive(Clone)]
enum Sink {
    Audit(Arc<JsonLinesFile>),
    Webhook(Arc<Webhook>),
}

/// The hooks built from a config's `[[hooks]]`, each kept with the spec it
/// came from, so that a reload ([`HookSet::rebuild`]) keeps every hook whose
/// table did not change, and with it the hook's state: quota usage, rate
/// buckets, meter counters, the open audit file, a webhook's queue.
pub struct HookSet {
    hooks: Vec<(HookSpec, BuiltHook)>,
    sinks: Vec<(HookSpec, Sink)>,
    background: Background,
}

/// One hook of a [`HookSet`] and the meters inside it (a meter, or a sampled one).
#[derive(Clone)]
struct BuiltHook {
    hook: Arc<dyn Hook>,
    meters: Vec<(Arc<BandwidthMeter>, Duration)>,
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.hooks.iter().map(|(_, b)| b.hook.name()).collect();
        f.debug_struct("HookSet").field("hooks", &names).finish()
    }
}

impl HookSet {
    /// Builds the hooks of `specs`, in order; events carry `server` as the
    /// server's name, errors name `path`.
    pub fn build(specs: &[HookSpec], server: &str, path: &Path) -> Result<HookSet, ConfigError> {
        HookSet::assemble(specs, server, path, None)
    }

    /// Builds the hooks of `specs` for a reload: a hook whose table equals
    /// one of this set's is that same hook (each old hook is used once),
    /// unless it emits events (quota, meter with `"events"`) and the event
    /// sinks (audit logs, webhooks) changed, since it holds the old ones,
    /// or it is a `policy`, which is always read again (with its
    /// `clients_file`). An audit log or webhook whose table is unchanged
    /// keeps its file or queue.
    pub fn rebuild(
        &self,
        specs: &[HookSpec],
        server: &str,
        path: &Path,
    ) -> Result<HookSet, ConfigError> {
        HookSet::assemble(specs, server, path, Some(self))
    }

    /// The hooks, appended to `chain` in order.
    pub fn append_to(&self, mut chain: HookChainBuilder) -> HookChainBuilder {
        for (_, built) in &self.hooks {
            chain = chain.shared(built.hook.clone());
        }
        chain
    }

    /// What the hooks need run or reported besides the chain.
    pub fn background(&self) -> &Background {
        &self.background
    }

    fn assemble(
        specs: &[HookSpec],
        server: &str,
        path: &Path,
        previous: Option<&HookSet>,
    ) -> Result<HookSet, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let mut bg = Background::default();
        let mut bus = EventBus::new().for_server(server);
        let mut sinks = Vec::new();
        let mut spare_sinks: Vec<(HookSpec, Sink)> =
            previous.map(|p| p.sinks.clone()).unwrap_or_default();
        // Each sink spec's sink, by the spec's position: the hook built for
        // that table writes to exactly the sink opened for it.
        let mut sink_of: Vec<Option<Sink>> = Vec::with_capacity(specs.len());
        for spec in specs {
            if !is_sink(spec) {
                sink_of.push(None);
                continue;
            }
            let sink = match take_equal(&mut spare_sinks, spec) {
                Some(sink) => sink,
                None => open_sink(spec).map_err(invalid)?,
            };
            match &sink {
                Sink::Audit(file) => {
                    bus = bus.with(file.clone());
                    bg.audit.push(file.clone());
                }
                Sink::Webhook(hook) => {
                    bus = bus.with(hook.clone());
                    bg.webhooks.push(hook.clone());
                }
            }
            sinks.push((spec.clone(), sink.clone()));
            sink_of.push(Some(sink));
        }
        let sinks_unchanged = previous.is_some_and(|p| {
            p.sinks
                .iter()
                .map(|(s, _)| s)
                .eq(sinks.iter().map(|(s, _)| s))
        });
        let mut spare_hooks: Vec<(HookSpec, BuiltHook)> =
            previous.map(|p| p.hooks.clone()).unwrap_or_default();
        let mut builder = Builder {
            server,
            path,
            bus,
            bg,
        };
        let mut hooks = Vec::with_capacity(specs.len());
        for (spec, sink) in specs.iter().zip(sink_of) {
            // A policy is always built anew: its `clients_file` may have
            // changed under the same table. It holds no state a session
            // needs: each session keeps the chain it logged in with.
            let rebuilt =
                matches!(spec, HookSpec::Policy { .. }) || (emits_events(spec) && !sinks_unchanged);
            let kept = if rebuilt {
                None
            } else {
                take_equal(&mut spare_hooks, spec)
            };
            let built = match kept {
                Some(built) => {
                    builder.bg.meters.extend(built.meters.iter().cloned());
                    built
                }
                None => {
                    let first_meter = builder.bg.meters.len();
                    let hook = match sink {
                        Some(sink) => builder.sink_hook(spec, sink),
                        None => builder.build(spec)?,
                    };
                    BuiltHook {
                        hook,
                        meters: builder.bg.meters[first_meter..].to_vec(),
                    }
                }
            };
            hooks.push((spec.clone(), built));
        }
        Ok(HookSet {
            hooks,
            sinks,
            background: builder.bg,
        })
    }
}

/// Removes and returns the first entry of `spare` whose spec equals `spec`.
fn take_equal<T>(spare: &mut Vec<(HookSpec, T)>, spec: &HookSpec) -> Option<T> {
    let at = spare.iter().position(|(s, _)| s == spec)?;
    Some(spare.remove(at).1)
}

/// Audit logs and webhooks: hooks that are also event sinks for the others.
fn is_sink(spec: &HookSpec) -> bool {
    matches!(spec, HookSpec::Audit { .. } | HookSpec::Webhook { .. })
}

/// Hooks that send events to every sink of the config.
fn emits_events(spec: &HookSpec) -> bool {
    match spec {
        HookSpec::Quota { .. } => true,
        HookSpec::Meter { sinks, .. } => sinks.contains(&MeterSinkKind::Events),
        HookSpec::Sampled { hook, .. } => emits_events(hook),
        _ => false,
    }
}

/// Opens the audit file or starts the webhook of a sink spec.
fn open_sink(spec: &HookSpec) -> Result<Sink, String> {
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
            ..
        } => {
            if *timeout_secs == 0 {
                return Err(format!("webhook {url}: timeout_secs must be at least 1"));
            }
            let secret = expand_env(secret.expose()).map_err(|var| {
                format!("webhook {url}: secret refers to ${{{var}}}, which is not set")
            })?;
            let config = WebhookConfig {
                url: url.clone(),
                secret: Secret::new(secret),
                events: events.clone(),
                timeout: Duration::from_secs(*timeout_secs),
                retries: *retries,
                queue: WEBHOOK_QUEUE,
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

/// Appends the hooks of `specs` to `chain`, in order; events carry `server` as the server's name.
pub fn add_hooks(
    chain: HookChainBuilder,
    specs: &[HookSpec],
    server: &str,
    path: &Path,
) -> Result<(HookChainBuilder, Background), ConfigError> {
    let set = HookSet::build(specs, server, path)?;
    Ok((set.append_to(chain), set.background))
}

/// Builds hooks from specs, with the sinks opened beforehand.
struct Builder<'a> {
    server: &'a str,
    path: &'a Path,
    /// Every event sink of the config, for hooks that emit events.
    bus: EventBus,
    bg: Background,
}

impl Builder<'_> {
    /// The hook of an audit or webhook table: its events, to its own sink.
    fn sink_hook(&self, spec: &HookSpec, sink: Sink) -> Arc<dyn Hook> {
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

    fn build(&mut self, spec: &HookSpec) -> Result<Arc<dyn Hook>, ConfigError> {
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
                Arc::new(RateLimit::new(RateLimitConfig {
                    per_client: rate(per_client_bytes_per_sec)?,
                    per_tunnel: rate(per_tunnel_bytes_per_sec)?,
                    streams_per_client: events(streams_per_client_per_sec)?,
                    visitors_per_ip: events(visitors_per_ip_per_sec)?,
                    logins_per_ip: events(logins_per_ip_per_sec)?,
                }))
            }
            HookSpec::Quota { bytes, period_secs } => {
                if *period_secs == 0 {
                    return Err(invalid("quota: period_secs must be at least 1".to_owned()));
                }
                Arc::new(Quota::new(
                    bytes.0,
                    Duration::from_secs(*period_secs),
                    self.bus.clone(),
                ))
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
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("policy: {what} entry '{s}' is not a network (like 10.0.0.0/8) or address"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use reitunnel_hooks::HookChain;

    fn webhook(url: &str, secret: &str) -> HookSpec {
        HookSpec::Webhook {
            url: url.into(),
            secret: secret.into(),
            events: vec![],
            timeout_secs: 5,
            retries: 3,
            streams: false,
        }
    }

    fn build(specs: &[HookSpec]) -> Result<(Vec<String>, Background), String> {
        let (chain, bg) = add_hooks(
            HookChain::builder(),
            specs,
            "test",
            Path::new("server.toml"),
        )
        .map_err(|e| e.to_string())?;
        let names = chain
            .build()
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        Ok((names, bg))
    }

    /// The names of the hooks of `new` that are not the same instance as in `old`.
    fn rebuilt(old: &HookSet, new: &HookSet) -> Vec<String> {
        let chain = |set: &HookSet| set.append_to(HookChain::builder()).build();
        let fresh = chain(new).without(&chain(old));
        fresh.names().iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_rebuild_keeps_hooks_whose_table_did_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let audit = |name: &str| HookSpec::Audit {
            path: dir.path().join(name),
            streams: false,
        };
        let quota = HookSpec::Quota {
            bytes: ByteSize(1 << 20),
            period_secs: 60,
        };
        let meter = HookSpec::Meter {
            interval_secs: 10,
            sinks: vec![MeterSinkKind::Log],
        };
        let policy = HookSpec::Policy {
            clients: BTreeMap::new(),
            clients_file: None,
            visitors_allow: vec![],
            visitors_deny: vec![],
        };
        let path = Path::new("server.toml");
        let specs = [
            policy.clone(),
            quota.clone(),
            meter.clone(),
            audit("a.jsonl"),
        ];
        let first = HookSet::build(&specs, "t", path).unwrap();
        assert_eq!(first.background().meters.len(), 1);

        // Same tables: only the policy is read again.
        let same = first.rebuild(&specs, "t", path).unwrap();
        assert_eq!(rebuilt(&first, &same), ["policy"]);
        assert!(Arc::ptr_eq(
            &same.background().meters[0].0,
            &first.background().meters[0].0
        ));
        assert!(Arc::ptr_eq(
            &same.background().audit[0],
            &first.background().audit[0]
        ));

        // Another audit file: the quota, which sends events to it, is built
        // anew; the meter, which logs, is kept; and a changed table is new.
        let other_meter = HookSpec::Meter {
            interval_secs: 20,
            sinks: vec![MeterSinkKind::Log],
        };
        let moved = [policy, quota, meter, other_meter, audit("b.jsonl")];
        let next = same.rebuild(&moved, "t", path).unwrap();
        assert_eq!(rebuilt(&same, &next), ["policy", "quota", "meter", "audit"]);
        assert_eq!(next.background().meters.len(), 2);
        assert!(Arc::ptr_eq(
            &next.background().meters[0].0,
            &same.background().meters[0].0
        ));

        // A bad table fails the rebuild and leaves the old set as it was.
        let bad = [HookSpec::Quota {
            bytes: ByteSize(1),
            period_secs: 0,
        }];
        let err = next.rebuild(&bad, "t", path).unwrap_err().to_string();
        assert!(err.contains("period_secs must be at least 1"), "{err}");
    }

    #[test]
    fn sampled_wraps_data_observers_only() {
        let sampled = |one_in, every_ms, hook: HookSpec| HookSpec::Sampled {
            one_in,
            every_ms,
            hook: Box::new(hook),
        };
        let log = HookSpec::Log { sample_every: 0 };
        let (names, _) = build(&[sampled(Some(4), None, log.clone())]).unwrap();
        assert_eq!(names, ["sampled(log)"]);
        let quota = HookSpec::Quota {
            bytes: ByteSize(1),
            period_secs: 60,
        };
        let err = build(&[sampled(Some(4), None, quota)]).unwrap_err();
        assert!(
            err.contains("limits and quotas must see every chunk"),
            "{err}"
        );
        let err = build(&[sampled(Some(4), Some(10), log.clone())]).unwrap_err();
        assert!(err.contains("exactly one of one_in and every_ms"), "{err}");
        let err = build(&[sampled(Some(0), None, log)]).unwrap_err();
        assert!(err.contains("one_in must be at least 1"), "{err}");
    }

    #[test]
    fn policy_clients_come_from_the_config_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clients.toml");
        let policy = |inline: &[&str]| HookSpec::Policy {
            clients: inline
                .iter()
                .map(|n| {
                    let spec = ClientSpec {
                        token: Some("t".into()),
                        ports: None,
                        max_tunnels: None,
                        max_streams: None,
                    };
                    (n.to_string(), spec)
                })
                .collect(),
            clients_file: Some(file.clone()),
            visitors_allow: vec![],
            visitors_deny: vec![],
        };
        std::fs::write(&file, "[clients.bob]\ntoken = \"b\"\nmax_tunnels = 2\n").unwrap();
        let (names, _) = build(&[policy(&["alice"])]).unwrap();
        assert_eq!(names, ["policy"]);
        let err = build(&[policy(&["bob"])]).unwrap_err();
        assert!(
            err.contains("client 'bob' is in both `clients` and"),
            "{err}"
        );
        std::fs::write(&file, "[clients.bob]\ntoken = \"b\"\nmax_tunels = 2\n").unwrap();
        let err = build(&[policy(&[])]).unwrap_err();
        assert!(
            err.contains("clients.toml")
                && err.contains("line 3")
                && err.contains("unknown field `max_tunels`"),
            "{err}"
        );
    }

    #[test]
    fn webhooks_are_built_as_event_hooks_and_checked() {
        std::env::set_var("REITUNNEL_TEST_WEBHOOK_SECRET", "s3cret");
        // Outside a runtime, as in the server binary: delivery gets its own thread.
        let (names, bg) = build(&[
            webhook("http://127.0.0.1:9/a", "${REITUNNEL_TEST_WEBHOOK_SECRET}"),
            webhook("http://127.0.0.1:9/b", "plain"),
        ])
        .unwrap();
        assert_eq!(names, ["webhook", "webhook"]);
        let urls: Vec<_> = bg.webhooks.iter().map(|w| w.url()).collect();
        assert_eq!(urls, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]);

        let e = build(&[webhook(
            "http://127.0.0.1:9/",
            "${REITUNNEL_TEST_UNSET_WEBHOOK}",
        )])
        .err()
        .unwrap();
        assert!(
            e.contains("secret refers to ${REITUNNEL_TEST_UNSET_WEBHOOK}, which is not set"),
            "{e}"
        );
        let e = build(&[webhook("https://hooks.example.com/x", "s")])
            .err()
            .unwrap();
        assert!(e.contains("'https://hooks.example.com/x'"), "{e}");
    }
}
