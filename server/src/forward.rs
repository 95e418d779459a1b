//! Local forwarding (`-L`): the client listens, each of its connections
//! arrives here as a client-opened stream, and the server dials the
//! tunnel's target, but only targets its allow-list names (default: none).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use reitunnel_hooks::authorize::Ask;
use reitunnel_hooks::ports::PortRanges;
use reitunnel_hooks::{
    CloseReason, HookChain, Open, Reason, Scope, StreamInfo, TunnelId, TunnelInfo,
};
use reitunnel_transport::stream::{
    accept_reached, dial_for, read_header, refuse, until_closed, Header,
};
use reitunnel_transport::{Closer, MuxStream};
use thiserror::Error;

use crate::limits::{Arrival, Slot, Slots};
use crate::roster::{StreamListing, TunnelListing};
use crate::{authorize_within, report_to, ServerState, StreamError};
use reitunnel_hooks::tally::Tally;

/// One `allow_forward` entry: `HOST:PORTS`, where HOST is `*`, `*.suffix`,
/// a name, an IP or a CIDR, and PORTS is `*`, a port or a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    host: HostPattern,
    ports: Option<PortRanges>,
    /// As written, for refusals that quote the list.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Suffix(String),
    Name(String),
    Net(IpNet),
}

/// A rule that does not parse.
#[derive(Debug, Error)]
#[error("invalid forward rule '{0}': expected HOST:PORTS like db.internal:5432, *.internal:*, 10.0.0.0/8:22 or [::1]:8000-8100")]
pub struct ForwardRuleError(String);

/// Splits `host:port` at the last colon outside brackets.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

