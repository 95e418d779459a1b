//! The admin endpoint (`--admin ADDR`): Prometheus metrics, health, a JSON
//! API over [`Admin`] with kick and close, the live event stream and the
//! status page. `--metrics-listen` serves the same metrics and health
//! alone. One small HTTP/1.1 server (hyper) for both.
//!
//! With a token set, everything but `/healthz`, `/readyz` and the page
//! itself (which holds no data) needs `Authorization: Bearer TOKEN`; the
//! event stream also takes `?token=`, for clients that only have a
//! browser's `EventSource` (which cannot send headers). The page itself
//! sends the header only, since URLs end up in proxy logs. Whatever the token, requests a page of another
//! site could make a browser send are refused (see `foreign`), `/metrics`
//! included, and every answer forbids being framed or sniffed (`harden`).

mod api;
mod backlog;
mod feed;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use reitunnel_hooks::builtin::Secret;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub(super) use feed::Feed;

use crate::hook_config::Background;
use crate::Admin;

/// A response body: a whole one, or the event stream.
type Body = BoxBody<Bytes, Infallible>;

/// How often Prometheus histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

/// Connections the endpoint serves at once (event streams included).
const MAX_CONNECTIONS: usize = 256;

/// How long a request's head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint serves from.
pub(super) struct Endpoint {
    metrics: PrometheusHandle,
    /// `None` on the metrics-only port.
    admin: Option<Arc<AdminParts>>,
}

/// The admin part: the server, its token, its hooks' handles, its feed.
pub(super) struct AdminParts {
    pub(super) admin: Admin,
    /// The bearer token the endpoint requires; a reload replaces it, so
    /// that a leaked token is revoked without a restart.
    token: RwLock<Option<Secret>>,
    /// The handles of the hooks in force (quotas, limiters, sinks), swapped on reload.
    hooks: Mutex<Background>,
    pub(super) feed: Arc<Feed>,
}

impl AdminParts {
    pub(super) fn new(
        admin: Admin,
        token: Option<Secret>,
        hooks: &Background,
        feed: Arc<Feed>,
    ) -> AdminParts {
        AdminParts {
            admin,
            token: RwLock::new(token),
            hooks: Mutex::new(hooks.clone()),
            feed,
        }
    }

