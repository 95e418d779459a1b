//! The `reitunnel-server` binary with `--config`: a bad file is refused with
//! the line, a good one builds its hook chain, and SIGTERM stops it cleanly
//! with the audit log flushed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_reitunnel-server");

#[test]
fn a_bad_config_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        "token = \"t\"\n[[hooks]]\nkind = \"log\"\n[[hooks]]\nkind = \"telepathy\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4: hook #2: unknown variant `telepathy`, expected one of"),
        "{stderr}"
    );
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
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("REITUNNEL_CLI_TEST_TOKEN", "from-env")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("server started");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("hook chain") && l.contains("\"log\", \"audit\"")),
        "{seen:#?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "exit code 0 after SIGTERM");
    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<&str> = log.lines().collect();
    assert_eq!(events.len(), 2, "{log}");
    assert!(
        events[0].starts_with("{\"event\":\"server.started\"")
            && events[0].contains("\"server\":\"edge-9\"")
    );
    assert!(events[1].starts_with("{\"event\":\"server.stopped\""));
}
