//! `HttpAuth` against a real HTTP/1.1 service on 127.0.0.1 that counts the
//! connections it accepts: questions asked together reuse kept-alive
//! connections, never more than `max_concurrent` at once; identical
//! questions asked together share one request; a question past the cap
//! waits within its deadline, then fails as `on_failure` says; the URL's
//! secret path stays out of `Debug` and refusals.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::tunnel_to;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reitunnel_hooks::authorize::{Ask, AuthFuture, Authorize};
use reitunnel_hooks::builtin::{HttpAuth, HttpAuthConfig, OnFailure};
use reitunnel_hooks::{Gate, RefuseCode, TunnelInfo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Long enough never to be the reason a question fails here.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the service saw.
#[derive(Default)]
struct Seen {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Connections open now, and the most open at once.
    open: AtomicUsize,
    most_open: AtomicUsize,
    /// Every request's body, in arrival order.
    bodies: Mutex<Vec<String>>,
}

impl Seen {
    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_open.fetch_max(open, Ordering::SeqCst);
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// The authorization service: allows everything, holding every answer
/// until `hold_until` requests have arrived or [`Service::release`].
struct Service {
    addr: SocketAddr,
    seen: Arc<Seen>,
    release: Arc<watch::Sender<bool>>,
}

impl Service {
    async fn start(hold_until: usize) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let release = Arc::new(watch::Sender::new(false));
        let (s, r) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.opened();
                tokio::spawn(serve(stream, s.clone(), r.clone(), hold_until));
            }
        });
        Service {
            addr,
            seen,
            release,
        }
    }

    fn release(&self) {
        self.release.send_replace(true);
    }

    fn url(&self) -> String {
        format!("http://{}/authorize/s3cr3t-path", self.addr)
    }
}

/// Serves one kept-alive connection.
async fn serve(
    stream: tokio::net::TcpStream,
    seen: Arc<Seen>,
    release: Arc<watch::Sender<bool>>,
    hold_until: usize,
) {
    let s = seen.clone();
    let answer = service_fn(move |request: Request<Incoming>| {
        let (seen, release) = (s.clone(), release.clone());
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let arrived = {
                let mut bodies = seen.bodies.lock().unwrap();
                bodies.push(String::from_utf8_lossy(&body).into_owned());
                bodies.len()
            };
            if arrived >= hold_until {
                release.send_replace(true);
            }
            let _ = release.subscribe().wait_for(|released| *released).await;
            let allow = Full::new(Bytes::from_static(br#"{"allow":true}"#));
            Ok::<_, Infallible>(Response::new(allow))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), answer)
        .await;
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

fn gate(service: &Service, max: usize, tweak: impl FnOnce(&mut HttpAuthConfig)) -> HttpAuth {
    let mut config = HttpAuthConfig::new(service.url());
    config.timeout = PATIENCE;
    tweak(&mut config);
    HttpAuth::new(config)
        .unwrap()
        .with_max_concurrent(NonZeroUsize::new(max).unwrap())
}

/// Polls every question once, in order: each has started (or joined) its
/// request before the next is asked.
async fn start_each(questions: &mut [AuthFuture<'_>]) {
    std::future::poll_fn(|cx| {
        for question in questions.iter_mut() {
            assert!(question.as_mut().poll(cx).is_pending(), "answered early");
        }
        Poll::Ready(())
    })
    .await;
}

/// Runs every question at once, as the server's tasks would, to the end.
async fn answers(mut questions: Vec<AuthFuture<'_>>) -> Vec<Gate> {
    let mut gates: Vec<Option<Gate>> = questions.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (question, gate) in questions.iter_mut().zip(&mut gates) {
            if gate.is_none() {
                if let Poll::Ready(answer) = question.as_mut().poll(cx) {
                    *gate = Some(answer);
                }
            }
        }
        match gates.iter().all(Option::is_some) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await;
    gates.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_questions_asked_together_share_one_request() {
    let service = Service::start(usize::MAX).await;
    let gate = gate(&service, 16, |_| {});
    let wanted = tunnel_to("db.internal:5432");
    let ask = Ask::Tunnel(&wanted);
    let mut questions: Vec<_> = (0..300).map(|_| gate.authorize(&ask)).collect();
    start_each(&mut questions).await;
    service.release();
    let gates = answers(questions).await;
    assert!(gates.iter().all(|g| *g == Gate::Allow), "{gates:?}");
    assert_eq!(
        service.seen.bodies().len(),
        1,
        "one request for 300 questions"
    );
    assert_eq!(service.seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_questions_share_at_most_max_concurrent_kept_connections() {
    const MAX: usize = 4;
    // Answers wait until MAX questions are in at once: the cap is reached.
    let service = Service::start(MAX).await;
    let gate = gate(&service, MAX, |_| {});
    let tunnels: Vec<TunnelInfo> = (0..300)
        .map(|n| tunnel_to(&format!("host-{n}.internal:80")))
        .collect();
    let asks: Vec<Ask<'_>> = tunnels.iter().map(Ask::Tunnel).collect();
    let gates = answers(asks.iter().map(|a| gate.authorize(a)).collect()).await;
    assert!(gates.iter().all(|g| *g == Gate::Allow), "{gates:?}");
    let seen = &service.seen;
    assert_eq!(seen.bodies().len(), 300, "each question asked once");
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        MAX,
        "MAX connections, each kept and used again"
    );
    assert!(seen.most_open.load(Ordering::SeqCst) <= MAX);
}

/// One question holds the only connection (its service never answers);
/// what a second one gets.
async fn past_the_cap(on_failure: OnFailure) -> Gate {
    let service = Service::start(usize::MAX).await;
    let gate = gate(&service, 1, |c| {
        c.timeout = Duration::from_millis(200);
        c.on_failure = on_failure;
    });
    let (first, second) = (
        tunnel_to("first.internal:1"),
        tunnel_to("second.internal:1"),
    );
    let first = Ask::Tunnel(&first);
    let mut holding = [gate.authorize(&first)];
    // Started and left unpolled: it keeps the one connection however long.
    start_each(&mut holding).await;
    let answer = gate.authorize(&Ask::Tunnel(&second)).await;
    let seen = &service.seen;
    assert!(seen.accepted.load(Ordering::SeqCst) <= 1, "one connection");
    assert!(
        !seen.bodies().iter().any(|b| b.contains("second.internal")),
        "the second never reached the service"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_past_the_cap_waits_within_its_deadline_then_fails_closed() {
    let Gate::Refuse(reason) = past_the_cap(OnFailure::Deny).await else {
        panic!("refused, failing closed");
    };
    assert_eq!(reason.code, RefuseCode::Unavailable);
    assert!(
        reason.message.contains("no answer within 200ms"),
        "{}",
        reason.message
    );
    assert!(!reason.message.contains("s3cr3t"), "{}", reason.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_past_the_cap_is_let_in_when_failing_open() {
    assert_eq!(past_the_cap(OnFailure::Allow).await, Gate::Allow);
}

#[test]
fn the_debug_of_its_config_hides_the_urls_path() {
    let config = HttpAuthConfig::new("https://auth.example.com/authorize/s3cr3t-path");
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("\"https://auth.example.com:443\""),
        "{shown}"
    );
}
