//! A webhook receiver that trusts a delivery only after checking it: the
//! HMAC-SHA256 signature over `"<timestamp>.<body>"` (compared in constant
//! time), a timestamp at most five minutes old (an old one is a replay),
//! and the event id (a retry of an event it already has is answered, not
//! processed twice).
//!
//! `cargo run -p reitunnel-hooks --example webhook_receiver` starts the
//! receiver on 127.0.0.1, points a [`Webhook`] at it, sends three events,
//! then a forged delivery and a replayed one, and prints what the receiver
//! made of each. `cargo test` runs it.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reitunnel_hooks::builtin::{Secret, Webhook, WebhookConfig};
use reitunnel_hooks::events::{Event, EventSink};
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How old a delivery's timestamp may be.
const MAX_AGE: Duration = Duration::from_secs(300);

/// The receiver's state: the shared secret, the event ids it has, and
/// (for this example's output) the events it accepted.
struct Receiver {
    key: hmac::Key,
    seen: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<String>>,
}

/// Why a delivery was turned away.
#[derive(Debug)]
enum Refused {
    Unsigned,
    BadSignature,
    Stale,
}

impl Receiver {
    fn new(secret: &str) -> Receiver {
        Receiver {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            seen: Mutex::default(),
            accepted: Mutex::default(),
        }
    }

    /// Checks a delivery; `Ok(true)` if it is new, `Ok(false)` if its id was seen.
    fn check(&self, header: impl Fn(&str) -> Option<String>, body: &[u8]) -> Result<bool, Refused> {
        let timestamp = header("x-reitunnel-timestamp").ok_or(Refused::Unsigned)?;
        let signature = header("x-reitunnel-signature").ok_or(Refused::Unsigned)?;
        let tag = signature
            .strip_prefix("sha256=")
            .and_then(unhex)
            .ok_or(Refused::BadSignature)?;
        let signed = [timestamp.as_bytes(), b".", body].concat();
        // ring's verify compares in constant time.
        hmac::verify(&self.key, &signed, &tag).map_err(|_| Refused::BadSignature)?;
        let sent = timestamp
            .parse::<u64>()
            .map_err(|_| Refused::BadSignature)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(sent) > MAX_AGE.as_secs() {
            return Err(Refused::Stale);
        }
        let id = header("x-reitunnel-event-id").unwrap_or_default();
        Ok(self.seen.lock().unwrap().insert(id))
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let headers = req.headers().clone();
        let header = |name: &str| Some(headers.get(name)?.to_str().ok()?.to_owned());
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        match self.check(header, &body) {
            Ok(true) => {
                let event = header("x-reitunnel-event").unwrap_or_default();
                self.accepted.lock().unwrap().push(event);
                status(StatusCode::NO_CONTENT)
            }
            // Already processed: say yes, so the sender stops retrying.
            Ok(false) => status(StatusCode::NO_CONTENT),
            Err(why) => {
                println!("receiver: refused a delivery: {why:?}");
                status(StatusCode::UNAUTHORIZED)
            }
        }
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = code;
    res
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Serves the receiver over HTTP/1.1 until the program ends.
async fn serve(listener: TcpListener, receiver: Arc<Receiver>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let receiver = receiver.clone();
                async move { Ok::<_, Infallible>(receiver.answer(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// A hand-made POST, for the forged and replayed deliveries; returns the status line.
async fn post(addr: SocketAddr, headers: &str, body: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /hooks HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let secret = "shared-webhook-secret";
    let receiver = Arc::new(Receiver::new(secret));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, receiver.clone()));

    let webhook = Webhook::new(WebhookConfig {
        url: format!("http://{addr}/hooks"),
        secret: Secret::new(secret),
        events: Vec::new(),
        timeout: Duration::from_secs(5),
        retries: 3,
        queue: 16,
        tls: None,
    })
    .unwrap();
    for name in ["client.connected", "tunnel.opened", "tunnel.closed"] {
        webhook.emit(&Event::now(name).with("client", "alice"));
    }
    assert!(
        webhook.drain(Duration::from_secs(10)).await,
        "events still pending"
    );
    let accepted = receiver.accepted.lock().unwrap().clone();
    println!("receiver: accepted {accepted:?}");
    assert_eq!(
        accepted,
        ["client.connected", "tunnel.opened", "tunnel.closed"]
    );

    // Someone without the secret, and someone replaying a day-old delivery.
    let body = r#"{"event":"client.connected","client":"mallory"}"#;
    let forged = post(
        addr,
        "X-Reitunnel-Timestamp: 1\r\nX-Reitunnel-Signature: sha256=00\r\n",
        body,
    )
    .await;
    let day_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{day_ago}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let signed =
        format!("X-Reitunnel-Timestamp: {day_ago}\r\nX-Reitunnel-Signature: sha256={hex}\r\n");
    let replayed = post(addr, &signed, body).await;
    println!("forged: {forged}; replayed: {replayed}");
    assert!(forged.contains("401") && replayed.contains("401"));
    assert_eq!(
        receiver.accepted.lock().unwrap().len(),
        3,
        "nothing more was accepted"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        super::main();
    }
}
