//! `command` hooks running real bash scripts: a notifier gets each event
//! on stdin (the webhook's body and id) and in its variables; gates admit
//! on exit 0 and refuse with the first line of stdout; a port chooser's
//! port comes back; a program that hangs, or forks a child that hangs, is
//! killed at its timeout with its whole process group; a flood of output
//! neither blocks the program nor fills memory; the server's secrets never
//! reach the program.
#![cfg(unix)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reitunnel_hooks::authorize::{Ask, Authorize};
use reitunnel_hooks::builtin::{CommandAsks, CommandConfig, CommandGate, CommandSink, EventHook};
use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::{
    ClientId, ClientInfo, Gate, HookChain, Login, RefuseCode, StreamId, StreamInfo, TunnelId,
    TunnelInfo, TunnelKind,
};
use serde_json::Value;

/// A failure guard for every wait, never a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);

/// `body` as an executable bash script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(program: &Path, timeout: Duration) -> CommandConfig {
    CommandConfig {
        timeout,
        ..CommandConfig::new(vec![program.to_str().unwrap().to_owned()])
    }
}

fn gate(program: &Path, asks: CommandAsks, required: bool) -> CommandGate {
    CommandGate::new(config(program, PATIENCE), asks, required).unwrap()
}

fn alice() -> Arc<ClientInfo> {
    let peer: SocketAddr = "127.0.0.1:40112".parse().unwrap();
    Arc::new(ClientInfo::new(ClientId(1), "alice", peer))
}

fn tunnel(port: u16) -> Arc<TunnelInfo> {
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    let info = TunnelInfo::new(
        TunnelId(7),
        alice(),
        TunnelKind::Reverse,
        bind,
        "127.0.0.1:3000",
    );
    Arc::new(info)
}

/// What a gate answers about alice's login.
async fn login(gate: &CommandGate) -> Gate {
    let (nonce, proof) = ([1u8; 32], [2u8; 32]);
    let login = Login {
        nonce: &nonce,
        proof: &proof,
    };
    let client = alice();
    let ask = Ask::Login {
        client: &client,
        login: &login,
        certificate: None,
    };
    gate.authorize(&ask).await
}

#[tokio::test]
async fn a_notifier_gets_each_event_on_stdin_and_in_its_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events");
    let notify = script(
        dir.path(),
        "notify.sh",
        &format!(
            "{{ echo \"$REITUNNEL_EVENT $REITUNNEL_EVENT_ID $REITUNNEL_CLIENT $REITUNNEL_REMOTE_ADDR\"; cat; echo; }} >> {}\n",
            out.display()
        ),
    );
    let sink = CommandSink::new(CommandConfig {
        events: vec!["client.connected".into()],
        max_concurrent: 1.try_into().unwrap(),
        ..config(&notify, PATIENCE)
    })
    .unwrap();
    let bus = EventBus::new().for_server("edge-1").with(sink.clone());
    let chain = HookChain::builder()
        .hook(EventHook::new("command", bus, false))
        .build();
    let (nonce, proof) = ([0u8; 32], [0u8; 32]);
    let login = Login {
        nonce: &nonce,
        proof: &proof,
    };
    drop(chain.open_client(alice(), &login).unwrap());
    assert!(sink.drain(PATIENCE).await, "the run ended");

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "client.disconnected is not taken: {text}");
    let body: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(body["event"], "client.connected");
    assert_eq!(body["client"], "alice");
    assert_eq!(body["server"], "edge-1");
    let id = body["id"].as_str().expect("the event id");
    assert_eq!(
        lines[0],
        format!("client.connected {id} alice 127.0.0.1:40112")
    );
    let health = sink.health();
    assert_eq!((health.succeeded, health.failed, health.dropped), (1, 0, 0));
    assert!(health.healthy);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_the_events_it_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let quick = script(dir.path(), "quick.sh", "exit 0\n");
    let sink = CommandSink::new(CommandConfig {
        queue: 2,
        ..config(&quick, PATIENCE)
    })
    .unwrap();
    let bus = EventBus::new().with(sink.clone());
    let event = reitunnel_hooks::events::Event::now("tunnel.opened");
    // On this single-threaded runtime nothing runs between the emits: the
    // queue holds two, the other eight are dropped.
    for _ in 0..10 {
        bus.emit(&event);
    }
    assert_eq!(sink.health().dropped, 8);
    assert!(sink.drain(PATIENCE).await);
    let health = sink.health();
    assert_eq!((health.succeeded, health.failed, health.pending), (2, 0, 0));
}

