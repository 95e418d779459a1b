//! One webhook endpoint: its URL taken apart, and the HTTP/1.1 connection
//! to it (plain or TLS), kept open between events and opened again when
//! the receiver closes it. The `http_auth` gate reaches its service the
//! same way ([`Target`], [`Connection`], [`Target::exchange`]).
//!
//! The URL's path and query are often the secret part of it (Slack's
//! `https://hooks.slack.com/services/T…/B…/X…`): they are used to send and
//! nothing else. Every error, log line, health record and `Debug` shows
//! the endpoint as [`redact`] does, `scheme://host:port`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::task::AbortOnDropHandle;

use super::Queued;

/// The most of a receiver's answer body read (and thrown away).
pub(crate) const MAX_ANSWER: usize = 64 << 10;

/// What [`redact`] shows of a URL with no `scheme://host` to show.
const HIDDEN: &str = "<not a scheme://host URL>";

/// `url` as it may be shown (errors, logs, health, the admin API): its
/// scheme, host and port (`https://hooks.example.com:443`), never its
/// path, query or credentials. A URL that does not parse is not shown at
/// all: it may still hold the secret.
///
/// ```
/// use reitunnel_hooks::builtin::redact_url;
/// let slack = "https://hooks.slack.com/services/T000/B000/XXXX";
/// assert_eq!(redact_url(slack), "https://hooks.slack.com:443");
/// assert_eq!(redact_url("http://u:pw@[::1]:8080/x?k=v"), "http://[::1]:8080");
/// assert_eq!(redact_url("hooks.slack.com/services/T000"), "<not a scheme://host URL>");
/// assert_eq!(redact_url("redis://:pw@cache.internal/0"), "redis://cache.internal:6379");
/// ```
pub fn redact(url: &str) -> String {
    let Ok(uri) = url.parse::<Uri>() else {
        return HIDDEN.to_owned();
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return HIDDEN.to_owned();
    };
    let port = authority.port_u16().or(match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" | "rediss" => Some(6379),
        _ => None,
    });
    match port {
        Some(port) => format!("{scheme}://{}:{port}", authority.host()),
        None => format!("{scheme}://{}", authority.host()),
    }
}

/// A URL in `Debug` output, as [`redact`] shows it.
pub(crate) struct Redacted<'a>(pub(crate) &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact(self.0), f)
    }
}

/// Why a URL was refused. Its text shows the URL redacted.
#[derive(Debug, thiserror::Error)]
#[error("{what} URL '{shown}': {problem}")]
pub(crate) struct BadUrl {
    /// `"webhook"` or `"http_auth"`.
    what: &'static str,
    /// The URL, [`redact`]ed.
    shown: String,
    problem: UrlProblem,
}

/// What is wrong with a URL.
#[derive(Debug, thiserror::Error)]
enum UrlProblem {
    #[error("{0}")]
    Unparsable(#[from] hyper::http::uri::InvalidUri),
    #[error("scheme '{0}' is not supported (http:// or https://)")]
    Scheme(String),
    #[error("not an absolute http:// or https:// URL")]
    NotAbsolute,
    #[error("no host")]
    NoHost,
    #[error("credentials in the URL are not supported")]
    Credentials,
    #[error("'{host}' is not a name a certificate can carry: {error}")]
    NotAName {
        host: String,
        error: rustls::pki_types::InvalidDnsNameError,
    },
    #[error(transparent)]
    Roots(#[from] RootsError),
}

impl From<BadUrl> for io::Error {
    fn from(e: BadUrl) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Why one request got no usable answer. Its text never names the URL:
/// callers prefix the endpoint as [`Target::shown`] writes it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// No TCP connection.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (an untrusted certificate, …).
    #[error("TLS: {0}")]
    Tls(io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    /// The request could not be built (a header value it may not carry).
    #[error("building the request: {0}")]
    Build(#[from] hyper::http::Error),
    /// Sending, or waiting for the answer's head, failed.
    #[error("request: {0}")]
    Request(hyper::Error),
    /// The answer's body could not be read (or was over [`MAX_ANSWER`]).
    #[error("reading the answer: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// An answer, but not the status wanted.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// No answer within the attempt's limit.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// The parsed endpoint.
pub(crate) struct Target {
    host: String,
    port: u16,
    /// `host:port` as written: the `Host` header and the metrics label.
    pub(crate) authority: String,
    /// Path and query: only ever sent, never shown.
    pub(crate) path: String,
    /// `scheme://host:port`: how errors, logs and health show it.
    shown: String,
    /// Set for `https://`: how to reach it, and the name its certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Checks `url` (of a `what`, for errors); an `https://` one uses `tls`
    /// (the system's roots unless the caller chose others).
    pub(crate) fn parse(
        what: &'static str,
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Target, BadUrl> {
        let bad = |problem| BadUrl {
            what,
            shown: redact(url),
            problem,
        };
        let uri: Uri = url.parse().map_err(|e| bad(UrlProblem::Unparsable(e)))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(UrlProblem::Scheme(other.to_owned()))),
            None => return Err(bad(UrlProblem::NotAbsolute)),
        };
        let authority = uri.authority().ok_or_else(|| bad(UrlProblem::NoHost))?;
        if authority.as_str().contains('@') {
            return Err(bad(UrlProblem::Credentials));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(UrlProblem::NoHost));
        }
        let tls = match (secure, tls) {
            (false, _) => None,
            (true, config) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|error| {
                    bad(UrlProblem::NotAName {
                        host: host.to_owned(),
                        error,
                    })
                })?;
                let config = match config {
                    Some(config) => config,
                    None => system_roots().map_err(|e| bad(e.into()))?,
                };
                Some((TlsConnector::from(config), name))
            }
        };
        // `path()` is "/" when the URL has none.
        let mut path = uri.path().to_owned();
        if let Some(query) = uri.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Target {
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path,
            shown: redact(url),
            tls,
        })
    }

