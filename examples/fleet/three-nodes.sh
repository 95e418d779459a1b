#!/usr/bin/env bash
# A three-node Reitunnel fleet on one machine, and a client failing over.
#
#   bash examples/fleet/three-nodes.sh
#
# Starts redis-server (Debian's) on a free port, three nodes on 127.0.0.2,
# 127.0.0.3 and 127.0.0.4 (the same ports on each, like three hosts), and a
# client that knows all three and exposes a small web service on one public
# port. A visitor fetches the page through every node (two of them relay
# it to the node holding the client), then the holding node is killed
# (SIGKILL): the client logs in to another node, takes its port back, and
# the page is served through the two nodes left. Prints what happens and
# ends with "fleet ok". Everything stops on exit.
#
# REITUNNEL_SERVER and REITUNNEL_CLIENT name the programs (default: the
# release builds; `cargo build --release` first). Needs redis-server,
# redis-cli, python3 and curl.
set -euo pipefail

server=${REITUNNEL_SERVER:-target/release/reitunnel-server}
client=${REITUNNEL_CLIENT:-target/release/reitunnel-client}
work=$(mktemp -d)
pids=()
cleanup() {
    exec 2>/dev/null # no job notices for the processes stopped here
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Retries "$@" (quietly) for up to 60 s; fails the script if it never succeeds.
eventually() {
    for _ in $(seq 600); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "gave up waiting for: $*" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
}

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
eventually redis-cli -p "$redis_port" ping
redis="redis://127.0.0.1:$redis_port"
echo "redis at $redis"

# One port of each kind, the same on every node.
control=$(free_port)
links=$(free_port)
public=$(free_port)
export REITUNNEL_TOKEN=fleet-demo-token
export REITUNNEL_CLUSTER_SECRET=fleet-demo-secret

declare -A node_pid
for n in 2 3 4; do
    ip=127.0.0.$n
    "$server" --listen "$ip:$control" --bind-ip "$ip" --allow-ports "$public" \
        --cluster-redis "$redis" --node "node$n" --relay-listen "$ip:$links" \
        --stats-interval 0 >"$work/node$n.log" 2>&1 &
    node_pid[node$n]=$!
    pids+=($!)
done
for n in 2 3 4; do
    eventually grep -q "server started" "$work/node$n.log"
done
echo "nodes node2, node3, node4 on 127.0.0.2-4, control port $control, public port $public"

# The service the client exposes: a page in a directory of its own.
mkdir "$work/site"
echo "hello from behind the fleet" >"$work/site/index.html"
web=$(free_port)
python3 -m http.server "$web" --bind 127.0.0.1 --directory "$work/site" >"$work/web.log" 2>&1 &
pids+=($!)

"$client" --server "127.0.0.2:$control,127.0.0.3:$control,127.0.0.4:$control" \
    --name demo -R "$public:127.0.0.1:$web" --reconnect-max 1 >"$work/client.log" 2>&1 &
pids+=($!)

page() { curl -sf --max-time 5 "http://$1:$public/" | grep -q "hello from behind the fleet"; }

holder() { redis-cli -p "$redis_port" --raw GET reitunnel:client:demo | python3 -c 'import json, sys; print(json.load(sys.stdin)["node"])'; }
eventually holder
first=$(holder)
echo "the client logged in to $first"
for n in 2 3 4; do
    eventually page "127.0.0.$n"
    echo "  the page through node$n: ok"
done

echo "killing $first (SIGKILL)"
kill -9 "${node_pid[$first]}"
moved() { [ "$(holder)" != "$first" ]; }
eventually moved
second=$(holder)
echo "the client is back, on $second, with port $public"
for n in 2 3 4; do
    [ "node$n" = "$first" ] && continue
    eventually page "127.0.0.$n"
    echo "  the page through node$n: ok"
done
echo "fleet ok"