#[tokio::test]
async fn a_gate_admits_on_exit_0_and_refuses_with_the_first_line_of_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "gate.sh",
        r#"body=$(cat)
case "$REITUNNEL_GATE $REITUNNEL_CLIENT" in
  "login alice") [[ "$body" == *'"nonce":"0101'* ]] && exit 0 ;;
  "tunnel alice") echo "tunnels are closed today"; echo "second line"; exit 1 ;;
  "visitor alice") [ "$REITUNNEL_REMOTE_ADDR" = "203.0.113.9:5555" ] && exit 0 ;;
esac
exit 2
"#,
    );
    assert_eq!(
        login(&gate(&program, CommandAsks::Login, true)).await,
        Gate::Allow
    );

    let tunnels = gate(&program, CommandAsks::Tunnel, true);
    let open = tunnel(8080);
    let Gate::Refuse(reason) = tunnels.authorize(&Ask::Tunnel(&open)).await else {
        panic!("refused");
    };
    assert_eq!(reason.message, "tunnels are closed today");
    assert_eq!(reason.code, RefuseCode::Forbidden);
    // A gate answers its own question only.
    assert_eq!(login(&tunnels).await, Gate::Allow);

    let visitors = gate(&program, CommandAsks::Visitor, true);
    assert!(visitors.asks_streams());
    let visitor = StreamInfo::new(
        StreamId(1),
        open.clone(),
        "203.0.113.9:5555".parse().unwrap(),
    );
    assert_eq!(
        visitors.authorize(&Ask::Stream(&visitor)).await,
        Gate::Allow
    );

    // An exit without a line says which gate refused.
    let silent = script(dir.path(), "silent.sh", "exit 1\n");
    let Gate::Refuse(reason) = login(&gate(&silent, CommandAsks::Login, true)).await else {
        panic!("refused");
    };
    assert_eq!(
        reason.code,
        RefuseCode::AuthFailed,
        "a refused login is a failed one"
    );
    assert!(
        reason.message.contains("refused by the login gate"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_port_chooser_gives_the_port_it_prints_and_leaves_the_rest_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let chooser = script(
        dir.path(),
        "port.sh",
        r#"[ "$REITUNNEL_GATE" = port ] && [ "$REITUNNEL_TUNNEL" = 7 ] || exit 1
echo 23456
"#,
    );
    let picks = gate(&chooser, CommandAsks::Port, true);
    assert!(picks.chooses_ports());
    assert_eq!(picks.choose_port(&tunnel(0)).await, Some(23456));
    assert_eq!(
        picks.authorize(&Ask::Tunnel(&tunnel(0))).await,
        Gate::Allow,
        "no gate"
    );
    let declines = script(dir.path(), "declines.sh", "echo 23456; exit 1\n");
    let declines = gate(&declines, CommandAsks::Port, true);
    assert_eq!(declines.choose_port(&tunnel(0)).await, None);
    let babbles = script(dir.path(), "babbles.sh", "echo any port will do\n");
    assert_eq!(
        gate(&babbles, CommandAsks::Port, true)
            .choose_port(&tunnel(0))
            .await,
        None
    );
}

/// Whether process `pid` is gone or dead (a zombie waiting for its reaper).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Whether process `pid` is gone altogether: reaped by its parent.
fn reaped(pid: &str) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded) for process `pid` to be dead: SIGKILL takes effect as
/// the process is next scheduled, not as `killpg` returns.
fn wait_dead(pid: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !dead(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn a_program_that_hangs_is_killed_at_its_timeout_with_the_child_it_forked() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let hangs = script(
        dir.path(),
        "hangs.sh",
        &format!(
            "sleep 1000 &\necho \"$$ $!\" > {}.tmp && mv {0}.tmp {0}\nwait\n",
            pids.display()
        ),
    );
    let timeout = Duration::from_secs(3);
    let required = CommandGate::new(config(&hangs, timeout), CommandAsks::Login, true).unwrap();
    let Gate::Refuse(reason) = login(&required).await else {
        panic!("a hanging gate refuses");
    };
    assert_eq!(reason.code, RefuseCode::Unavailable);
    assert!(
        reason.message.contains("login gate's program failed"),
        "{reason}"
    );
    let written = std::fs::read_to_string(&pids).expect("the script ran up to its wait");
    let (script_pid, child_pid) = written.trim().split_once(' ').unwrap();
    wait_dead(child_pid);
    assert!(
        reaped(script_pid),
        "the script was reaped before the gate answered"
    );

    std::fs::remove_file(&pids).unwrap();
    let optional = CommandGate::new(config(&hangs, timeout), CommandAsks::Login, false).unwrap();
    assert_eq!(
        login(&optional).await,
        Gate::Allow,
        "required = false admits"
    );
    let written = std::fs::read_to_string(&pids).unwrap();
    wait_dead(written.trim().split_once(' ').unwrap().1);
}

#[tokio::test]
async fn what_a_program_leaves_running_dies_when_it_exits_and_does_not_hold_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    // The child keeps the script's stdout: the answer must not wait for it.
    let leaves = script(
        dir.path(),
        "leaves.sh",
        &format!("sleep 1000 &\necho $! > {}\nexit 0\n", pid.display()),
    );
    assert_eq!(
        login(&gate(&leaves, CommandAsks::Login, true)).await,
        Gate::Allow
    );
    wait_dead(std::fs::read_to_string(&pid).unwrap().trim());
}

