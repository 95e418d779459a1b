#!/usr/bin/env bash
# Two clients share the server's window pool across a 50 ms packet-level
# path (target/release/delay-line between two namespaces): alice pulls
# alone for 3 s, then bob joins; each line is one second of each one's
# throughput. With the pool shared fairly, bob gets as much as alice once
# he is there; with windows reserved per session at login, alice's
# session held the whole pool and bob's streams kept their initial window.
#
#   bash benches/window-fairness.sh [BUDGET (8MiB)] [RTT_MS (50)]
#
# REITUNNEL_BIN=DIR takes reitunnel-server and reitunnel-client from DIR
# (another build, to compare) instead of this tree's release build.
#
# Needs root (namespaces, TUN) and iperf3; builds the release binaries.
# Traffic stays in the two namespaces it makes (198.18.0.0/15) and their
# loopbacks; both are deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-8MiB}
rtt=${2:-50}
. benches/delay-path.sh
delay_path rt-fair "$rtt"
cat > "$work/server.toml" <<TOML
listen = "198.18.0.1:7000"
token = "fair"
bind_ip = "127.0.0.1"
stats_interval = 0
[limits]
max_buffered_bytes = "$budget"
TOML
ip netns exec rt-fair-a "$bin/reitunnel-server" --config "$work/server.toml" > "$work/server.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  name=$([ $i = 1 ] && echo alice || echo bob)
  ip netns exec rt-fair-b iperf3 -s -D -p $((5300 + i))
  ip netns exec rt-fair-b "$bin/reitunnel-client" --server 198.18.0.1:7000 --token fair \
    --name "$name" --reconnect-max 1 -R "127.0.0.1:$((21000 + i)):127.0.0.1:$((5300 + i))" \
    > "$work/$name.log" 2>&1 &
  pids+=($!)
done
for port in 21001 21002; do
  until ip netns exec rt-fair-a bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; do sleep 0.1; done
done
ip netns exec rt-fair-a iperf3 -c 127.0.0.1 -p 21001 -R -t 12 -i 1 -f m > "$work/alice" &
alice=$!
sleep 3
ip netns exec rt-fair-a iperf3 -c 127.0.0.1 -p 21002 -R -t 8 -i 1 -f m > "$work/bob"
wait "$alice"
echo "budget $budget, round trip $rtt ms; Mbit/s each second (bob from second 3):"
paste <(grep -E '^\[ *5\] +[0-9.]+-[0-9.]+ +sec' "$work/alice" | head -12 | awk '{print "alice " $7}') \
      <(printf '\n\n\n'; grep -E '^\[ *5\] +[0-9.]+-[0-9.]+ +sec' "$work/bob" | head -8 | awk '{print "bob " $7}')
