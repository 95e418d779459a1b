//! One webhook endpoint: its URL taken apart, and the HTTP/1.1 connection
//! to it (plain or TLS), kept open between events and opened again when
//! the receiver closes it. The `http_auth` gate reaches its service the
//! same way ([`Target`], [`Connection`]).

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::task::AbortOnDropHandle;

use super::Queued;

/// The most of a receiver's answer body read (and thrown away).
pub(crate) const MAX_ANSWER: usize = 64 << 10;

/// The parsed endpoint.
pub(crate) struct Target {
    pub(crate) url: String,
    host: String,
    port: u16,
    /// `host:port` as written: the `Host` header and the metrics label.
    pub(crate) authority: String,
    pub(crate) path: String,
    /// Set for `https://`: how to reach it, and the name its certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Checks `url` (of a `what`, for errors); an `https://` one uses `tls`
    /// (the system's roots unless the caller chose others).
    pub(crate) fn parse(
        what: &str,
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> io::Result<Target> {
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} URL '{url}': {why}"),
            )
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(bad(format!(
                    "scheme '{other}' is not supported (http:// or https://)"
                )))
            }
            None => return Err(bad("not an absolute http:// or https:// URL".to_owned())),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host".to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported".to_owned()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host".to_owned()));
        }
        let tls = match (secure, tls) {
            (false, _) => None,
            (true, config) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                    bad(format!(
                        "'{host}' is not a name a certificate can carry: {e}"
                    ))
                })?;
                let config = match config {
                    Some(config) => config,
                    None => system_roots().map_err(bad)?,
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
            url: url.to_owned(),
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path,
            tls,
        })
    }

    /// A new connection: TCP, TLS for `https://`, the HTTP/1.1 handshake.
    pub(crate) async fn connect(&self) -> Result<Connection, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Connection::over(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Connection::over(tls).await
            }
        }
    }
}

/// The TLS settings of an `https://` webhook given none: the system's CA
/// certificates, TLS 1.2 or 1.3.
fn system_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err("https:// needs CA certificates and the system has none".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
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
    async fn over<S>(io: S) -> Result<Connection, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
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

    /// One attempt: a signed POST and a 2xx answer. A kept connection the
    /// receiver has closed meanwhile is replaced once, not counted as a failure.
    pub(super) async fn post(&mut self, queued: &Queued) -> Result<(), String> {
        let mut reused = self.open.take();
        if let Some(c) = &mut reused {
            if c.sender.ready().await.is_err() {
                reused = None;
            }
        }
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.target.connect().await?,
        };
        let sent = conn.sender.send_request(self.request(queued)?).await;
        let response = match sent {
            Ok(response) => response,
            // The receiver closed the kept connection before answering.
            Err(e)
                if was_reused
                    && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
            {
                conn = self.target.connect().await?;
                conn.sender
                    .send_request(self.request(queued)?)
                    .await
                    .map_err(|e| format!("request: {e}"))?
            }
            Err(e) => return Err(format!("request: {e}")),
        };
        // Kept only after a whole answer (read, bounded, so the connection
        // can carry the next request): a failed attempt starts afresh.
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        if body.is_ok() {
            self.open = Some(conn);
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    /// The signed request for one event.
    fn request(&self, queued: &Queued) -> Result<Request<Full<Bytes>>, String> {
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
            .map_err(|e| format!("building the request: {e}"))
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
