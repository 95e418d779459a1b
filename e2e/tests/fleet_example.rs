//! `examples/fleet/three-nodes.sh`, the fleet walk-through docs/CLUSTER.md
//! points to, run as a user would: three real nodes sharing a real Redis,
//! a client that knows all three, a page fetched through each node, the
//! holding node killed and the page served again through the other two.

use std::path::Path;
use std::process::Command;

use reitunnel_testkit::{client_program, installed, server_program, REDIS_SERVER};

#[test]
fn the_three_node_example_fails_over_and_serves_through_every_node() {
    if !installed(REDIS_SERVER, "redis-server") || !installed("/usr/bin/curl", "curl") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = Command::new("bash")
        .arg("examples/fleet/three-nodes.sh")
        .current_dir(&root)
        .env("REITUNNEL_SERVER", server_program())
        .env("REITUNNEL_CLIENT", client_program())
        .output()
        .expect("running bash");
    let said = String::from_utf8_lossy(&run.stdout);
    let complained = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}\n{complained}");
    for line in [
        "the page through node2: ok",
        "the page through node3: ok",
        "the page through node4: ok",
        "killing node",
        "the client is back, on node",
        "fleet ok",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}\n{complained}");
    }
}