    /// The token in force now.
    fn token(&self) -> Option<Secret> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a reloaded configuration's token in force: from the next
    /// request on, only it opens the endpoint.
    pub(super) fn set_token(&self, token: Option<Secret>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    fn hooks(&self) -> Background {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts the hooks of a new configuration in force for the API.
    pub(super) fn set_hooks(&self, bg: &Background) {
        *self.hooks.lock().unwrap_or_else(PoisonError::into_inner) = bg.clone();
    }
}

impl Endpoint {
    /// Metrics and health only.
    pub(super) fn metrics_only(metrics: PrometheusHandle) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            metrics,
            admin: None,
        })
    }

    /// The whole admin endpoint.
    pub(super) fn admin(metrics: PrometheusHandle, parts: Arc<AdminParts>) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            metrics,
            admin: Some(parts),
        })
    }

    /// Serves HTTP on `listener` until the returned task is aborted, which
    /// also ends every connection (event streams included).
    pub(super) fn serve(self: Arc<Self>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let mut upkeep = tokio::time::interval(UPKEEP);
            loop {
                tokio::select! {
                    _ = upkeep.tick() => self.metrics.run_upkeep(),
                    Some(_) = connections.join_next() => {}
                    accepted = listener.accept() => {
                        let Ok((tcp, peer)) = accepted else {
                            // Out of descriptors and the like: back off.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        if connections.len() >= MAX_CONNECTIONS {
                            tracing::warn!(%peer, "admin endpoint: {MAX_CONNECTIONS} connections open; refusing another");
                            continue;
                        }
                        let endpoint = self.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let endpoint = endpoint.clone();
                                async move { Ok::<_, Infallible>(endpoint.handle(req, peer).await) }
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_TIMEOUT)
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                            if let Err(e) = served {
                                tracing::debug!(%peer, error = %e, "admin connection ended");
                            }
                        });
                    }
                }
            }
        })
    }

    /// Answers one request, with the headers that keep every answer out
    /// of other sites' frames and content sniffing (see [`harden`]).
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let mut res = self.route(req, peer).await;
        harden(res.headers_mut());
        res
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/metrics") => {
                match self.guard(&req).or_else(|| self.refusal(&req, false)) {
                    None => whole(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        self.metrics.render(),
                    ),
                    Some(refused) => refused,
                }
            }
            _ => match &self.admin {
                None => not_found(&path),
                Some(parts) => {
                    if let Some(refused) = self.guard(&req) {
                        return refused;
                    }
                    let api = api::Request {
                        method,
                        path,
                        query: req.uri().query().unwrap_or("").to_owned(),
                        by: format!("admin API client {peer}"),
                    };
                    if api.path == "/" && api.method == Method::GET {
                        return whole(StatusCode::OK, "text/html; charset=utf-8", PAGE);
                    }
                    let stream = api.path == "/api/v1/events";
                    match self.refusal(&req, stream) {
                        None => api::route(parts, api).await,
                        Some(refused) => refused,
                    }
                }
            },
        }
    }

    /// On the admin endpoint, refuses what a page of another site could
    /// make a browser send or read (see [`foreign`]): the API, the page and
    /// `/metrics` alike, since a DNS-rebound page reads metrics as easily
    /// as the API. The metrics-only port is for scrapers wherever they
    /// are, with neither token nor page, and is left open.
    fn guard(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let parts = self.admin.as_ref()?;
        foreign(req, parts.token().is_some())
    }

    fn readyz(&self) -> Response<Body> {
        match &self.admin {
            Some(parts) if !parts.admin.ready() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting or draining\n",
            ),
            _ => text(StatusCode::OK, "ready\n"),
        }
    }

    /// Checks the bearer token, if one is set (`?token=` too when
    /// `in_query`): the answer refusing the request, or `None` to serve it.
    fn refusal(&self, req: &Request<Incoming>, in_query: bool) -> Option<Response<Body>> {
        let token = self.admin.as_ref()?.token()?;
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = in_query
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| api::param(q, "token"));
        match header.or(query.as_deref()) {
            Some(given) if token.matches(given) => None,
            given => {
                let why = if given.is_some() {
                    "wrong admin token"
                } else {
                    "this endpoint needs the admin token: send Authorization: Bearer TOKEN"
                };
                let mut res = api::error(StatusCode::UNAUTHORIZED, why);
                res.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Some(res)
            }
        }
    }
}

/// Refuses what a web page elsewhere could make a browser send: a request
/// from another origin (a kick is a POST a cross-site form can make), and,
/// without a token, one whose `Host` is not a loopback name (a DNS-rebound
/// page reading the API). `curl` and Prometheus send neither header.
fn foreign(req: &Request<Incoming>, has_token: bool) -> Option<Response<Body>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(HOST.as_str()).unwrap_or_default();
    if matches!(header("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return Some(api::error(
            StatusCode::FORBIDDEN,
            "a request from another site's page",
        ));
    }
    if let Some(origin) = header(ORIGIN.as_str()) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            let why = format!("a request from a page of {origin}, not of this endpoint ({host})");
            return Some(api::error(StatusCode::FORBIDDEN, &why));
        }
    }
    if !has_token && !loopback_name(host) {
        let why = format!("Host '{host}' is not a loopback name: without admin_token only local pages may use the API");
        return Some(api::error(StatusCode::FORBIDDEN, &why));
    }
    None
}

/// Keeps any answer out of another site's frame (a framed status page
/// could be click-jacked into a Kick) and tells browsers to take each
/// answer for the type it says, never to guess. The page's URL may hold
/// `?token=` on its first load: no referrer leaves with it.
fn harden(headers: &mut hyper::HeaderMap) {
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_name(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The status page: one file, no external assets.
const PAGE: &str = include_str!("status.html");

fn whole(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    whole(status, "text/plain; charset=utf-8", body)
}

fn not_found(path: &str) -> Response<Body> {
    api::error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}"))
}