    /// The endpoint as it may be shown: `scheme://host:port`.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// A new connection: TCP, TLS for `https://`, the HTTP/1.1 handshake.
    async fn connect(&self) -> Result<Connection, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Connection::over(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(Failure::Tls)?;
                Connection::over(tls).await
            }
        }
    }

    /// One request and its whole answer, over `kept` if it is still open,
    /// else over a new connection. A kept connection the far end closed
    /// meanwhile is replaced once, not counted as a failure (`request` is
    /// called again for the new one).
    pub(crate) async fn exchange(
        &self,
        kept: Option<Connection>,
        request: impl Fn() -> Result<Request<Full<Bytes>>, Failure>,
    ) -> Result<Answered, Failure> {
        let mut reused = kept;
        if let Some(c) = &mut reused {
            if c.sender.ready().await.is_err() {
                reused = None;
            }
        }
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        let response = match conn.sender.send_request(request()?).await {
            Ok(response) => response,
            // The far end closed the kept connection before answering.
            Err(e)
                if was_reused
                    && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
            {
                conn = self.connect().await?;
                conn.sender
                    .send_request(request()?)
                    .await
                    .map_err(Failure::Request)?
            }
            Err(e) => return Err(Failure::Request(e)),
        };
        // Read whole (bounded), so the connection can carry the next request.
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(Failure::Read);
        let conn = body.is_ok().then_some(conn);
        Ok(Answered { status, body, conn })
    }
}

/// The answer to one [`Target::exchange`].
pub(crate) struct Answered {
    pub(crate) status: StatusCode,
    /// At most [`MAX_ANSWER`] bytes, or why it could not be read.
    pub(crate) body: Result<Bytes, Failure>,
    /// The connection, fit for the next request: `None` when the body
    /// could not be read (what is left of it would garble the next answer).
    pub(crate) conn: Option<Connection>,
}

/// Why `https://` without chosen CAs cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RootsError {
    #[error("https:// needs CA certificates and the system has none")]
    NoneInstalled,
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// The TLS settings of an `https://` webhook given none: the system's CA
/// certificates, TLS 1.2 or 1.3.
fn system_roots() -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(RootsError::NoneInstalled);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An open HTTP/1.1 connection and the task driving it (ended with it).
pub(crate) struct Connection {
    pub(crate) sender: SendRequest<Full<Bytes>>,
    _driver: AbortOnDropHandle<()>,
}

impl Connection {
    async fn over<S>(io: S) -> Result<Connection, Failure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(Failure::Handshake)?;
        let driver = AbortOnDropHandle::new(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(Connection {
            sender,
            _driver: driver,
        })
    }
}

/// Signs and posts events to one target over a connection kept between them.
pub(super) struct Poster {
    pub(super) target: Target,
    key: hmac::Key,
    open: Option<Connection>,
}

impl Poster {
    pub(super) fn new(target: Target, secret: &[u8]) -> Poster {
        Poster {
            target,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            open: None,
        }
    }

    /// One attempt: a signed POST and a 2xx answer. The connection is
    /// kept only after a whole answer: a failed attempt starts afresh.
    pub(super) async fn post(&mut self, queued: &Queued) -> Result<(), Failure> {
        let kept = self.open.take();
        let answered = self.target.exchange(kept, || self.request(queued)).await?;
        self.open = answered.conn;
        if answered.status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(answered.status))
        }
    }

    /// The signed request for one event.
    fn request(&self, queued: &Queued) -> Result<Request<Full<Bytes>>, Failure> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&queued.body);
        let signature = format!("sha256={}", hex(mac.sign().as_ref()));
        let t = &self.target;
        Request::post(t.path.as_str())
            .header(HOST, t.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Reitunnel-Timestamp", timestamp)
            .header("X-Reitunnel-Signature", signature)
            .header("X-Reitunnel-Event", queued.event)
            .header("X-Reitunnel-Event-Id", queued.id.as_str())
            .body(Full::new(queued.body.clone()))
            .map_err(Failure::Build)
    }
}

/// Lower-case hex of `bytes` (signatures, and `http_auth`'s nonce and proof).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}
