#!/usr/bin/env python3
"""A fleet node beside a single server, and a relayed visitor beside a local
one, side by side in one run on loopback.

Starts redis-server, iperf3 and an echo service, then three servers of the
release build: a single server on 127.0.0.2, and fleet nodes a (127.0.0.3)
and b (127.0.0.4) sharing the Redis, each with a quota hook so the store
is used as in production (`--no-quota`: none). One client logs in to the single server and one
to node a, each exposing iperf3 and the echo service. Rounds interleave:

  single        a visitor of the single server
  fleet, local  a visitor of node a, which holds the client
  fleet, relay  a visitor of node b, relayed to node a over their link

and for each: iperf3 throughput (one stream, 3 s), the median time from
connect to the first echoed byte, and new connections per second (connect,
one echoed byte, close). Then Redis commands per GiB moved through node a
and per login (client start, tunnel, stop), from `INFO stats`.

    cargo build --release -p reitunnel-server -p reitunnel-client
    python3 benches/fleet.py [--rounds 3] [--seconds 3]

Needs redis-server and iperf3 (Debian). See docs/CLUSTER.md for figures.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("REITUNNEL_BIN", os.path.join(ROOT, "target", "release"))
TOKEN = "bench-token"
SECRET = "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, patience=30):
    deadline = time.time() + patience
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"gave up waiting for {what}")


def echo_service():
    """A threaded echo server on loopback; returns its port."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


