# Sourced by the benchmark scripts that run across the packet-level path:
# builds the release binaries and delay-line, and defines
#
#   delay_path NAME RTT_MS [LOSS]
#
# which starts target/release/delay-line between the namespaces NAME-a
# (198.18.0.1) and NAME-b (198.18.0.2) and returns once packets flow.
# Sets `bin` (REITUNNEL_BIN or target/release), `work` (a temporary
# folder) and `pids` (processes to kill); at exit everything started is
# killed, both namespaces deleted and `work` removed.
cargo build --release --locked -q -p reitunnel-server -p reitunnel-client
cargo build --release --locked -q -p reitunnel-benches --bin delay-line
bin=${REITUNNEL_BIN:-target/release}
work=$(mktemp -d)
pids=()
path_name=""
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  if [ -n "$path_name" ]; then
    for end in b a; do
      ip netns pids "$path_name-$end" 2>/dev/null | xargs -r kill 2>/dev/null || true
      ip netns del "$path_name-$end" 2>/dev/null || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
delay_path() {
  path_name=$1
  target/release/delay-line "$1-a" "$1-b" "$2" "${3:-0}" > "$work/line.out" &
  pids+=($!)
  until grep -q ready "$work/line.out" 2>/dev/null; do sleep 0.1; done
}