impl FromStr for ForwardRule {
    type Err = ForwardRuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ForwardRuleError(s.to_owned());
        let (host, ports) = split_host_port(s).ok_or_else(bad)?;
        let host = match host {
            "" => return Err(bad()),
            "*" => HostPattern::Any,
            _ if host.starts_with("*.") => HostPattern::Suffix(host[1..].to_ascii_lowercase()),
            _ => match (host.parse::<IpNet>(), host.parse::<IpAddr>()) {
                (Ok(net), _) => HostPattern::Net(net),
                (_, Ok(ip)) => HostPattern::Net(IpNet::from(ip)),
                _ if host.contains('*') || host.contains('/') => return Err(bad()),
                _ => HostPattern::Name(host.to_ascii_lowercase()),
            },
        };
        let ports = match ports {
            "*" => None,
            p => Some(p.parse().map_err(|_| bad())?),
        };
        Ok(ForwardRule {
            host,
            ports,
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for ForwardRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ForwardRule {
    /// Whether `target` (`host:port`) is allowed by this rule. Names match
    /// as written (not after resolution), IPs by network.
    pub fn allows(&self, target: &str) -> bool {
        let Some((host, port)) = split_host_port(target) else {
            return false;
        };
        let Ok(port) = port.parse::<u16>() else {
            return false;
        };
        if self.ports.as_ref().is_some_and(|p| !p.contains(port)) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match (&self.host, host.parse::<IpAddr>()) {
            (HostPattern::Any, _) => true,
            (HostPattern::Net(net), Ok(ip)) => net.contains(&ip),
            (HostPattern::Suffix(suffix), Err(_)) => host.ends_with(suffix.as_str()),
            (HostPattern::Name(name), Err(_)) => host == *name,
            _ => false,
        }
    }
}

/// Checks a requested target against the allow-list.
pub(crate) fn check_target(rules: &[ForwardRule], target: &str) -> Result<(), Reason> {
    if rules.iter().any(|r| r.allows(target)) {
        return Ok(());
    }
    let listed = if rules.is_empty() {
        "the server allows no forward targets (allow_forward is empty)".to_owned()
    } else {
        let names: Vec<String> = rules.iter().map(ToString::to_string).collect();
        format!(
            "it is not in the server's allow_forward list ({})",
            names.join(", ")
        )
    };
    Err(Reason::forbidden(format!(
        "forward to {target} refused: {listed}"
    )))
}

/// A forward tunnel as its streams see it; its close event fires when the
/// last reference drops (the session's and each live stream's), so it
/// never closes before its streams.
pub(crate) struct ForwardRoute {
    pub info: Arc<TunnelInfo>,
    pub closer: Arc<Closer<CloseReason>>,
    /// The hooks of the session that opened it, for its streams.
    pub chain: HookChain,
    open: Option<Open<TunnelInfo>>,
    _slot: Slot,
    /// Its entry in the server's roster, where its streams are counted;
    /// taken out just before the close event.
    listed: Option<TunnelListing>,
}

impl ForwardRoute {
    pub(crate) fn new(
        open: Open<TunnelInfo>,
        closer: Arc<Closer<CloseReason>>,
        slot: Slot,
        listed: TunnelListing,
    ) -> ForwardRoute {
        ForwardRoute {
            info: open.info().clone(),
            chain: open.chain().clone(),
            closer,
            open: Some(open),
            _slot: slot,
            listed: Some(listed),
        }
    }

    /// Counts a stream of this tunnel in the roster while the guard lives.
    fn list(&self, info: &Arc<StreamInfo>) -> Option<StreamListing> {
        Some(self.listed.as_ref()?.tunnel.stream(info.clone()))
    }
}

impl Drop for ForwardRoute {
    fn drop(&mut self) {
        drop(self.listed.take());
        if let Some(open) = self.open.take() {
            open.close(self.closer.reason().unwrap_or(CloseReason::Finished));
        }
    }
}

/// A session's forward tunnels, shared with its inbound stream tasks.
pub(crate) type Forwards = Arc<Mutex<HashMap<TunnelId, Arc<ForwardRoute>>>>;

/// What a session's client-opened streams share with it.
#[derive(Clone)]
pub(crate) struct ClientStreams {
    /// Its `-L` tunnels, by id.
    pub forwards: Forwards,
    /// Its `max_streams_per_client` slots, shared with its tunnels.
    pub slots: Arc<Slots>,
    /// Its streams refused before their header, summed for its reports.
    pub refusals: Arc<Tally>,
}

/// Serves one client-opened stream: limits, header, gate, dial, answer, relay.
pub(crate) async fn serve(shared: Arc<ServerState>, mut up: MuxStream, session: ClientStreams) {
    let cfg = &shared.config;
    // Every limit is taken before a byte of the stream is read, and counted
    // from the moment the stream exists: a stream past them is refused at
    // once and holds nothing, and streams still waiting for their header
    // count against max_streams_per_client and max_buffered_bytes (what
    // the client may send ahead on them is reserved), so a client cannot
    // pile up streams past the limit by holding back their headers.
    let held = session.slots.take().and_then(|client| {
        Ok((
            shared.admission.streams.take()?,
            client,
            // The server's side of a forward has no flow queue: a UDP
            // forward's queue is on the client.
            shared.admission.budget.stream(Arrival::Connection)?,
        ))
    });
    let held = match held {
        Ok(held) => held,
        Err(hit) => {
            let message = format!("stream refused: {hit}");
            session.refusals.refused(&message);
            return refuse(&mut up, message).await;
        }
    };
    let Some(Header {
        tunnel_id, peer, ..
    }) = read_header(&mut up, cfg.stream_ack_timeout).await
    else {
        return;
    };
    if shared.draining.is_cancelled() {
        return refuse(&mut up, "the server is shutting down".to_owned()).await;
    }
    let _live = shared.streams.token();
    let route = session
        .forwards
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&tunnel_id)
        .cloned();
    let Some(route) = route else {
        let message = format!("tunnel {tunnel_id} is not a forward tunnel of this client");
        return refuse(&mut up, message).await;
    };
    let info = Arc::new(StreamInfo::new(
        shared.ids.stream(),
        route.info.clone(),
        peer,
    ));
    if route.chain.authorizes_streams() {
        let ask = Ask::Stream(&info);
        if let Err(r) = authorize_within(&route.chain, &ask, cfg.handshake_timeout).await {
            let message = format!("refused by server hook '{}': {}", r.by, r.reason);
            return refuse(&mut up, message).await;
        }
    }
    let listed = route.list(&info);
    let open = match route.chain.open_stream(info) {
        Ok(open) => open,
        Err(r) => {
            let message = format!("refused by server hook '{}': {}", r.by, r.reason);
            return refuse(&mut up, message).await;
        }
    };
    let relayed = dial_and_relay(&shared, &mut up, &open);
    let reason = until_closed(&route.closer, relayed).await;
    drop((held, listed));
    open.close(reason);
}

/// Reaches the stream's target, answers, relays.
async fn dial_and_relay(
    shared: &ServerState,
    up: &mut MuxStream,
    open: &Open<StreamInfo>,
) -> CloseReason {
    let cfg = &shared.config;
    let tunnel = &open.info().tunnel;
    let target = &tunnel.target;
    let reached = match dial_for(tunnel, cfg.stream_ack_timeout).await {
        Ok(reached) => reached,
        Err(e) => {
            let message = format!("connect to {target} failed: {e}");
            let e = StreamError::TargetRefused {
                target: target.to_string(),
                message: message.clone(),
            };
            report_to(open.chain(), Scope::Stream(open.info()), &e);
            refuse(up, message.clone()).await;
            return CloseReason::TargetUnreachable(message);
        }
    };
    let udp_idle = Some(cfg.limits.udp_flow_idle);
    accept_reached(up, reached, open, &cfg.relay, udp_idle)
        .await
        .unwrap_or_else(|e| CloseReason::Error(StreamError::from(e).to_string()))
}

/// The local address the client's forward tunnels are reported under:
/// the server binds nothing for them.
pub(crate) const NO_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> ForwardRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_match_names_suffixes_networks_and_ports() {
        assert!(rule("db.internal:5432").allows("DB.internal:5432"));
        assert!(!rule("db.internal:5432").allows("db.internal:5433"));
        assert!(rule("*.internal:*").allows("cache.internal:6379"));
        assert!(!rule("*.internal:*").allows("internal.evil.com:80"));
        assert!(rule("10.0.0.0/8:22").allows("10.1.2.3:22"));
        assert!(!rule("10.0.0.0/8:22").allows("11.1.2.3:22"));
        assert!(rule("127.0.0.1:8000-8100").allows("127.0.0.1:8080"));
        assert!(rule("[::1]:*").allows("[::1]:9"));
        assert!(!rule("*:22").allows("host:23"));
        assert!(!rule("*:*").allows("no-port"));
    }

    #[test]
    fn bad_rules_and_refusals_say_what_is_expected() {
        for bad in ["nohost", ":22", "a*b:1", "host:port", "1.2.3.4/99:1"] {
            let e = bad.parse::<ForwardRule>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("'{bad}'")) && e.contains("HOST:PORTS"),
                "{e}"
            );
        }
        let none = check_target(&[], "db:1").unwrap_err();
        assert!(none.message.contains("allows no forward targets"), "{none}");
        let some = check_target(&[rule("db:5432")], "db:1").unwrap_err();
        assert!(
            some.message
                .contains("not in the server's allow_forward list (db:5432)"),
            "{some}"
        );
    }
}
