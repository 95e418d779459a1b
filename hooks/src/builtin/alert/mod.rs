//! Alerts: rules over what the hooks already measure, evaluated on a
//! timer, each telling its targets when it fires and when it resolves.
//!
//! A rule names a [`AlertMetric`], a threshold (`above`), how long the
//! value must stay above it (`held`), for `failed_logins` the window its
//! failures are summed over, and a cooldown: once a firing was told, the
//! rule stays quiet for that subject (a client, a network, an endpoint)
//! until the cooldown is over, and a firing not told has no resolution
//! told either. Every firing and resolution is an event, `alert.firing`
//! or `alert.resolved`, sent to the rule's targets (an [`EventBus`]; the
//! server's sinks on it are [`Webhook`]s shaped for Slack, Teams or our
//! own signed JSON).
//!
//! The data path costs what a [`BandwidthMeter`] costs (one atomic add
//! per chunk); logins, refusals and opens add to counters where they
//! happen. [`Alerts::evaluate`] does the rest, on the timer of
//! [`Alerts::spawn_evaluator`] or when a caller (a test) says what time
//! it is.

mod measure;
mod track;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reitunnel_proto::RefuseCode;

use super::present::{Connected, Watched};
use super::{BandwidthMeter, Counters, MeterSink, Quota, Webhook};
use crate::events::{Event, EventBus};
use crate::hook::{Hook, HookResult, StreamState};
use crate::info::{
    ClientInfo, DataEvent, Rejection, Scope, StreamEnd, StreamInfo, Totals, TunnelInfo,
};
use crate::verdict::{CloseReason, Verdict};
use measure::{ClientBytes, FailedLogins, Window};
pub use track::Turn;
use track::{Timing, Track};

/// What a rule looks at, and its subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    /// Bytes per second a client sends out through its tunnels (service
    /// to visitor), per client.
    ClientRateUp,
    /// Bytes per second visitors send in to a client's services, per client.
    ClientRateDown,
    /// The share of its quota a connected client used (0 to 1), per
    /// client, the highest of the config's quotas.
    QuotaUsed,
    /// Logins refused for bad credentials within the rule's window, per
    /// source network (/24 or /64).
    FailedLogins,
    /// 1 while a webhook is unhealthy, per endpoint (`scheme://host:port`).
    WebhookUnhealthy,
    /// Visitor streams open now.
    OpenStreams,
    /// Client sessions open now.
    Sessions,
}

impl AlertMetric {
    /// Its name in the config and the events.
    pub fn name(self) -> &'static str {
        match self {
            AlertMetric::ClientRateUp => "client_rate_up",
            AlertMetric::ClientRateDown => "client_rate_down",
            AlertMetric::QuotaUsed => "quota_used",
            AlertMetric::FailedLogins => "failed_logins",
            AlertMetric::WebhookUnhealthy => "webhook_unhealthy",
            AlertMetric::OpenStreams => "open_streams",
            AlertMetric::Sessions => "sessions",
        }
    }
}

/// One rule.
#[derive(Clone)]
pub struct AlertRule {
    /// Names it in the messages.
    pub name: String,
    /// What it looks at.
    pub metric: AlertMetric,
    /// It fires when the value is above this.
    pub above: f64,
    /// How long the value must stay above before it fires (0: at once).
    pub held: Duration,
    /// For [`AlertMetric::FailedLogins`]: the failures of this last span count.
    pub window: Duration,
    /// After a firing is told, how long further firings of the same
    /// subject are not.
    pub cooldown: Duration,
    /// Where its messages go (give the bus the server's name, and every
    /// message carries it).
    pub targets: EventBus,
}

impl std::fmt::Debug for AlertRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertRule")
            .field("name", &self.name)
            .field("metric", &self.metric)
            .field("above", &self.above)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// A message an evaluation sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The rule's name.
    pub rule: String,
    /// Fired or resolved.
    pub turn: Turn,
    /// What it is about: a client, a network, an endpoint, or `server`.
    pub subject: String,
    /// The value measured.
    pub value: f64,
}

/// What evaluations keep between them.
#[derive(Debug, Default)]
struct Evaluation {
    last: Option<Instant>,
    failures: Window,
    /// Per (rule, subject).
    tracks: HashMap<(usize, String), Track>,
}

