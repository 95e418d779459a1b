#!/usr/bin/env bash
# The soak: builds release binaries of the server, the client and the soak
# driver, then runs it (default 10 minutes; `--minutes N` for another length).
# Prints a summary and exits non-zero if a byte came back wrong, a process
# exited badly or the server's audit log does not balance.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p reitunnel-server -p reitunnel-client -p reitunnel-testkit --bins
exec target/release/soak --bin-dir target/release "$@"
