//! The library's `Supervisor`, in-process: it opens the tunnels asked
//! for, applies a reloaded list to the running session (closing what is
//! gone, opening what is new, keeping the rest), logs in again after the
//! server went away with each tunnel on the port it had (on the next server
//! of its list, if it has several), and returns on the stop signal. A
//! login refused for now (server full, too many failed logins, a limit,
//! shutting down) is retried, waiting what the server asks; one refused
//! for good (wrong token, a ban) ends the run, reported.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client_config, connect, echo_check, Ev, Recorder, TestServer, PATIENCE};
use reitunnel_client::{Client, ClientError, Kind, RemoteSpec, Report, Supervised, Supervisor};
use reitunnel_hooks::builtin::Secret;
use reitunnel_hooks::{ClientInfo, Gate, Hook, HookChain, Login, Reason, RefuseCode};
use reitunnel_program::{SignalSender, Signals};
use reitunnel_testkit::echo_service;
use reitunnel_testkit::within;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a report said, owned, to send out of the callback.
#[derive(Debug, PartialEq)]
enum Seen {
    Ready(Kind, SocketAddr, String),
    Closed(Kind, SocketAddr, String),
    Failed(String),
    /// Logging in again in `wait`, after `why`.
    Retrying {
        why: Why,
        wait: Duration,
    },
    /// No more attempts, after `why`.
    GaveUp(Why),
}

/// What ended a connection or a login, as far as retrying goes.
#[derive(Debug, PartialEq)]
enum Why {
    /// The login was refused with this code; the wait the server asked for.
    Refused(RefuseCode, Option<Duration>),
    /// The server said goodbye with this code.
    Goodbye(RefuseCode),
    /// Anything else: the connection refused or lost.
    Lost,
}

impl Why {
    fn of(error: &ClientError) -> Why {
        match error {
            ClientError::LoginRefused { code, .. } => Why::Refused(*code, error.retry_after()),
            ClientError::ServerGoodbye { code, .. } => Why::Goodbye(*code),
            _ => Why::Lost,
        }
    }
}

