//! The JSON API under `/api/v1/`: lists answer a JSON array of objects,
//! errors an object with an `error` message, actions what they did.

use hyper::{Method, Response, StatusCode};
use reitunnel_hooks::TunnelId;
use serde_json::{json, Value};

use super::{whole, AdminParts, Body};
use crate::hook_config::Background;
use crate::{AdminError, ClientStatus, TunnelStatus};

/// What a route needs of a request.
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: String,
    /// Who asks, for the `admin` event.
    pub(super) by: String,
}

/// Answers one admin API request (already authorized).
pub(super) async fn route(parts: &AdminParts, req: Request) -> Response<Body> {
    // Names may hold `@` and the like, which browsers send percent-encoded.
    let decoded: Option<Vec<String>> = req.path.trim_matches('/').split('/').map(decode).collect();
    let Some(decoded) = decoded else {
        return error(
            StatusCode::BAD_REQUEST,
            "the path is not UTF-8 once decoded",
        );
    };
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    match segments.as_slice() {
        ["api", "v1", "clients"] if get => ok(clients(parts).await),
        ["api", "v1", "clients", name] if get => {
            match clients(parts)
                .await
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == *name)
            {
                Some(c) => ok(c.clone()),
                None => error(
                    StatusCode::NOT_FOUND,
                    &AdminError::NoSuchClient(name.to_string()).to_string(),
                ),
            }
        }
        ["api", "v1", "clients", name, "kick"] if post => kick(parts, name, &req),
        ["api", "v1", "tunnels"] if get => ok(tunnels(parts).await),
        ["api", "v1", "nodes"] if get => ok(nodes(parts).await),
        ["api", "v1", "tunnels", id, "close"] if post => close(parts, id, &req),
        ["api", "v1", "sinks"] if get => ok(sinks(&parts.hooks())),
        ["api", "v1", "events"] if get => parts.feed.subscribe(),
        ["api", "v1", "clients" | "tunnels" | "nodes" | "sinks" | "events", ..] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {} is not an action of the API", req.method, req.path),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {}", req.path),
        ),
    }
}

/// The longest ban: ten years.
const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

fn kick(parts: &AdminParts, name: &str, req: &Request) -> Response<Body> {
    let ban = match param(&req.query, "ban_secs").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(secs)) if secs <= MAX_BAN_SECS => Some(std::time::Duration::from_secs(secs)),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                "ban_secs must be a whole number of seconds, at most {MAX_BAN_SECS} (ten years)"
            ),
            )
        }
    };
    match parts.admin.kick(name, ban, &req.by) {
        Ok(k) => ok(json!({
            "client": name,
            "sessions_closed": k.sessions,
            "leases_freed": k.leases,
            "banned_secs": ban.map(|b| b.as_secs()),
        })),
        Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

fn close(parts: &AdminParts, id: &str, req: &Request) -> Response<Body> {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("'{id}' is not a tunnel id (a number)"),
        );
    };
    match parts.admin.close_tunnel(TunnelId(id), &req.by) {
        Ok(()) => ok(json!({ "tunnel": id, "closed": true })),
        Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

/// Every session, with rates, quota and throttling from the hooks in force.
/// This node's sessions, then (in a fleet) those other nodes hold, each
/// with its `node`.
async fn clients(parts: &AdminParts) -> Value {
    let hooks = parts.hooks();
    let rates = parts.feed.rates(&parts.admin);
    let here = parts.admin.clients();
    let here = here
        .iter()
        .map(|c| client(c, &hooks, rates.client(c.id.0)))
        .map(|c| on_node(c, parts.admin.node()));
    let elsewhere = fleet_part(parts.admin.clients_elsewhere().await)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "node": c.node,
                "peer": c.peer,
                "logged_in_at": logged_in_at(c.connected_for),
                "connected_secs": c.connected_for.as_secs(),
            })
        });
    here.chain(elsewhere).collect()
}

/// `value` with `"node"` set, in a fleet.
fn on_node(mut value: Value, node: Option<&str>) -> Value {
    if let (Some(node), Some(object)) = (node, value.as_object_mut()) {
        object.insert("node".to_owned(), node.into());
    }
    value
}

/// What the fleet's store says, or nothing (logged) while it is away: a
/// listing still shows this node's own.
fn fleet_part<T>(read: Result<Vec<T>, crate::StoreError>) -> Vec<T> {
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing this node only");
        Vec::new()
    })
}

/// The fleet's live nodes (an empty list outside a fleet).
async fn nodes(parts: &AdminParts) -> Value {
    fleet_part(parts.admin.nodes().await)
        .into_iter()
        .map(|n| {
            json!({
                "node": n.node,
                "up_secs": n.up_for.as_secs(),
                "links": n.links.map(|a| a.to_string()),
                "this": Some(n.node.as_str()) == parts.admin.node(),
            })
        })
        .collect()
}