/// The alert hook. Give it a task with [`Alerts::spawn_evaluator`].
///
/// # Example
///
/// A rule on open streams, evaluated at times the caller gives: it fires
/// once the value stayed above for `held`, and resolves when it drops.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
/// use reitunnel_hooks::builtin::{AlertMetric, AlertRule, Alerts, Turn};
/// use reitunnel_hooks::events::{Event, EventBus, EventSink};
/// use reitunnel_hooks::{HookChain, Login};
/// # use reitunnel_hooks::{ClientId, ClientInfo, StreamId, StreamInfo, TunnelId, TunnelInfo, TunnelKind};
///
/// #[derive(Default)]
/// struct Chat(Mutex<Vec<String>>);
/// impl EventSink for Chat {
///     fn emit(&self, event: &Event) {
///         self.0.lock().unwrap().push(event.fields["summary"].to_string());
///     }
/// }
///
/// let chat = Arc::new(Chat::default());
/// let alerts = Alerts::new(vec![AlertRule {
///     name: "busy".into(),
///     metric: AlertMetric::OpenStreams,
///     above: 0.0,
///     held: Duration::from_secs(30),
///     window: Duration::ZERO,
///     cooldown: Duration::from_secs(300),
///     targets: EventBus::new().with(chat.clone()),
/// }]);
/// let chain = HookChain::builder().shared(alerts.clone()).build();
/// // In a server: `let _task = alerts.spawn_evaluator(Duration::from_secs(1));`
///
/// # let alice = Arc::new(ClientInfo::new(ClientId(1), "alice", "127.0.0.1:50000".parse()?));
/// # let nonce = [0u8; 32];
/// # let proof = reitunnel_proto::auth::proof(b"token", &nonce, "alice");
/// # let tunnel = Arc::new(TunnelInfo::new(TunnelId(1), alice.clone(), TunnelKind::Reverse,
/// #     "0.0.0.0:8080".parse()?, "127.0.0.1:3000"));
/// # let stream = Arc::new(StreamInfo::new(StreamId(1), tunnel.clone(), "127.0.0.1:40000".parse()?));
/// let client = chain.open_client(alice, &Login { nonce: &nonce, proof: &proof }).unwrap();
/// let tunnel = chain.open_tunnel(tunnel).unwrap();
/// let stream = chain.open_stream(stream).unwrap();
/// let t0 = Instant::now();
/// assert!(alerts.evaluate(t0).is_empty());
/// let fired = alerts.evaluate(t0 + Duration::from_secs(30));
/// assert_eq!((fired[0].turn, fired[0].subject.as_str()), (Turn::Firing, "server"));
/// drop(stream);
/// let resolved = alerts.evaluate(t0 + Duration::from_secs(31));
/// assert_eq!(resolved[0].turn, Turn::Resolved);
/// assert_eq!(
///     *chat.0.lock().unwrap(),
///     [
///         r#""[FIRING] busy: open_streams of server is 1 (above 0)""#,
///         r#""[RESOLVED] busy: open_streams of server is 0 (above 0)""#,
///     ]
/// );
/// # drop((tunnel, client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Alerts {
    rules: Vec<AlertRule>,
    meter: Arc<BandwidthMeter>,
    bytes: Arc<ClientBytes>,
    counters: Counters,
    failed: FailedLogins,
    connected: Connected,
    quotas: Watched<Quota>,
    webhooks: Watched<Webhook>,
    evaluation: Mutex<Evaluation>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerts for `rules`.
    pub fn new(rules: Vec<AlertRule>) -> Arc<Alerts> {
        let bytes = Arc::new(ClientBytes::default());
        Arc::new(Alerts {
            rules,
            meter: BandwidthMeter::new(vec![bytes.clone() as Arc<dyn MeterSink>]),
            bytes,
            counters: Counters::new(),
            failed: FailedLogins::default(),
            connected: Connected::default(),
            quotas: Watched::default(),
            webhooks: Watched::default(),
            evaluation: Mutex::default(),
        })
    }

    /// The quotas `quota_used` reads and the webhooks `webhook_unhealthy`
    /// reads (replacing those given before: a reload's).
    pub fn watch(&self, quotas: &[Arc<Quota>], webhooks: &[Arc<Webhook>]) {
        self.quotas.set(quotas);
        self.webhooks.set(webhooks);
    }

    /// Measures, steps every rule for every subject as of `now`, sends the
    /// messages due and returns them. Rates are over the time since the
    /// previous evaluation (the first one measures none).
    pub fn evaluate(&self, now: Instant) -> Vec<Notice> {
        self.meter.report_now();
        let bytes = self.bytes.take();
        let mut ev = self
            .evaluation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let since = ev
            .last
            .replace(now)
            .map(|t| now.saturating_duration_since(t));
        let keep = self
            .rules
            .iter()
            .map(|r| r.window)
            .max()
            .unwrap_or_default();
        ev.failures.push(now, self.failed.take(), keep);
        let mut notices = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let values = self.measure(rule, since, &bytes, &ev.failures, now);
            let timing = Timing {
                held: rule.held,
                cooldown: rule.cooldown,
            };
            // Those measured and those still tracked (a client gone, a
            // network no longer failing: their value is 0), in order.
            let subjects: BTreeSet<String> = ev
                .tracks
                .keys()
                .filter(|(r, _)| *r == i)
                .map(|(_, s)| s.clone())
                .chain(values.keys().cloned())
                .collect();
            for subject in subjects {
                let value = values.get(&subject).copied().unwrap_or(0.0);
                let key = (i, subject);
                let track = ev.tracks.entry(key.clone()).or_default();
                if let Some(turn) = track.step(value > rule.above, now, timing) {
                    notices.push((
                        i,
                        Notice {
                            rule: rule.name.clone(),
                            turn,
                            subject: key.1.clone(),
                            value,
                        },
                    ));
                }
                if track.idle(now, timing) {
                    ev.tracks.remove(&key);
                }
            }
        }
        drop(ev);
        for (i, notice) in &notices {
            let rule = &self.rules[*i];
            rule.targets.emit(&event(rule, notice));
        }
        notices.into_iter().map(|(_, n)| n).collect()
    }

    /// `rule`'s value per subject now.
    fn measure(
        &self,
        rule: &AlertRule,
        since: Option<Duration>,
        bytes: &HashMap<Arc<str>, (u64, u64)>,
        failures: &Window,
        now: Instant,
    ) -> HashMap<String, f64> {
        let rate = |pick: fn(&(u64, u64)) -> u64| -> HashMap<String, f64> {
            let secs = since.map_or(0.0, |d| d.as_secs_f64());
            if secs <= 0.0 {
                return HashMap::new();
            }
            bytes
                .iter()
                .map(|(client, b)| (client.to_string(), pick(b) as f64 / secs))
                .collect()
        };
        let now_counts = || self.counters.snapshot();
        match rule.metric {
            AlertMetric::ClientRateUp => rate(|b| b.1),
            AlertMetric::ClientRateDown => rate(|b| b.0),
            AlertMetric::QuotaUsed => {
                let quotas = self.quotas.alive();
                let mut used = HashMap::new();
                for name in self.connected.names() {
                    let share = quotas
                        .iter()
                        .map(|q| q.used(&name) as f64 / q.limit().max(1) as f64)
                        .fold(0.0, f64::max);
                    used.insert(name.to_string(), share);
                }
                used
            }
            AlertMetric::FailedLogins => failures
                .sums(now, rule.window)
                .into_iter()
                .map(|(net, n)| (net.to_owned(), n as f64))
                .collect(),
            AlertMetric::WebhookUnhealthy => self
                .webhooks
                .alive()
                .iter()
                .map(|w| {
                    (
                        w.url().to_owned(),
                        if w.health().healthy { 0.0 } else { 1.0 },
                    )
                })
                .collect(),
            AlertMetric::OpenStreams => {
                HashMap::from([("server".to_owned(), now_counts().streams_active as f64)])
            }
            AlertMetric::Sessions => {
                HashMap::from([("server".to_owned(), now_counts().clients_active as f64)])
            }
        }
    }

    /// Evaluates every `interval` until the returned task is aborted or
    /// the hook is dropped.
    #[cfg(feature = "tokio")]
    pub fn spawn_evaluator(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let alerts = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                match alerts.upgrade() {
                    Some(a) => drop(a.evaluate(Instant::now())),
                    None => return,
                }
            }
        })
    }
}