fn seen(report: Report) -> Seen {
    match report {
        Report::Ready { kind, ready, .. } => {
            Seen::Ready(kind, ready.public_addr, ready.target.clone())
        }
        Report::Closed { kind, ready, .. } => {
            Seen::Closed(kind, ready.public_addr, ready.target.clone())
        }
        Report::Failed { error, .. } => Seen::Failed(error.to_string()),
        Report::Reconnecting { error, wait, .. } => Seen::Retrying {
            why: Why::of(error),
            wait,
        },
        Report::GaveUp { error } => Seen::GaveUp(Why::of(error)),
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within(PATIENCE, "the next report", seen.recv())
        .await
        .expect("supervisor gone")
}

/// The next report other than a retry after a lost connection (a server
/// that is away is retried as often as the backoff says).
async fn next_but_lost(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    loop {
        match next(seen).await {
            Seen::Retrying { why: Why::Lost, .. } => continue,
            other => return other,
        }
    }
}

/// Checks that `seen` is a retry after the server closed the session
/// saying `code`. The close may outrun its goodbye (seen under load: the
/// session then ends as lost), which is retried just the same.
fn retrying_after_goodbye(seen: Seen, code: RefuseCode) {
    match seen {
        Seen::Retrying {
            why: Why::Goodbye(c),
            ..
        } if c == code => {}
        Seen::Retrying { why: Why::Lost, .. } => {}
        other => panic!("not a retry after a goodbye {code:?}: {other:?}"),
    }
}

fn remote(target: SocketAddr) -> RemoteSpec {
    format!("0:{target}").parse().unwrap()
}

/// One reverse tunnel to `target` through `server` as `name`, retried at
/// most `reconnect_max` apart.
fn one_tunnel(
    server: SocketAddr,
    name: &str,
    target: SocketAddr,
    reconnect_max: Duration,
) -> Supervised {
    Supervised {
        client: client_config(server, name),
        remote: vec![remote(target)],
        local: Vec::new(),
        drain: Duration::from_secs(5),
        reconnect_max,
    }
}

/// A supervisor of `settings` running on its own task, its reports
/// arriving as [`Seen`], its signals sent by hand.
struct Running {
    run: JoinHandle<Result<(), ClientError>>,
    reports: mpsc::UnboundedReceiver<Seen>,
    send: SignalSender,
}

fn supervise(
    settings: Supervised,
    reload: impl FnMut() -> Result<Supervised, String> + Send + 'static,
) -> Running {
    let (signals, send) = Signals::by_hand();
    let (tx, reports) = mpsc::unbounded_channel();
    let run = tokio::spawn(Supervisor::new(settings, HookChain::default()).run(
        signals,
        reload,
        move |r| {
            let _ = tx.send(seen(r));
        },
    ));
    Running { run, reports, send }
}

fn no_reload() -> Result<Supervised, String> {
    Err("no reload".to_owned())
}

impl Running {
    /// Waits for the supervisor to end on its own, and its result.
    async fn ended(self) -> Result<(), ClientError> {
        within(PATIENCE, "the supervisor to end", self.run)
            .await
            .unwrap()
    }

    /// Stops it and checks it ended well.
    async fn stop(self) {
        self.send.stop();
        self.ended().await.expect("a clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_tunnels_open_over_reloads_and_a_server_restart() {
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let (first, second) = (echo_service().await, echo_service().await);
    let settings = one_tunnel(server.addr, "supervised", first, Duration::from_millis(200));
    // What the next reload reads, as a config file would be.
    let next_settings = Arc::new(Mutex::new(settings.clone()));
    let reload = {
        let next_settings = next_settings.clone();
        move || Ok(next_settings.lock().unwrap().clone())
    };
    let mut running = supervise(settings, reload);
    let (reports, send) = (&mut running.reports, &running.send);

    let Seen::Ready(Kind::Reverse, public, target) = next(reports).await else {
        panic!("first report is not a ready tunnel");
    };
    assert_eq!(target, first.to_string());
    assert_eq!(echo_check(public, 256 << 10, 1).await, 256 << 10);

    // A reload that keeps the first tunnel and adds a second.
    next_settings.lock().unwrap().remote.push(remote(second));
    send.reload();
    let Seen::Ready(Kind::Reverse, public2, target2) = next(reports).await else {
        panic!("the added tunnel did not open");
    };
    assert_eq!(target2, second.to_string());
    assert_eq!(echo_check(public2, 64 << 10, 2).await, 64 << 10);
    assert_eq!(echo_check(public, 64 << 10, 3).await, 64 << 10);

    // A reload that drops the first: it closes, the second is untouched.
    next_settings.lock().unwrap().remote.remove(0);
    send.reload();
    assert_eq!(
        next(reports).await,
        Seen::Closed(Kind::Reverse, public, first.to_string())
    );

    // The server shuts down (saying so) and comes back on the same
    // address: the supervisor logs in again and reopens the tunnel on its port.
    let addr = server.addr;
    server.stop().await;
    retrying_after_goodbye(next(reports).await, RefuseCode::ShuttingDown);
    let server = TestServer::start(HookChain::default(), |cfg| cfg.listen = addr).await;
    assert_eq!(
        next_but_lost(reports).await,
        Seen::Ready(Kind::Reverse, public2, second.to_string())
    );
    assert_eq!(echo_check(public2, 64 << 10, 4).await, 64 << 10);

    running.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_final() {
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let mut settings = one_tunnel(
        server.addr,
        "supervised",
        echo_service().await,
        Duration::from_secs(30),
    );
    settings.client.token = Secret::new("wrong");
    let mut running = supervise(settings, no_reload);
    assert_eq!(
        next(&mut running.reports).await,
        Seen::GaveUp(Why::Refused(RefuseCode::AuthFailed, None))
    );
    let error = running
        .ended()
        .await
        .expect_err("a wrong token was retried");
    assert!(error.to_string().contains("refused"), "{error}");
    server.stop().await;
}

/// Kicked with a ban, the client tries once more (a kick alone is no
/// reason to stay away), is refused for the ban, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_name_is_final() {
    let server = TestServer::start(HookChain::default(), |_| {}).await;
    let echo = echo_service().await;
    let settings = one_tunnel(server.addr, "banned", echo, Duration::from_millis(200));
    let mut running = supervise(settings, no_reload);
    assert!(matches!(next(&mut running.reports).await, Seen::Ready(..)));

    let an_hour = Some(Duration::from_secs(3600));
    server.admin.kick("banned", an_hour, "test").unwrap();
    retrying_after_goodbye(next(&mut running.reports).await, RefuseCode::Forbidden);
    assert_eq!(
        next_but_lost(&mut running.reports).await,
        Seen::GaveUp(Why::Refused(RefuseCode::Forbidden, None))
    );
    let error = running.ended().await.expect_err("a ban was retried");
    assert!(error.to_string().contains("banned"), "{error}");
    server.stop().await;
}

/// A ban is told only to a client whose credentials pass: anyone else
/// hears that its token was refused, and learns nothing of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_is_told_only_after_the_token_passes() {
    let rec = Recorder::new();
    let server = TestServer::start(HookChain::builder().shared(rec.clone()).build(), |_| {}).await;
    server
        .admin
        .kick("banned", Some(Duration::from_secs(3600)), "test")
        .unwrap();
    let mut guess = client_config(server.addr, "banned");
    guess.token = Secret::new("a guess");
    let error = Client::connect(guess, HookChain::default())
        .await
        .err()
        .expect("a wrong token got in");
    let error = error.to_string();
    assert!(
        error.contains("token refused") && !error.contains("banned"),
        "{error}"
    );
    let error = Client::connect(client_config(server.addr, "banned"), HookChain::default())
        .await
        .err()
        .expect("a banned name got in");
    assert!(
        error
            .to_string()
            .contains("client 'banned' is banned by an operator"),
        "{error}"
    );
    server.stop().await;
    // Every hook heard both refusals; none saw the banned client connect.
    let events = rec.events();
    let banned = events.iter().filter(|e| {
        matches!(e, Ev::Rejected { reason, .. } if reason.starts_with("client 'banned' is banned"))
    });
    assert_eq!(banned.count(), 1, "{events:#?}");
    assert!(!events.iter().any(|e| matches!(e, Ev::Connect(..))));
}

/// An address blocked for failed logins is told how long the block lasts;
/// the supervisor waits that long (its own first login included), then gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failed_logins_are_waited_out() {
    // A failure every 3 s refills the allowance: the block lasts 3 s at most.
    let server = TestServer::start(HookChain::default(), |c| {
        c.limits.failed_logins_per_minute = 20
    })
    .await;
    // Wrong tokens from this address until it is blocked.
    let mut blocked = false;
    for _ in 0..100 {
        let mut cfg = client_config(server.addr, "guesser");
        cfg.token = Secret::new("wrong");
        let err = Client::connect(cfg, HookChain::default()).await.err();
        if let Some(ClientError::LoginRefused {
            code: RefuseCode::LimitReached,
            ..
        }) = err
        {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "100 wrong tokens and no block");

    let settings = one_tunnel(
        server.addr,
        "patient",
        echo_service().await,
        Duration::from_secs(10),
    );
    let mut running = supervise(settings, no_reload);
    let Seen::Retrying {
        why: Why::Refused(RefuseCode::LimitReached, Some(asked)),
        wait,
    } = next(&mut running.reports).await
    else {
        panic!("the blocked login was not retried with the server's hint");
    };
    assert!(wait >= asked, "waits {wait:?}, the server asked {asked:?}");
    assert!(matches!(
        next(&mut running.reports).await,
        Seen::Ready(Kind::Reverse, ..)
    ));
    running.stop().await;
    server.stop().await;
}

/// `max_clients` reached: the supervisor's first login is refused, and
/// retried until the client holding the only slot leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_is_waited_for() {
    let server = TestServer::start(HookChain::default(), |c| c.limits.max_clients = 1).await;
    let occupant = connect(server.addr, "occupant").await;
    let echo = echo_service().await;
    let settings = one_tunnel(server.addr, "next", echo, Duration::from_millis(200));
    let mut running = supervise(settings, no_reload);
    assert!(matches!(
        next(&mut running.reports).await,
        Seen::Retrying {
            why: Why::Refused(RefuseCode::Unavailable, None),
            ..
        }
    ));
    occupant.shutdown().await.unwrap();
    loop {
        match next(&mut running.reports).await {
            // Refused again until the server has let the occupant go.
            Seen::Retrying {
                why: Why::Refused(RefuseCode::Unavailable, None),
                ..
            } => continue,
            Seen::Ready(_, public, _) => {
                assert_eq!(echo_check(public, 1024, 1).await, 1024);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    running.stop().await;
    server.stop().await;
}

/// A login gate that refuses the second login with `code` and admits
/// every other: what a server whose limit, drain or policy says no
/// answers to a client coming back.
struct SecondLoginRefused {
    code: RefuseCode,
    logins: AtomicUsize,
}

impl Hook for SecondLoginRefused {
    fn name(&self) -> &str {
        "second_login_refused"
    }
    fn wants_data(&self) -> bool {
        false
    }
    fn on_client_connect(&self, _: &ClientInfo, _: &Login<'_>) -> Gate {
        match self.logins.fetch_add(1, Ordering::SeqCst) {
            1 => Gate::Refuse(Reason::new(self.code, format!("{:?} for now", self.code))),
            _ => Gate::Allow,
        }
    }
}

/// Every refusal code, told to a client that was logged in (kicked, it
/// comes back): the codes that pass are retried until the login works;
/// the rest, and a code this client does not know, end the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_code_is_final_or_retried() {
    let echo = echo_service().await;
    let temporary = [
        RefuseCode::LimitReached,
        RefuseCode::Unavailable,
        RefuseCode::ShuttingDown,
    ];
    let all = [
        RefuseCode::Other,
        RefuseCode::AuthFailed,
        RefuseCode::Forbidden,
        RefuseCode::LimitReached,
        RefuseCode::Unavailable,
        RefuseCode::BadRequest,
        RefuseCode::ShuttingDown,
    ];
    for code in all {
        let gate = SecondLoginRefused {
            code,
            logins: AtomicUsize::new(0),
        };
        let rec = Recorder::new();
        let chain = HookChain::builder().hook(gate).shared(rec.clone()).build();
        let server = TestServer::start(chain, |_| {}).await;
        let settings = one_tunnel(server.addr, "comeback", echo, Duration::from_millis(200));
        let mut running = supervise(settings, no_reload);
        let reports = &mut running.reports;
        assert!(matches!(next(reports).await, Seen::Ready(..)), "{code:?}");
        server.admin.kick("comeback", None, "test").unwrap();
        retrying_after_goodbye(next(reports).await, RefuseCode::Forbidden);
        if temporary.contains(&code) {
            assert!(
                matches!(next(reports).await, Seen::Retrying { why: Why::Refused(c, None), .. } if c == code),
                "{code:?}"
            );
            assert!(matches!(next(reports).await, Seen::Ready(..)), "{code:?}");
            running.stop().await;
        } else {
            assert_eq!(
                next(reports).await,
                Seen::GaveUp(Why::Refused(code, None)),
                "{code:?}"
            );
            running.ended().await.expect_err("a final refusal");
        }
        // The second login was the one refused, by the gate.
        rec.wait_for("the refusal", |e| {
            e.iter()
                .any(|e| matches!(e, Ev::Rejected { by, .. } if by == "second_login_refused"))
        })
        .await;
        server.stop().await;
    }
}

/// A listener on `addr` that never accepts: a connection to it waits in
/// its backlog, where [`untouched`] looks.
fn trap(addr: SocketAddr) -> std::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    // Non-blocking, as tokio left it.
    socket.listen(16).unwrap().into_std().unwrap()
}

/// Whether no connection reached `trap`.
fn untouched(trap: &std::net::TcpListener) -> bool {
    matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A fleet of two: the supervisor logs in to one; when that one stops, the
/// next login goes to the other at once (the stopped one's address, where
/// a listener now waits, is not tried again first), and the tunnel works
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_is_followed_by_the_next_in_the_list() {
    let echo = echo_service().await;
    let mut fleet = Vec::new();
    for _ in 0..2 {
        let rec = Recorder::new();
        let chain = HookChain::builder().shared(rec.clone()).build();
        fleet.push((TestServer::start(chain, |_| {}).await, rec));
    }
    let list = format!("{},{}", fleet[0].0.addr, fleet[1].0.addr);
    let mut settings = one_tunnel(fleet[0].0.addr, "roamer", echo, Duration::from_millis(200));
    settings.client.server = list;
    let mut running = supervise(settings, no_reload);
    let reports = &mut running.reports;
    let Seen::Ready(Kind::Reverse, public, _) = next(reports).await else {
        panic!("the tunnel did not open");
    };
    assert_eq!(echo_check(public, 256 << 10, 1).await, 256 << 10);

    let logged_in = |rec: &Recorder| {
        rec.events()
            .iter()
            .any(|e| matches!(e, Ev::Connect(_, name) if name == "roamer"))
    };
    let at = fleet.iter().position(|(_, rec)| logged_in(rec));
    let (lost, _) = fleet.remove(at.expect("logged in to neither server"));
    let (other, other_rec) = fleet.pop().unwrap();
    assert!(!logged_in(&other_rec), "logged in to both servers");
    let lost_addr = lost.addr;
    lost.stop().await;
    let trap = trap(lost_addr);
    retrying_after_goodbye(next(reports).await, RefuseCode::ShuttingDown);
    let Seen::Ready(Kind::Reverse, public, _) = next_but_lost(reports).await else {
        panic!("the tunnel did not open on the other server");
    };
    assert!(logged_in(&other_rec), "not logged in to the other server");
    assert_eq!(echo_check(public, 256 << 10, 2).await, 256 << 10);
    assert!(
        untouched(&trap),
        "the lost server was tried before the next"
    );

    running.stop().await;
    other.stop().await;
}
