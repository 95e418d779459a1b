#!/usr/bin/env bash
# A session over one connection and over several, beside the plain path,
# across a packet-level path (target/release/delay-line between two
# namespaces: every TCP connection sees the delay with its own kernel
# windows). iperf3 1, 4 and 16 streams each way; Mbit/s received.
#
#   bash benches/connections.sh [RTT_MS (50)] [LOSS (0; 0.001 = 0.1 %)] [SECS (6)]
#
# CONNECTIONS="1 8" (default) lists the client's --connections to run;
# REITUNNEL_BIN=DIR takes reitunnel-server and reitunnel-client from DIR.
# bore and rathole join, one connection per visitor as they have it, when
# on PATH (`cargo install bore-cli rathole`) and PEERS is not 0.
#
# Needs root (namespaces, TUN) and iperf3; builds the release binaries.
# Traffic stays in the two namespaces it makes (198.18.0.0/15) and their
# loopbacks; both are deleted at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-50}
loss=${2:-0}
secs=${3:-6}
. benches/delay-path.sh
delay_path rt-conn "$rtt" "$loss"
in_a() { ip netns exec rt-conn-a "$@"; }
in_b() { ip netns exec rt-conn-b "$@"; }
in_b iperf3 -s -D -p 5301
# Waits until something listens on 127.0.0.1:$1 in namespace A.
reachable() {
  until in_a bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; do sleep 0.1; done
}
# One iperf3 run from namespace A: label, then iperf3's arguments.
run() {
  local label=$1 out
  shift
  out=$(in_a timeout $((secs + 30)) iperf3 "$@" -t "$secs" -f m 2>&1 |
    grep receiver | tail -1 | grep -oE '[0-9.]+ Mbits/sec' | awk '{print $1}')
  printf '%-24s %8s\n' "$label" "${out:-failed}"
}
# The six runs of one way to the service at HOST:PORT.
runs() {
  local name=$1 host=$2 port=$3
  for p in 1 4 16; do
    run "$name $p up" -c "$host" -p "$port" -P "$p"
    run "$name $p down" -c "$host" -p "$port" -P "$p" -R
  done
}
echo "round trip $rtt ms, loss $loss, $secs s per run; Mbit/s received"
runs "link" 198.18.0.2 5301
cat > "$work/server.toml" <<TOML
listen = "198.18.0.1:7000"
token = "bench"
bind_ip = "127.0.0.1"
stats_interval = 0
TOML
in_a "$bin/reitunnel-server" --config "$work/server.toml" > "$work/server.log" 2>&1 &
pids+=($!)
port=21000
for n in ${CONNECTIONS:-1 8}; do
  port=$((port + 1))
  in_b "$bin/reitunnel-client" --server 198.18.0.1:7000 --token bench --name "c$n" \
    --connections "$n" -R "127.0.0.1:$port:127.0.0.1:5301" > "$work/c$n.log" 2>&1 &
  client=$!
  reachable "$port"
  sleep 1 # the session's connections join once its tunnel is open
  runs "reitunnel c=$n" 127.0.0.1 "$port"
  kill "$client"
done
if [ "${PEERS:-1}" != 0 ] && command -v bore > /dev/null; then
  # bore listens for visitors where it listens for clients.
  in_a bore server --bind-addr 198.18.0.1 > "$work/bore-server.log" 2>&1 &
  pids+=($!)
  sleep 0.5
  in_b bore local 5301 --to 198.18.0.1 --port 22001 > "$work/bore.log" 2>&1 &
  pids+=($!)
  until grep -q "listening at" "$work/bore.log" 2>/dev/null; do sleep 0.1; done
  runs "bore" 198.18.0.1 22001
fi
if [ "${PEERS:-1}" != 0 ] && command -v rathole > /dev/null; then
  cat > "$work/rathole-server.toml" <<TOML
[server]
bind_addr = "198.18.0.1:7001"
default_token = "bench"
[server.services.iperf]
bind_addr = "127.0.0.1:22002"
TOML
  cat > "$work/rathole-client.toml" <<TOML
[client]
remote_addr = "198.18.0.1:7001"
default_token = "bench"
[client.services.iperf]
local_addr = "127.0.0.1:5301"
TOML
  in_a rathole --server "$work/rathole-server.toml" > "$work/rathole-server.log" 2>&1 &
  pids+=($!)
  in_b rathole --client "$work/rathole-client.toml" > "$work/rathole-client.log" 2>&1 &
  pids+=($!)
  reachable 22002
  sleep 1
  runs "rathole" 127.0.0.1 22002
fi
