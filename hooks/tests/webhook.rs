//! The webhook sink against real HTTP endpoints on 127.0.0.1: signed
//! requests in order with the event filter applied, retries after 5xx,
//! timeouts against an endpoint that never answers, a bounded queue that
//! drops and counts, unhealthy after consecutive failures (and the
//! `webhook.unhealthy` and `webhook.recovered` events), bad URLs, a URL's
//! secret path kept out of everything observable, stream events that
//! cannot crowd other events out of the queue, and the verification
//! snippets of docs/EVENTS.md run on a real delivery.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reitunnel_hooks::builtin::{
    EventHook, Secret, Webhook, WebhookConfig, WebhookHealth, UNHEALTHY_AFTER,
};
use reitunnel_hooks::events::{Event, EventBus, EventSink, Lane};
use reitunnel_hooks::{ErrorEvent, Hook, Scope};
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const SECRET: &str = "webhook-test-secret";
/// Upper bound on any wait; a test failing here names what it waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request as the test endpoint read it.
#[derive(Debug)]
struct Received {
    request_line: String,
    /// Lowercased names.
    headers: HashMap<String, String>,
    body: String,
}

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body).
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// An endpoint answering request number `i` (0-based) with `status(i)`;
/// every request read is passed on, in arrival order.
async fn endpoint(
    status: impl Fn(usize) -> u16 + Send + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let Some(request) = read_request(&mut stream).await else {
                continue;
            };
            let code = status(count);
            count += 1;
            let _ = tx.send(request);
            let reason = if code < 300 { "OK" } else { "Oops" };
            let answer = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (addr, rx)
}

/// An endpoint that accepts connections, reads nothing back and never
/// answers; each accepted connection is signalled.
async fn hung_endpoint() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

/// An endpoint that reads each request, passes it on, and answers `200`
/// only once `release` is sent `true`: a receiver that is down until then.
async fn held_endpoint() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Received>,
    watch::Sender<bool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (tx, mut released) = (tx.clone(), released.clone());
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut stream).await {
                    let _ = tx.send(request);
                    if released.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx, release)
}

fn config(addr: SocketAddr, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        url: format!("http://{addr}/hooks/reitunnel"),
        secret: Secret::new(SECRET),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        timeout: Duration::from_secs(5),
        retries: 3,
        queue: 64,
        tls: None,
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("endpoint stopped while waiting for {what}"))
}