fn client(c: &ClientStatus, hooks: &Background, (rate_in, rate_out): (u64, u64)) -> Value {
    let quota = hooks.quotas.first().map(|q| {
        let used = q.used(&c.name);
        json!({ "limit": q.limit(), "used": used, "left": q.limit().saturating_sub(used) })
    });
    let throttled = hooks
        .rate_limits
        .iter()
        .filter_map(|r| r.throttled_for(c.id))
        .reduce(|a, b| a + b);
    json!({
        "id": c.id.0,
        "name": &*c.name,
        "peer": c.peer.to_string(),
        "logged_in_at": logged_in_at(c.connected_for),
        "connected_secs": c.connected_for.as_secs(),
        "rtt_ms": c.rtt.map(|r| r.as_secs_f64() * 1e3),
        "certified": c.certified,
        "connections": c.connections,
        "tunnels": c.tunnels.iter().map(|t| t.0).collect::<Vec<_>>(),
        "streams": c.streams,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "rate_in": rate_in,
        "rate_out": rate_out,
        "quota": quota,
        "throttled_chunks": throttled,
        "leases": c.leases.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

/// When a session that has lasted `for_` began, RFC 3339 UTC like the events' timestamps.
fn logged_in_at(for_: std::time::Duration) -> String {
    let at = std::time::SystemTime::now()
        .checked_sub(for_)
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// This node's tunnels, then (in a fleet) the public ports other nodes'
/// tunnels hold, each with its `node`.
async fn tunnels(parts: &AdminParts) -> Value {
    let rates = parts.feed.rates(&parts.admin);
    let here = parts.admin.tunnels();
    let here = here
        .iter()
        .map(|t| on_node(tunnel(t, rates.tunnel(t.id.0)), parts.admin.node()));
    let elsewhere = fleet_part(parts.admin.tunnels_elsewhere().await)
        .into_iter()
        .map(|t| {
            json!({
                "client": t.client,
                "node": t.node,
                "kind": "reverse",
                "transport": t.transport,
                "port": t.port,
                "open_secs": t.open_for.as_secs(),
            })
        });
    here.chain(elsewhere).collect()
}

pub(super) fn tunnel(t: &TunnelStatus, (rate_in, rate_out): (u64, u64)) -> Value {
    json!({
        "id": t.id.0,
        "client": &*t.client,
        "client_id": t.client_id.0,
        "kind": t.kind.as_str(),
        "transport": t.transport.as_str(),
        "bind": t.bind.to_string(),
        "target": &*t.target,
        "open_secs": t.open_for.as_secs(),
        "streams": t.streams,
        "bytes_in": t.bytes_in,
        "bytes_out": t.bytes_out,
        "rate_in": rate_in,
        "rate_out": rate_out,
    })
}

/// The health of every sink the hooks write to.
fn sinks(hooks: &Background) -> Value {
    let webhooks = hooks.webhooks.iter().map(|w| {
        let h = w.health();
        json!({
            "kind": "webhook",
            "target": w.url(),
            "healthy": h.healthy,
            "pending": h.pending,
            "delivered": h.delivered,
            "failed_attempts": h.failed_attempts,
            "consecutive_failures": h.consecutive_failures,
            "dropped": h.dropped,
            "dropped_streams": h.dropped_streams,
            "last_error": h.last_error,
        })
    });
    let redis = hooks.redis.iter().map(|r| {
        let h = r.health();
        json!({
            "kind": "redis",
            "target": r.url(),
            "healthy": h.healthy,
            "pending": h.pending,
            "published": h.published,
            "failed": h.failed,
            "failed_attempts": h.failed_attempts,
            "dropped": h.dropped,
            "dropped_streams": h.dropped_streams,
            "last_error": h.last_error,
        })
    });
    let audit = hooks.audit.iter().map(|a| {
        json!({
            "kind": "audit",
            "target": a.path().display().to_string(),
            "healthy": true,
            "dropped": a.dropped(),
            "dropped_streams": a.dropped_streams(),
        })
    });
    let all = webhooks.chain(redis).chain(audit);
    #[cfg(unix)]
    let all = all.chain(hooks.commands.iter().map(|c| {
        let h = c.health();
        json!({
            "kind": "command",
            "target": c.program(),
            "healthy": h.healthy,
            "pending": h.pending,
            "succeeded": h.succeeded,
            "failed": h.failed,
            "dropped": h.dropped,
            "last_error": h.last_error,
        })
    }));
    all.collect()
}

/// The value of `key` in a query string, percent-decoded (`None` if it is
/// not there or not UTF-8 once decoded).
pub(super) fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| decode(v))
}

/// A percent-decoded path segment or query value, if it is UTF-8.
/// A `+` stays a `+` (a token may hold one; browsers encode spaces as `%20`).
fn decode(s: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

fn ok(value: Value) -> Response<Body> {
    whole(StatusCode::OK, "application/json", value.to_string())
}

/// An error answer: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    whole(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}