#[tokio::test]
async fn a_program_that_crashes_refuses_unless_not_required() {
    let dir = tempfile::tempdir().unwrap();
    let crashes = script(dir.path(), "crashes.sh", "echo admitted; kill -SEGV $$\n");
    let Gate::Refuse(reason) = login(&gate(&crashes, CommandAsks::Login, true)).await else {
        panic!("a crash refuses");
    };
    assert_eq!(reason.code, RefuseCode::Unavailable, "{reason}");
    assert_eq!(
        login(&gate(&crashes, CommandAsks::Login, false)).await,
        Gate::Allow
    );
    let missing = gate(&dir.path().join("missing.sh"), CommandAsks::Login, true);
    assert!(matches!(login(&missing).await, Gate::Refuse(_)));
}

#[tokio::test]
async fn a_flood_of_output_neither_blocks_the_program_nor_fills_memory() {
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB on each stream, far more than any pipe holds, then a verdict.
    let floods = script(
        dir.path(),
        "floods.sh",
        "yes 'no entry' | head -c 16777216\nyes | head -c 16777216 >&2\nexit 1\n",
    );
    let Gate::Refuse(reason) = login(&gate(&floods, CommandAsks::Login, true)).await else {
        panic!("exit 1 refuses");
    };
    assert_eq!(reason.code, RefuseCode::AuthFailed, "it exited by itself");
    assert_eq!(reason.message, "no entry");
}

#[tokio::test]
async fn the_servers_secrets_never_reach_the_program_only_what_env_names() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("REITUNNEL_TOKEN", "server-token-secret");
    std::env::set_var("COMMAND_TEST_SECRET", "made-up-secret");
    std::env::set_var("COMMAND_TEST_PASSED", "handed-on");
    let out = dir.path().join("env");
    let dump_to_file = script(
        dir.path(),
        "env-to-file.sh",
        &format!("env > {}\n", out.display()),
    );
    let passes = CommandGate::new(
        CommandConfig {
            env: vec!["COMMAND_TEST_PASSED".into()],
            ..config(&dump_to_file, PATIENCE)
        },
        CommandAsks::Login,
        true,
    )
    .unwrap();
    assert_eq!(login(&passes).await, Gate::Allow);
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(!env.contains("secret"), "{env}");
    assert!(env.contains("COMMAND_TEST_PASSED=handed-on"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(env.contains("REITUNNEL_CLIENT=alice"), "{env}");
}

#[tokio::test]
async fn a_wait_given_up_kills_the_program_with_its_child_and_reaps_it() {
    let dir = tempfile::tempdir().unwrap();
    let started = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = started.local_addr().unwrap().port();
    let hangs = script(
        dir.path(),
        "hangs.sh",
        &format!("sleep 1000 &\necho \"$$ $!\" > /dev/tcp/127.0.0.1/{port}\nwait\n"),
    );
    let gate = gate(&hangs, CommandAsks::Login, true);
    // Boxed, so that dropping it drops the run.
    let mut asked = Box::pin(login(&gate));
    let pids = tokio::select! {
        answer = &mut asked => panic!("a hanging gate answered: {answer:?}"),
        pids = async {
            let (mut conn, _) = started.accept().await.unwrap();
            let mut pids = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut pids).await.unwrap();
            pids
        } => pids,
    };
    // As the server's handshake timeout gives up on a gate.
    drop(asked);
    let (script_pid, child_pid) = pids.trim().split_once(' ').unwrap();
    wait_dead(child_pid);
    // tokio reaps a dropped child (`kill_on_drop`) once it has died.
    let deadline = Instant::now() + PATIENCE;
    while !reaped(script_pid) {
        assert!(
            Instant::now() < deadline,
            "the script {script_pid} was never reaped"
        );
        tokio::task::yield_now().await;
    }
}