/// Polls the webhook's health until `done` holds.
async fn health_until(
    hook: &Webhook,
    what: &str,
    done: impl Fn(&WebhookHealth) -> bool,
) -> WebhookHealth {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let h = hook.health();
        if done(&h) {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; health: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks the timestamp and signature headers as a receiver would.
fn verify(r: &Received) {
    verify_at(r, "/hooks/reitunnel");
}

fn verify_at(r: &Received, path: &str) {
    assert_eq!(r.request_line, format!("POST {path} HTTP/1.1"));
    assert_eq!(r.headers["content-type"], "application/json");
    let ts = &r.headers["x-reitunnel-timestamp"];
    let secs: u64 = ts.parse().expect("timestamp is unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(secs) < 60, "timestamp {secs} vs now {now}");
    let sig = r.headers["x-reitunnel-signature"]
        .strip_prefix("sha256=")
        .expect("sha256= prefix");
    assert_eq!(sig.len(), 64);
    assert!(
        sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "lowercase hex: {sig}"
    );
    let sig: Vec<u8> = (0..sig.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sig[i..i + 2], 16).unwrap())
        .collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    hmac::verify(&key, format!("{ts}.{}", r.body).as_bytes(), &sig).expect("signature verifies");
    // A different secret, or a different timestamp, does not.
    let other = hmac::Key::new(hmac::HMAC_SHA256, b"another secret");
    assert!(hmac::verify(&other, format!("{ts}.{}", r.body).as_bytes(), &sig).is_err());
    let replayed = format!("{}.{}", secs + 1, r.body);
    assert!(hmac::verify(&key, replayed.as_bytes(), &sig).is_err());
    // The event's name, as in the body, and an id.
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        r.headers["x-reitunnel-event"],
        body["event"].as_str().unwrap()
    );
    let id = &r.headers["x-reitunnel-event-id"];
    let (prefix, n) = id.split_once('-').expect("<prefix>-<n>");
    assert!(prefix.len() == 16 && n.parse::<u64>().is_ok(), "{id}");
}

fn event(name: &'static str, n: u64) -> Event {
    Event::now(name).with("client", "alice").with("n", n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_arrive_in_order_and_filtered_ones_never() {
    let (addr, mut requests) = endpoint(|_| 200).await;
    let hook = Webhook::new(config(addr, &["tunnel.opened", "quota.exceeded"])).unwrap();
    let mut sent = Vec::new();
    for n in 0..6 {
        let wanted = event(
            if n % 2 == 0 {
                "tunnel.opened"
            } else {
                "quota.exceeded"
            },
            n,
        );
        hook.emit(&event("stream.opened", n)); // filtered out
        hook.emit(&wanted);
        hook.emit(&event("tunnel.closed", n)); // filtered out
        sent.push(wanted);
    }
    for wanted in &sent {
        let r = next(&mut requests, "the next event").await;
        verify(&r);
        assert_eq!(r.body, wanted.to_json(), "in order, body = to_json()");
    }
    let h = health_until(&hook, "6 deliveries, none pending", |h| {
        h.delivered == 6 && h.pending == 0
    })
    .await;
    assert_eq!(
        h,
        WebhookHealth {
            delivered: 6,
            failed_attempts: 0,
            dropped: 0,
            dropped_streams: 0,
            pending: 0,
            consecutive_failures: 0,
            last_error: None,
            healthy: true,
        }
    );
    // Delivery is in order, so after one more wanted event nothing filtered can still come.
    let last = event("tunnel.opened", 99);
    hook.emit(&event("stream.closed", 99));
    hook.emit(&last);
    assert_eq!(
        next(&mut requests, "the last event").await.body,
        last.to_json()
    );
    health_until(&hook, "7 deliveries", |h| h.delivered == 7).await;
    assert!(requests.try_recv().is_err(), "nothing else arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_server_errors_and_delivers_once() {
    let (addr, mut requests) = endpoint(|i| if i < 2 { 500 } else { 200 }).await;
    let hook = Webhook::new(config(addr, &[])).unwrap();
    let ev = event("quota.exceeded", 1);
    hook.emit(&ev);
    let mut ids = Vec::new();
    for attempt in 1..=3 {
        let r = next(&mut requests, &format!("attempt {attempt}")).await;
        verify(&r); // every attempt signed afresh
        assert_eq!(r.body, ev.to_json());
        ids.push(r.headers["x-reitunnel-event-id"].clone());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id for every attempt: {ids:?}"
    );
    let h = health_until(&hook, "the delivery", |h| h.delivered == 1).await;
    assert_eq!(h.failed_attempts, 2);
    assert_eq!(h.consecutive_failures, 0);
    assert!(h.healthy);
    assert_eq!(h.dropped, 0);
    let error = h.last_error.expect("the 500s are remembered");
    assert!(error.contains("500"), "{error}");
    // Exactly once: one more event is the next request.
    let ev2 = event("quota.exceeded", 2);
    hook.emit(&ev2);
    let second = next(&mut requests, "the 2nd event").await;
    assert_eq!(second.body, ev2.to_json());
    assert_ne!(
        second.headers["x-reitunnel-event-id"], ids[0],
        "a new event, a new id"
    );
    health_until(&hook, "the 2nd delivery", |h| h.delivered == 2).await;
    assert!(requests.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_endpoint_times_out_and_a_full_queue_drops() {
    let (addr, mut accepted) = hung_endpoint().await;
    let mut cfg = config(addr, &[]);
    cfg.timeout = Duration::from_millis(200);
    cfg.retries = 1;
    cfg.queue = 2;
    let hook = Webhook::new(cfg).unwrap();
    hook.emit(&event("tunnel.opened", 0));
    // The delivery task holds event 0 on a hung connection for at least 200 ms;
    // `emit` is a plain fn: these return without waiting for it.
    next(&mut accepted, "the first connection").await;
    for n in 1..=10 {
        hook.emit(&event("tunnel.opened", n));
    }
    assert_eq!(hook.health().dropped, 8, "2 queued, the rest dropped");
    // Every queued event is tried twice and given up.
    let h = health_until(&hook, "3 events given up", |h| h.consecutive_failures == 3).await;
    assert_eq!(h.failed_attempts, 6);
    assert_eq!(h.delivered, 0);
    assert_eq!(h.dropped, 8);
    assert!(h.healthy, "3 < {UNHEALTHY_AFTER} failures");
    let error = h.last_error.expect("an error");
    assert!(error.contains("timed out after 200ms"), "{error}");
    assert!(
        error.contains(&addr.to_string()),
        "names the endpoint: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_after_consecutive_failures_until_a_success() {
    let fail = UNHEALTHY_AFTER as usize;
    let (addr, mut requests) = endpoint(move |i| if i < fail { 503 } else { 200 }).await;
    let mut cfg = config(addr, &[]);
    cfg.retries = 0;
    let hook = Webhook::new(cfg).unwrap();
    let (tx, mut told) = mpsc::unbounded_channel();
    hook.report_health_to(
        EventBus::new()
            .for_server("edge-1")
            .with(Arc::new(Told(tx))),
    );
    for n in 0..fail as u64 {
        hook.emit(&event("tunnel.opened", n));
    }
    let h = health_until(&hook, "unhealthy", |h| !h.healthy).await;
    let unhealthy = next(&mut told, "webhook.unhealthy").await;
    assert_eq!(unhealthy.event, "webhook.unhealthy");
    assert_eq!(unhealthy.fields["endpoint"], addr.to_string());
    assert_eq!(unhealthy.fields["consecutive_failures"], UNHEALTHY_AFTER);
    assert!(
        unhealthy.fields["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{unhealthy:?}"
    );
    assert_eq!(h.consecutive_failures, UNHEALTHY_AFTER);
    assert_eq!(h.failed_attempts, fail as u64);
    assert!(h.last_error.as_deref().unwrap().contains("503"), "{h:?}");
    for _ in 0..fail {
        next(&mut requests, "a failing attempt").await;
    }
    let ev = event("tunnel.opened", 99);
    hook.emit(&ev);
    assert_eq!(
        next(&mut requests, "the next event").await.body,
        ev.to_json()
    );
    let h = health_until(&hook, "healthy again", |h| h.delivered == 1).await;
    assert!(h.healthy);
    assert_eq!(h.consecutive_failures, 0);
    let recovered = next(&mut told, "webhook.recovered").await;
    assert_eq!(recovered.event, "webhook.recovered");
    assert_eq!(recovered.fields["after_failures"], UNHEALTHY_AFTER);
    assert_eq!(recovered.fields["server"], "edge-1");
    assert!(told.try_recv().is_err(), "one event per turn");
}

/// The other sinks, as the webhook's health events reach them.
struct Told(mpsc::UnboundedSender<Event>);

impl EventSink for Told {
    fn emit(&self, event: &Event) {
        let _ = self.0.send(event.clone());
    }
}

#[test]
fn bad_urls_are_refused_showing_scheme_host_and_port_only() {
    let to = |url: &str| WebhookConfig {
        url: url.to_owned(),
        timeout: Duration::from_secs(1),
        retries: 0,
        queue: 1,
        ..config("127.0.0.1:9".parse().unwrap(), &[])
    };
    let hidden = "'<not a scheme://host URL>'";
    for (url, shown, why) in [
        ("ftp://example.com/x", "'ftp://example.com'", "scheme 'ftp'"),
        ("not a url", hidden, "invalid"),
        ("/just/a/path", hidden, "not an absolute"),
        ("http://", hidden, "empty"),
        (
            "https://user:pa55@hooks.example.com/services/T0/B0/s3cr3t",
            "'https://hooks.example.com:443'",
            "credentials",
        ),
    ] {
        let e = Webhook::new(to(url)).unwrap_err().to_string();
        assert!(e.contains(shown) && e.contains(why), "{url}: {e}");
        for secret in ["/x", "/just", "pa55", "s3cr3t"] {
            assert!(!e.contains(secret), "{url}: {e}");
        }
    }
    // A good URL outside a runtime is an error saying so, not a panic.
    let e = Webhook::new(to("http://127.0.0.1:9/s3cr3t"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokio runtime"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

/// Log lines written while it is installed on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Collects every log line of this thread (all levels) until the guard goes.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Current-thread: the delivery task logs on this thread, where `Logs` listens.
#[tokio::test(flavor = "current_thread")]
async fn a_secret_path_never_reaches_errors_health_events_logs_or_debug() {
    const SECRET_PATH: &str = "/services/T000/B000/XXXXsecretXXXX";
    let (logs, _guard) = Logs::capture();
    let (addr, mut requests) = endpoint(|_| 500).await;
    let mut cfg = config(addr, &[]);
    cfg.url = format!("http://{addr}{SECRET_PATH}");
    cfg.retries = 0;
    let shown = format!("http://{addr}");
    let config_debug = format!("{cfg:?}");
    let hook = Webhook::new(cfg).unwrap();
    let (tx, mut told) = mpsc::unbounded_channel();
    hook.report_health_to(EventBus::new().with(Arc::new(Told(tx))));
    for n in 0..u64::from(UNHEALTHY_AFTER) {
        hook.emit(&event("tunnel.opened", n));
    }
    let unhealthy = next(&mut told, "webhook.unhealthy").await;
    // The receiver did get the real URL's path.
    let first = next(&mut requests, "a delivery").await;
    assert!(first.request_line.contains(SECRET_PATH), "{first:?}");
    let health = hook.health();
    let last_error = health.last_error.clone().expect("the 500s");
    assert_eq!(
        last_error,
        format!("POST {shown}: HTTP 500 Internal Server Error")
    );
    assert_eq!(hook.url(), shown);
    let seen = [
        ("the last error", last_error),
        ("the health record", format!("{health:?}")),
        ("webhook.unhealthy", unhealthy.to_json()),
        ("the config's Debug", config_debug.clone()),
        ("the webhook's Debug", format!("{hook:?}")),
        ("the logs", logs.text()),
    ];
    for (what, text) in &seen {
        assert!(!text.contains("XXXXsecretXXXX"), "{what}: {text}");
        assert!(!text.contains("/services"), "{what}: {text}");
    }
    assert!(
        config_debug.contains(&format!("{shown:?}")),
        "{config_debug}"
    );
    assert!(logs.text().contains(&shown), "the logs name the endpoint");
}

#[test]
fn delivers_from_its_own_thread_outside_a_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, mut requests) = runtime.block_on(endpoint(|_| 204));
    // Built outside the runtime: delivers from a thread of its own.
    // A URL without a path posts to "/", with a query keeps it.
    let mut cfg = config(addr, &[]);
    cfg.url = format!("http://{addr}");
    let hook: Arc<Webhook> = Webhook::new_on_thread(cfg).unwrap();
    let mut cfg = config(addr, &[]);
    cfg.url = format!("http://{addr}/in?key=abc");
    let with_query: Arc<Webhook> = Webhook::new_on_thread(cfg).unwrap();
    let ev = event("server.started", 0);
    hook.emit(&ev);
    runtime.block_on(async {
        let r = next(&mut requests, "the event").await;
        verify_at(&r, "/");
        assert_eq!(r.headers["host"], addr.to_string());
        with_query.emit(&ev);
        verify_at(&next(&mut requests, "the 2nd event").await, "/in?key=abc");
        assert_eq!(r.body, ev.to_json());
        health_until(&hook, "the delivery", |h| h.delivered == 1).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_queued_events_and_is_bounded() {
    let (addr, mut requests) = endpoint(|i| if i == 0 { 500 } else { 200 }).await;
    let hook = Webhook::new(config(addr, &[])).unwrap();
    for n in 0..3 {
        hook.emit(&event("tunnel.closed", n));
    }
    // Nothing polled: when drain returns, every event is delivered (one after a retry).
    assert!(hook.drain(PATIENCE).await);
    let h = hook.health();
    assert_eq!((h.delivered, h.failed_attempts), (3, 1));
    for _ in 0..4 {
        verify(&next(&mut requests, "a request").await);
    }

    // A hung endpoint: drain gives up at its limit and says so.
    let (addr, _accepted) = hung_endpoint().await;
    let hook = Webhook::new(config(addr, &[])).unwrap();
    hook.emit(&event("server.stopped", 0));
    assert!(!hook.drain(Duration::from_millis(300)).await);
    assert_eq!(hook.health().delivered, 0);
}

/// The code block of `lang` in docs/EVENTS.md's "Verifying a delivery".
fn snippet(lang: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/EVENTS.md"),
    )
    .unwrap();
    let section = &doc[doc.find("## Verifying a delivery").expect("the section")..];
    let start = section.find(&format!("```{lang}\n")).expect("the snippet") + lang.len() + 4;
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_owned()
}

/// What the docs' `verify` of `lang` says of a delivery, run by `program`:
/// `None` where the program is not installed.
fn docs_verify(lang: &str, program: &str, driver: &str, args: [&str; 4]) -> Option<String> {
    let code = format!("{}\n{driver}", snippet(lang));
    let out = match std::process::Command::new(program)
        .arg(if program == "node" { "-e" } else { "-c" })
        .arg(code)
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{program}: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program}: {stderr}");
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_verification_snippets_accept_real_deliveries_only() {
    let (addr, mut requests) = endpoint(|_| 200).await;
    let hook = Webhook::new(config(addr, &[])).unwrap();
    hook.emit(&event("client.connected", 1));
    let r = next(&mut requests, "a delivery").await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let tampered = dir.path().join("tampered");
    std::fs::write(&body, &r.body).unwrap();
    std::fs::write(&tampered, r.body.replace("alice", "mallo")).unwrap();
    let (ts, sig) = (
        r.headers["x-reitunnel-timestamp"].as_str(),
        r.headers["x-reitunnel-signature"].as_str(),
    );
    let python = "import sys\n\
        print(verify(sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read(), sys.argv[4]))";
    // `node -e CODE a b c d` leaves a, b, c, d in process.argv after node itself.
    let node = "const [secret, ts, path, sig] = process.argv.slice(1);\n\
        console.log(verify(secret, ts, require('fs').readFileSync(path), sig) ? 'True' : 'False');";
    let (body, tampered) = (body.to_str().unwrap(), tampered.to_str().unwrap());
    let mut checked = Vec::new();
    for (lang, program, driver) in [("python", "python3", python), ("javascript", "node", node)] {
        let run = |secret, path| docs_verify(lang, program, driver, [secret, ts, path, sig]);
        let Some(real) = run(SECRET, body) else {
            eprintln!("{program} is not installed: the {lang} snippet was not run");
            continue;
        };
        assert_eq!(real, "True", "{lang}: a real delivery");
        assert_eq!(
            run(SECRET, tampered).unwrap(),
            "False",
            "{lang}: a changed body"
        );
        assert_eq!(
            run("wrong", body).unwrap(),
            "False",
            "{lang}: another secret"
        );
        checked.push(lang);
    }
    assert!(
        checked.contains(&"python"),
        "python3 is on every machine here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_errors_never_crowd_a_client_connected_out_of_the_queue() {
    let (addr, mut requests, release) = held_endpoint().await;
    let mut cfg = config(addr, &[]);
    cfg.queue = 8;
    cfg.timeout = PATIENCE; // The held request is not given up meanwhile.
    let hook = Webhook::new(cfg).unwrap();
    let events = EventHook::new("webhook", EventBus::new().with(hook.clone()), false);
    // A flood of refused visitors while the receiver is down: stream errors.
    let stream = common::stream();
    let refused = std::io::Error::other("visitor refused");
    for _ in 0..100 {
        events.on_error(&ErrorEvent {
            scope: Scope::Stream(&stream),
            error: &refused,
        });
    }
    let h = hook.health();
    assert_eq!(
        (h.dropped, h.dropped_streams),
        (96, 96),
        "half of 8 kept: {h:?}"
    );
    // Another client logs in: its event still finds room.
    let bob = common::client_at(2, "bob", "127.0.0.1:50002".parse().unwrap());
    events.on_open(Scope::Client(&bob));
    assert_eq!(hook.health().dropped, 96, "client.connected was queued");
    release.send(true).unwrap();
    let mut names = Vec::new();
    while !names.contains(&"client.connected".to_owned()) {
        let r = next(&mut requests, "client.connected").await;
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        names.push(body["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        names,
        ["error", "error", "error", "error", "client.connected"]
    );
    let h = health_until(&hook, "5 deliveries", |h| h.delivered == 5).await;
    assert_eq!((h.dropped, h.dropped_streams, h.pending), (96, 96, 0));
}

#[test]
fn only_events_about_a_stream_go_in_the_stream_lane() {
    let (log, bus) = common::EventLog::bus();
    let events = EventHook::new("events", bus, true);
    let stream = common::stream();
    let failed = std::io::Error::other("oops");
    for scope in [
        Scope::Stream(&stream),
        Scope::Tunnel(&stream.tunnel),
        Scope::Client(&stream.tunnel.client),
        Scope::Server,
    ] {
        events.on_error(&ErrorEvent {
            scope,
            error: &failed,
        });
    }
    events.on_open(Scope::Stream(&stream));
    let lanes: Vec<Lane> = log.all().iter().map(|e| e.lane).collect();
    assert_eq!(
        lanes,
        [
            Lane::Stream,
            Lane::Main,
            Lane::Main,
            Lane::Main,
            Lane::Stream
        ]
    );
}
