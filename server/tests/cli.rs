//! The `reitunnel-server` binary with `--config`: a bad file is refused with
//! the line, a good one builds its hook chain, and SIGTERM stops it cleanly
//! with the audit log flushed.

mod common;

use std::process::Command;

use common::{start, BIN};

/// Runs the server with `config` as its file; it must refuse to start. Returns stderr.
fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started with {config:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_config_is_refused_naming_the_line() {
    let stderr =
        refused("token = \"t\"\n[[hooks]]\nkind = \"log\"\n[[hooks]]\nkind = \"telepathy\"\n");
    assert!(
        stderr.contains("line 4: hook #2: unknown variant `telepathy`, expected one of"),
        "{stderr}"
    );
    // A failed check names the line of its key, through the binary too.
    let stderr =
        refused("token = \"t\"\n[[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\nperiod_secs = 0\n");
    assert!(
        stderr.contains("line 5: hook #1: quota: period_secs must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn a_metrics_hook_without_an_endpoint_is_refused() {
    for hooks in [
        "[[hooks]]\nkind = \"metrics\"\n",
        "[[hooks]]\nkind = \"sampled\"\none_in = 4\nhook = { kind = \"metrics\" }\n",
    ] {
        let stderr = refused(&format!("token = \"t\"\n{hooks}"));
        assert!(
            stderr.contains("the `metrics` hook needs `metrics_listen`"),
            "{hooks}: {stderr}"
        );
    }
}

#[test]
fn a_config_file_runs_the_server_and_sigterm_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"${{REITUNNEL_CLI_TEST_TOKEN}}\"\nname = \"edge-9\"\n\
             [[hooks]]\nkind = \"log\"\n[[hooks]]\nkind = \"audit\"\npath = \"{}\"\n",
            audit.display()
        ),
    )
    .unwrap();
    std::env::set_var("REITUNNEL_CLI_TEST_TOKEN", "from-env");
    let (child, _, seen) = start(&["--config", path.to_str().unwrap()]);
    assert!(
        seen.iter()
            .any(|l| l.contains("hook chain") && l.contains("\"log\", \"audit\"")),
        "{seen:#?}"
    );
    assert!(child.stop().success(), "exit code 0 after SIGTERM");
    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<&str> = log.lines().collect();
    assert_eq!(events.len(), 2, "{log}");
    assert!(
        events[0].starts_with("{\"event\":\"server.started\"")
            && events[0].contains("\"server\":\"edge-9\"")
    );
    assert!(events[1].starts_with("{\"event\":\"server.stopped\""));
}

#[test]
fn metrics_endpoint_counts_what_the_server_saw() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let (child, control, _) = start(&[
        "--token",
        "t",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &metrics,
    ]);

    // Something that is not a Reitunnel client: the server answers with its
    // preamble, hangs up, and counts a server-scope error.
    let mut raw = std::net::TcpStream::connect(control).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert!(sink.starts_with(b"RTUN"), "{sink:?}");

    let mut http = std::net::TcpStream::connect(&metrics).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("reitunnel_errors_total{scope=\"server\"} 1"),
        "{body}"
    );

    assert!(child.stop().success(), "exit code 0 after SIGTERM");
}

#[test]
fn hook_flags_add_hooks_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (child, _, seen) = start(&[
        "--token",
        "t",
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        "10MiB",
        "--quota",
        "1GiB",
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    assert!(
        seen.iter().any(|l| l.contains("hook chain")
            && l.contains("[\"rate_limit\", \"quota\", \"audit\", \"counters\"]")),
        "{seen:#?}"
    );
    assert!(child.stop().success(), "exit code 0 after SIGTERM");
    let log = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
}