/// The event telling `notice` of `rule`.
fn event(rule: &AlertRule, notice: &Notice) -> Event {
    let (name, state, tag) = match notice.turn {
        Turn::Firing => ("alert.firing", "firing", "FIRING"),
        Turn::Resolved => ("alert.resolved", "resolved", "RESOLVED"),
    };
    let metric = rule.metric.name();
    let summary = format!(
        "[{tag}] {}: {metric} of {} is {} (above {})",
        rule.name,
        notice.subject,
        shown(notice.value),
        shown(rule.above)
    );
    Event::now(name)
        .with("summary", summary)
        .with("rule", rule.name.as_str())
        .with("state", state)
        .with("metric", metric)
        .with("subject", notice.subject.as_str())
        .with("value", notice.value)
        .with("above", rule.above)
}

/// A figure for people: whole numbers without decimals, others with two.
fn shown(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

impl Hook for Alerts {
    fn name(&self) -> &str {
        "alert"
    }

    fn on_open(&self, scope: Scope<'_>) {
        self.counters.on_open(scope);
        if let Scope::Client(c) = scope {
            self.connected.opened(c);
        }
    }

    fn on_client_disconnect(&self, c: &ClientInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        self.connected.closed(c);
        self.counters.on_client_disconnect(c, reason, t)
    }

    fn on_tunnel_close(&self, tunnel: &TunnelInfo, reason: &CloseReason, t: &Totals) -> HookResult {
        self.counters.on_tunnel_close(tunnel, reason, t)
    }

    fn stream_state(&self, stream: &StreamInfo) -> Option<StreamState> {
        self.meter.stream_state(stream)
    }

    #[inline]
    fn on_data(&self, event: &DataEvent<'_>) -> Verdict {
        self.meter.on_data(event)
    }

    fn on_stream_close(&self, end: &StreamEnd<'_>) -> HookResult {
        self.meter.on_stream_close(end)?;
        self.counters.on_stream_close(end)
    }

    fn on_rejected(&self, r: &Rejection<'_>) {
        if let (Scope::Client(c), RefuseCode::AuthFailed) = (r.scope, r.reason.code) {
            self.failed.failed(c.peer.ip());
        }
    }
}