class Procs:
    def __init__(self, logs):
        self.procs, self.logs = [], logs

    def start(self, name, args, env=None):
        log = open(os.path.join(self.logs, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def redis_commands(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "stats"], capture_output=True, text=True).stdout
    return next(int(l.split(":")[1]) for l in out.splitlines() if l.startswith("total_commands_processed:"))


def iperf(host, port, seconds):
    out = subprocess.run(["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    report = json.loads(out.stdout)
    end = report["end"]
    return end["sum_received"]["bits_per_second"], end["sum_received"]["bytes"]


def first_byte_ms(host, port, n=100):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection((host, port)) as s:
            s.sendall(b"x")
            s.recv(1)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def connections_per_sec(host, port, seconds=2.0):
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        with socket.create_connection((host, port)) as s:
            s.sendall(b"x")
            s.recv(1)
        n += 1
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--no-quota", action="store_true", help="no quota hook on any server")
    args = ap.parse_args()
    server, client = os.path.join(BIN, "reitunnel-server"), os.path.join(BIN, "reitunnel-client")
    logs = tempfile.mkdtemp(prefix="reitunnel-fleet-bench-")
    procs = Procs(logs)
    try:
        redis_port = free_port()
        procs.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                              "--save", "", "--appendonly", "no", "--dir", logs])
        wait_for("redis", lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "ping"],
                                                 capture_output=True).returncode == 0)
        iperf_port = free_port()
        procs.start("iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf_port)])
        echo_port = echo_service()
        control, links = free_port(), free_port()
        ports = {"single": (free_port(), free_port()), "fleet": (free_port(), free_port())}
        env = {"REITUNNEL_TOKEN": TOKEN, "REITUNNEL_CLUSTER_SECRET": SECRET}
        quota = [] if args.no_quota else ["--quota", "1000GiB"]

        def node(name, ip, fleet_name, extra):
            allow = ",".join(str(p) for p in ports[fleet_name])
            procs.start(name, [server, "--listen", f"{ip}:{control}", "--bind-ip", ip, "--allow-ports", allow,
                               "--stats-interval", "0"] + quota + extra, env)
            wait_for(name, lambda: socket.create_connection((ip, control)).close() is None)

        node("single", "127.0.0.2", "single", [])
        fleet = ["--cluster-redis", f"redis://127.0.0.1:{redis_port}", "--relay-listen"]
        node("a", "127.0.0.3", "fleet", fleet + ["127.0.0.3:%d" % links, "--node", "a"])
        node("b", "127.0.0.4", "fleet", fleet + ["127.0.0.4:%d" % links, "--node", "b"])
        for name, ip in (("single", "127.0.0.2"), ("fleet", "127.0.0.3")):
            p_iperf, p_echo = ports[name]
            procs.start(f"client-{name}", [client, "--server", f"{ip}:{control}", "--name", f"bench-{name}",
                                           "-R", f"{p_iperf}:127.0.0.1:{iperf_port}",
                                           "-R", f"{p_echo}:127.0.0.1:{echo_port}"], env)
        modes = {"single": "127.0.0.2", "fleet, local": "127.0.0.3", "fleet, relay": "127.0.0.4"}
        for mode, host in modes.items():
            p_echo = ports["single" if mode == "single" else "fleet"][1]
            wait_for(mode, lambda: first_byte_ms(host, p_echo, 1) >= 0)
        results = {m: {"gbit": [], "ttfb": [], "cps": []} for m in modes}
        order = list(modes.items())
        for r in range(args.rounds):
            # Each round starts with another mode, so no mode is always first.
            for mode, host in order[r % len(order):] + order[:r % len(order)]:
                p_iperf, p_echo = ports["single" if mode == "single" else "fleet"]
                bps, _ = iperf(host, p_iperf, args.seconds)
                results[mode]["gbit"].append(bps / 1e9)
                results[mode]["ttfb"].append(first_byte_ms(host, p_echo))
                results[mode]["cps"].append(connections_per_sec(host, p_echo))
        base = {k: statistics.median(v) for k, v in results["single"].items()}
        local = {k: statistics.median(v) for k, v in results["fleet, local"].items()}
        print(f"{'mode':<14} {'Gbit/s':>8} {'x single':>9} {'first byte ms':>14} {'conn/s':>8} {'x single':>9}")
        for mode in modes:
            med = {k: statistics.median(v) for k, v in results[mode].items()}
            print(f"{mode:<14} {med['gbit']:>8.2f} {med['gbit'] / base['gbit']:>9.2f} {med['ttfb']:>14.3f}"
                  f" {med['cps']:>8.0f} {med['cps'] / base['cps']:>9.2f}")
        relay = {k: statistics.median(v) for k, v in results["fleet, relay"].items()}
        print(f"relay vs local: throughput x{relay['gbit'] / local['gbit']:.2f}, "
              f"first byte +{relay['ttfb'] - local['ttfb']:.3f} ms, connections x{relay['cps'] / local['cps']:.2f}")
        # Redis: per GiB through node a, per login, and the idle rate behind both.
        idle0, t0 = redis_commands(redis_port), time.time()
        time.sleep(2)
        idle = (redis_commands(redis_port) - idle0) / (time.time() - t0)
        before, t0 = redis_commands(redis_port), time.time()
        _, moved = iperf("127.0.0.3", ports["fleet"][0], args.seconds)
        spent = redis_commands(redis_port) - before - idle * (time.time() - t0)
        print(f"redis: {idle:.1f} commands/s idle (renewals of 2 nodes), "
              f"{spent / (moved / 2**30):.0f} per GiB moved ({moved / 2**30:.1f} GiB)")
        logins, before, t0 = 10, redis_commands(redis_port), time.time()
        for i in range(logins):
            probe = free_port()
            p = subprocess.Popen([client, "--server", f"127.0.0.4:{control}", "--name", f"login-{i}",
                                  "-R", f"0:127.0.0.1:{echo_port}", "--reconnect-max", "0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env})
            for line in p.stdout:
                if b"tunnel open" in line or b"-> 127.0.0.1" in line or b"public" in line:
                    break
            p.terminate()
            p.wait()
            del probe
        spent = redis_commands(redis_port) - before - idle * (time.time() - t0)
        print(f"redis: {spent / logins:.1f} commands per login (login, one tunnel, logout)")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
