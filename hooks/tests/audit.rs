//! The audit sink on its own: lines append, `server.stopped` flushes
//! synchronously, and every line is one JSON object with the event's fields.

mod common;

use std::path::PathBuf;

use common::{addr, client_at, open_client, server_info};
use reitunnel_hooks::builtin::{EventHook, JsonLinesFile};
use reitunnel_hooks::events::{Event, EventBus, EventSink};
use reitunnel_hooks::{CloseReason, HookChain};

/// A fresh path in the temp dir, removed when dropped.
struct TempPath(PathBuf);
impl TempPath {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TempPath(std::env::temp_dir().join(format!(
            "reitunnel-audit-{tag}-{}-{nanos}.jsonl",
            std::process::id()
        )))
    }
}
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn lines(path: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn lines_append_and_flush_makes_them_visible() {
    let path = TempPath::new("append");
    std::fs::write(&path.0, "{\"event\":\"earlier\"}\n").unwrap();
    let sink = JsonLinesFile::open(&path.0, 16).unwrap();
    for n in 0..5u64 {
        sink.emit(&Event::now("quota.exceeded").with("n", n));
    }
    sink.flush().unwrap();
    let got = lines(&path.0);
    assert_eq!(got.len(), 6, "appended after the existing line");
    assert_eq!(got[0]["event"], "earlier");
    for (n, e) in got[1..].iter().enumerate() {
        assert_eq!(e["event"], "quota.exceeded");
        assert_eq!(e["n"], n as u64);
    }
    assert_eq!(sink.dropped(), 0);
}

#[test]
fn the_event_hook_logs_a_session_and_server_stopped_flushes() {
    let path = TempPath::new("session");
    let sink = JsonLinesFile::open(&path.0, 1024).unwrap();
    let chain = HookChain::builder()
        .hook(EventHook::new(
            "audit",
            EventBus::new().for_server("edge").with(sink),
            false,
        ))
        .build();
    let server = server_info();
    chain.server_start(&server).unwrap();
    let alice = client_at(7, "alice", addr(1234));
    let open = open_client(&chain, alice).unwrap();
    open.close(CloseReason::ConnectionLost);
    chain.server_stop(&server).unwrap();
    // No explicit flush: server.stopped waited for the writer.
    let got = lines(&path.0);
    let names: Vec<_> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "server.started",
            "client.connected",
            "client.disconnected",
            "server.stopped"
        ]
    );
    assert!(got.iter().all(|e| e["server"] == "edge"));
    assert_eq!(got[1]["client"], "alice");
    assert_eq!(got[1]["client_id"], 7);
    assert_eq!(got[2]["reason"], "connection_lost");
    assert_eq!(got[2]["bytes_in"], 0);
}

#[test]
fn an_unwritable_path_is_an_io_error() {
    let err = JsonLinesFile::open("/nonexistent-dir/reitunnel/audit.jsonl", 4).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn reopen_follows_a_rotated_file() {
    let path = TempPath::new("rotate");
    let rotated = TempPath(path.0.with_extension("jsonl.1"));
    let sink = JsonLinesFile::open(&path.0, 16).unwrap();
    sink.emit(&Event::now("before").with("n", 1u64));
    // logrotate's move: the writer still holds the old file, now under a new name.
    std::fs::rename(&path.0, &rotated.0).unwrap();
    sink.emit(&Event::now("still.old").with("n", 2u64));
    sink.reopen().unwrap();
    sink.emit(&Event::now("after").with("n", 3u64));
    sink.flush().unwrap();
    let old: Vec<_> = lines(&rotated.0)
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    let new: Vec<_> = lines(&path.0).iter().map(|e| e["event"].clone()).collect();
    assert_eq!(old, ["before", "still.old"]);
    assert_eq!(new, ["after"]);
}

#[test]
fn a_failed_reopen_keeps_writing_to_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("audit.jsonl");
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    let sink = JsonLinesFile::open(&path, 16).unwrap();
    let moved = dir.path().join("moved");
    std::fs::rename(path.parent().unwrap(), &moved).unwrap();
    let err = sink.reopen().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    sink.emit(&Event::now("kept").with("n", 1u64));
    sink.flush().unwrap();
    let kept: Vec<_> = lines(&moved.join("audit.jsonl"))
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(kept, ["kept"]);
}
