#!/usr/bin/env python3
"""Reitunnel beside the peers, side by side in one run.

Starts real services (iperf3, nginx), puts each tunnel in front of them and
measures, interleaving the modes within each round so a noisy machine
hurts all of them alike; prints one table with the median of the rounds,
their spread, and each figure's ratio to the no-tunnel path of the same run.

Distance is simulated by target/release/delay-proxy between the tunnel's
client and server (and in front of the services for the no-tunnel "link"),
holding every byte D/2 ms each way.

    python3 benches/compare.py                # full run (about 30 min)
    python3 benches/compare.py --smoke        # seconds: every mode moves its bytes, no speeds judged
    python3 benches/compare.py --rounds 5 --delays 0,50 --modes direct,reitunnel

Needs iperf3, wrk and nginx (installed from Debian when missing, as root);
bore and rathole join when on PATH (`cargo install bore-cli rathole`).
See docs/PERFORMANCE.md for what each row means.
"""

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# REITUNNEL_BIN points at another build (e.g. to compare two commits).
BIN = os.environ.get("REITUNNEL_BIN", os.path.join(ROOT, "target", "release"))
TOKEN = "bench-token"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {deadline}s")


class Procs:
    """Processes of one mode, killed together; logs kept in the work dir."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, argv, **kw):
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)
        p.bench_name = name
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()
        self.procs = []


def wait_log(work, name, pattern, count=1, deadline=15.0):
    end = time.monotonic() + deadline
    path = os.path.join(work, f"{name}.log")
    while time.monotonic() < end:
        with open(path) as f:
            if len(re.findall(pattern, f.read())) >= count:
                return
        time.sleep(0.05)
    with open(path) as f:
        tail = f.read()[-2000:]
    raise RuntimeError(f"{name} never logged {pattern!r}:\n{tail}")


def delay_proxy(procs, name, target_port, rtt_ms, listen_host="127.0.0.1", listen_port=0):
    """A delay proxy to 127.0.0.1:target_port; returns the port it listens on."""
    port = listen_port or free_port(listen_host)
    procs.start(name, [os.path.join(BIN, "delay-proxy"), f"{listen_host}:{port}",
                       f"127.0.0.1:{target_port}", str(rtt_ms // 2)])
    wait_port(listen_host, port)
    return port


# ---------------------------------------------------------------- the modes

class Mode:
    """A way from a visitor to the services: `start` returns the ports a
    visitor uses for iperf3 and nginx; `pids` are the tunnel's processes."""

    name = "?"
    # Whether its iperf3 port also carries iperf3's UDP datagrams.
    carries_udp = False

    def __init__(self, work, services):
        self.work = work
        self.services = services
        self.procs = Procs(work)
        self.pids = []

    def stop(self):
        self.procs.stop()
        self.pids = []


class Direct(Mode):
    name = "no tunnel"

    def hooks_or_tls(self):
        return False

    carries_udp = True

    def start(self, rtt):
        if rtt == 0:
            return self.services["iperf"], self.services["nginx"]
        return (delay_proxy(self.procs, "link-iperf", self.services["iperf"], rtt),
                delay_proxy(self.procs, "link-nginx", self.services["nginx"], rtt))


class Reitunnel(Mode):
    carries_udp = True

    def __init__(self, work, services, hooks=False, tls=False, threads=0):
        super().__init__(work, services)
        self.hooks, self.tls, self.threads = hooks, tls, threads
        self.name = "reitunnel" + (" tls" if tls else "") + (" +hooks" if hooks else "") \
            + (f" {threads}thr" if threads else "")

    def hooks_or_tls(self):
        return self.hooks or self.tls

    def start(self, rtt):
        control = free_port()
        server = [os.path.join(BIN, "reitunnel-server"), "--listen", f"127.0.0.1:{control}",
                  "--token", TOKEN, "--stats-interval", "0", "--threads", str(self.threads)]
        server += ["--config", self.services["hooks_toml" if self.hooks else "limits_toml"]]
        if self.tls:
            server += ["--tls-cert", self.services["cert"], "--tls-key", self.services["key"]]
        s = self.procs.start("reitunnel-server", server)
        wait_port("127.0.0.1", control)
        via = delay_proxy(self.procs, "reitunnel-link", control, rtt) if rtt else control
        pi, pn = free_port(), free_port()
        client = [os.path.join(BIN, "reitunnel-client"), "--server", f"127.0.0.1:{via}",
                  "--token", TOKEN, "--threads", str(self.threads),
                  "-R", f"127.0.0.1:{pi}:127.0.0.1:{self.services['iperf']}",
                  "-R", f"udp:127.0.0.1:{pi}:127.0.0.1:{self.services['iperf']}",
                  "-R", f"127.0.0.1:{pn}:127.0.0.1:{self.services['nginx']}"]
        if self.tls:
            client += ["--fingerprint", self.services["fingerprint"]]
        c = self.procs.start("reitunnel-client", client, env=dict(os.environ, RUST_LOG="info"))
        wait_log(self.work, "reitunnel-client", r"tunnel \d+ ready", count=3)
        self.pids = [s.pid, c.pid]
        return pi, pn


class Bore(Mode):
    """bore: its control port is fixed (7835); with a delay the client
    reaches it through a proxy on 127.0.0.2:7835."""

    name = "bore"

    def start(self, rtt):
        self.procs.start("bore-server", ["bore", "server", "--bind-addr", "127.0.0.1"])
        wait_port("127.0.0.1", 7835)
        to = "127.0.0.1"
        if rtt:
            delay_proxy(self.procs, "bore-link", 7835, rtt, listen_host="127.0.0.2", listen_port=7835)
            to = "127.0.0.2"
        ports = []
        for svc in ("iperf", "nginx"):
            port = free_port()
            self.procs.start(f"bore-{svc}", ["bore", "local", str(self.services[svc]), "-l", "127.0.0.1",
                                             "--to", to, "--port", str(port)])
            ports.append(port)
        for svc in ("iperf", "nginx"):
            wait_log(self.work, f"bore-{svc}", "listening at")
        self.pids = [p.pid for p in self.procs.procs if not p.bench_name.endswith("link")]
        return ports[0], ports[1]


class Rathole(Mode):
    def __init__(self, work, services, tls=False):
        super().__init__(work, services)
        self.tls = tls
        self.name = "rathole tls" if tls else "rathole"

    def start(self, rtt):
        control = free_port()
        via = control
        pi, pn = free_port(), free_port()
        transport = '[server.transport]\ntype = "tcp"\n'
        ctransport = '[client.transport]\ntype = "tcp"\n'
        if self.tls:
            transport = ('[server.transport]\ntype = "tls"\n[server.transport.tls]\n'
                         f'pkcs12 = "{self.services["p12"]}"\npkcs12_password = "bench"\n')
            ctransport = ('[client.transport]\ntype = "tls"\n[client.transport.tls]\n'
                          f'trusted_root = "{self.services["cert"]}"\nhostname = "localhost"\n')
        srv = os.path.join(self.work, "rathole-server.toml")
        with open(srv, "w") as f:
            f.write(f'[server]\nbind_addr = "127.0.0.1:{control}"\ndefault_token = "{TOKEN}"\n'
                    f'{transport}[server.services.iperf]\nbind_addr = "127.0.0.1:{pi}"\n'
                    f'[server.services.nginx]\nbind_addr = "127.0.0.1:{pn}"\n')
        s = self.procs.start("rathole-server", ["rathole", "--server", srv])
        wait_port("127.0.0.1", control)
        if rtt:
            via = delay_proxy(self.procs, "rathole-link", control, rtt)
        cli = os.path.join(self.work, "rathole-client.toml")
        with open(cli, "w") as f:
            f.write(f'[client]\nremote_addr = "127.0.0.1:{via}"\ndefault_token = "{TOKEN}"\n'
                    f'{ctransport}[client.services.iperf]\nlocal_addr = "127.0.0.1:{self.services["iperf"]}"\n'
                    f'[client.services.nginx]\nlocal_addr = "127.0.0.1:{self.services["nginx"]}"\n')
        c = self.procs.start("rathole-client", ["rathole", "--client", cli])
        wait_log(self.work, "rathole-server", "Control channel established", count=2)
        self.pids = [s.pid, c.pid]
        return pi, pn


# ---------------------------------------------------------------- measurements

def iperf(port, parallel, reverse, secs):
    """Mbit/s received, and bytes received (0 on failure). iperf3's server
    runs one test at a time and may still be closing the last one, and its
    control connection now and then fails a run on its own (seen on the
    no-tunnel path too): a failed run is tried again, and said."""
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-P", str(parallel), "-J"]
    if reverse:
        argv.append("-R")
    for attempt in range(4):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
        try:
            report = json.loads(out.stdout)
            end = report["end"]["sum_received"]
            return end["bits_per_second"] / 1e6, int(end["bytes"])
        except (ValueError, KeyError):
            error = re.search(r'"error":\s*"([^"]*)"', out.stdout)
            print(f"  iperf3 {' '.join(argv[5:])} failed (try {attempt + 1}): "
                  f"{error.group(1) if error else out.stderr.strip()[:200]}", file=sys.stderr)
            time.sleep(0.5 * (attempt + 1))
    return 0.0, 0


def iperf_udp(port, offered, secs):
    """iperf3 -u at `offered` (e.g. "1G"), 1,400-byte datagrams: Mbit/s
    received and the percentage of datagrams lost (None, None on failure)."""
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", offered, "-l", "1400",
            "-t", str(secs), "-J"]
    for attempt in range(4):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
        try:
            received = json.loads(out.stdout)["end"]["sum_received"]
            return received["bits_per_second"] / 1e6, received["lost_percent"]
        except (ValueError, KeyError):
            print(f"  iperf3 -u failed (try {attempt + 1}): {out.stdout[-200:] or out.stderr[:200]}",
                  file=sys.stderr)
            time.sleep(0.5 * (attempt + 1))
    return None, None


def cpu_ms(pids):
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / tick


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def ttfb(port, n):
    """Median ms from connect to the first byte of a 1 KiB response, fresh
    connection each time; and whether every answer was complete."""
    times, ok = [], True
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            first = s.recv(65536)
            times.append((time.perf_counter() - t0) * 1000)
            body = first
            while True:
                more = s.recv(65536)
                if not more:
                    break
                body += more
        ok = ok and body.startswith(b"HTTP/1.1 200") and body.endswith(b"x" * 1024)
    return statistics.median(times), ok


def wrk(port, path, conns, secs, close=False):
    argv = ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{secs}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    failed = int(bad.group(1)) if bad else 0
    if errors and not close:
        failed += sum(int(x) for x in errors.groups())
    return {"rate": float(rate.group(1)) if rate else 0.0, "p50": pct(50), "p99": pct(99),
            "failed": failed}


def idle_visitors(port, n, server_pid):
    """Opens n connections, each asks nginx for 1 KiB and stays open; returns
    how many got their answer and the server's RSS growth per connection."""
    before = rss_kib(server_pid) if server_pid else 0
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    socks = []
    try:
        waiting = 0
        for _ in range(n):
            try:  # a tunnel that runs out of descriptors or slots refuses some
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(s)
                s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n")
            except OSError:
                continue
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            waiting += 1
        done, end = 0, time.monotonic() + 60
        while waiting and time.monotonic() < end:
            for key, _ in sel.select(timeout=1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                key.data.extend(data)
                if not data or key.data.endswith(b"x" * 1024):
                    sel.unregister(key.fileobj)
                    waiting -= 1
                    done += bool(data)
        after = rss_kib(server_pid) if server_pid else 0
        return done, (after - before) / n, time.monotonic() - t0
    finally:
        for s in socks:
            s.close()


def aggregate(mode, n, secs):
    """Mbit/s summed over n clients, each with its own tunnel to its own
    iperf3 server, all sending at once (1 stream each). Reitunnel modes
    only, and "no tunnel" as the limit."""
    procs = Procs(mode.work)
    try:
        ports = [free_port() for _ in range(n)]
        for i, port in enumerate(ports):
            procs.start(f"agg-iperf{i}", ["iperf3", "-s", "-p", str(port)])
            wait_port("127.0.0.1", port)
        if isinstance(mode, Reitunnel):
            control = free_port()
            procs.start("agg-server", [os.path.join(BIN, "reitunnel-server"), "--listen",
                                       f"127.0.0.1:{control}", "--token", TOKEN, "--stats-interval", "0",
                                       "--threads", str(mode.threads)])
            wait_port("127.0.0.1", control)
            public = []
            for i, port in enumerate(ports):
                pub = free_port()
                procs.start(f"agg-client{i}", [os.path.join(BIN, "reitunnel-client"), "--server",
                                               f"127.0.0.1:{control}", "--token", TOKEN, "--name", f"c{i}",
                                               "--threads", str(mode.threads),
                                               "-R", f"127.0.0.1:{pub}:127.0.0.1:{port}"])
                wait_log(mode.work, f"agg-client{i}", r"tunnel \d+ ready")
                public.append(pub)
            ports = public
        runs = [subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(p), "-t", str(secs), "-J"],
                                 stdout=subprocess.PIPE, text=True) for p in ports]
        total = 0.0
        for r in runs:
            out, _ = r.communicate(timeout=secs + 60)
            try:
                total += json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
            except (ValueError, KeyError):
                return 0.0
        return total
    finally:
        procs.stop()


# ---------------------------------------------------------------- set-up

def ensure_tools(install):
    tools = ("iperf3", "wrk", "nginx", "openssl")
    missing = [t for t in tools if not shutil.which(t)]
    if missing and install:
        pkgs = {"iperf3": "iperf3", "wrk": "wrk", "nginx": "nginx-light", "openssl": "openssl"}
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + [pkgs[t] for t in missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        sys.exit(f"missing {missing}: apt-get install iperf3 wrk nginx-light openssl")


def build():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "reitunnel-server",
                    "-p", "reitunnel-client", "-p", "reitunnel-benches", "--bins"],
                   cwd=ROOT, check=True)


def start_services(work, procs, smoke):
    iperf_port, nginx_port = free_port(), free_port()
    procs.start("iperf3", ["iperf3", "-s", "-p", str(iperf_port)])
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k"), "wb") as f:
        f.write(b"x" * 1024)
    with open(os.path.join(www, "1m"), "wb") as f:
        f.write(b"y" * (1 << 20))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{ access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{nginx_port} backlog=4096; root {www}; }} }}
""")
    procs.start("nginx", ["nginx", "-c", conf, "-e", os.path.join(work, "nginx-error.log")])
    wait_port("127.0.0.1", iperf_port)
    wait_port("127.0.0.1", nginx_port)
    # Every built-in data hook, set never to bite: what "hooks on" costs.
    # Every visitor comes from 127.0.0.1: lift the per-address limit.
    limits = "[limits]\nmax_visitors_per_ip = 0\n"
    limits_toml = os.path.join(work, "limits.toml")
    with open(limits_toml, "w") as f:
        f.write(limits)
    # The statsd hook sends to a UDP socket bound here and never read (the
    # kernel drops what its buffer cannot hold): the cost is the server's.
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    # The Redis event bus, where Debian's redis-server is installed: every
    # lifecycle event goes to a stream (nothing per chunk).
    redis = ""
    if shutil.which("redis-server"):
        redis_port = free_port()
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"])
        wait_port("127.0.0.1", redis_port)
        redis = f'[[hooks]]\nkind = "redis"\nurl = "redis://127.0.0.1:{redis_port}"\n'
    hooks = os.path.join(work, "hooks.toml")
    with open(hooks, "w") as f:
        f.write(f"""metrics_listen = "127.0.0.1:{free_port()}"
{limits}[[hooks]]
kind = "rate_limit"
per_client_bytes_per_sec = "4000MiB"
per_tunnel_bytes_per_sec = "4000MiB"
[[hooks]]
kind = "quota"
bytes = "1000000GiB"
[[hooks]]
kind = "meter"
interval_secs = 3600
[[hooks]]
kind = "metrics"
[[hooks]]
kind = "sampled"
one_in = 64
hook = {{ kind = "log" }}
[[hooks]]
kind = "statsd"
addr = "127.0.0.1:{statsd.getsockname()[1]}"
flavor = "dogstatsd"
interval_ms = 1000
{redis}""")
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    fingerprint = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
                                 check=True, capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    p12 = os.path.join(work, "identity.p12")
    subprocess.run(["openssl", "pkcs12", "-export", "-out", p12, "-inkey", key, "-in", cert,
                    "-passout", "pass:bench"], check=True, capture_output=True)
    return {"iperf": iperf_port, "nginx": nginx_port, "hooks_toml": hooks, "limits_toml": limits_toml, "cert": cert,
            "key": key, "p12": p12, "fingerprint": fingerprint, "statsd_socket": statsd}


# ---------------------------------------------------------------- the run

def measure(mode, rtt, args, results):
    """One round of one mode at one distance; appends to results[(row, mode)]."""
    def put(row, value):
        results.setdefault((row, mode.name), []).append(value)

    dist = f"{rtt} ms" if rtt else "loopback"
    try:
        pi, pn = mode.start(rtt)
        if rtt == 0 and mode.pids:
            put("idle RSS server / client (KiB)", f"{rss_kib(mode.pids[0])} / {rss_kib(mode.pids[-1])}")
        moved = {}
        for par in args.streams:
            for rev, way in ((False, "up"), (True, "down")):
                c0 = cpu_ms(mode.pids) if mode.pids else 0
                rate, nbytes = iperf(pi, par, rev, args.secs)
                moved[(par, way)] = nbytes
                put(f"{dist}: iperf3 {par} stream{'s' * (par > 1)} {way} (Mbit/s)", rate)
                if rtt == 0 and par == 1 and not rev and mode.pids and nbytes:
                    put("loopback: CPU per GB, 1 stream up (ms, server+client)",
                        (cpu_ms(mode.pids) - c0) / (nbytes / 1e9))
        t, ok = ttfb(pn, args.ttfb_n)
        if rtt == 0 and mode.carries_udp:
            # UDP next to TCP on the same port: iperf3 -u's control is TCP.
            for offered in ("200M", "1G"):
                rate, loss = iperf_udp(pi, offered, args.secs)
                ok = ok and rate is not None and rate > 0
                if rate is not None:
                    put(f"loopback: iperf3 -u {offered}bit/s offered, received (Mbit/s)", rate)
                    put(f"loopback: iperf3 -u {offered}bit/s offered, datagrams lost (%)", loss)
        put(f"{dist}: first byte of 1 KiB GET, new conn (ms)", t)
        if rtt == 0:
            for conns in args.wrk_conns:
                w = wrk(pn, "/1k", conns, args.secs)
                put(f"loopback: 1 KiB req/s, {conns} conn", w["rate"])
                put(f"loopback: 1 KiB p50 / p99, {conns} conn (us)", (w["p50"], w["p99"]))
                ok = ok and w["failed"] == 0 and w["rate"] > 0
            w = wrk(pn, "/1m", 10, args.secs)
            put("loopback: 1 MiB responses, 10 conns (MiB/s)", w["rate"])
            ok = ok and w["failed"] == 0 and w["rate"] > 0
            w = wrk(pn, "/1k", 50, args.secs, close=True)
            put("loopback: new connections/s, 50 conns", w["rate"])
            ok = ok and w["rate"] > 0
            if isinstance(mode, (Direct, Reitunnel)) and not mode.hooks_or_tls():
                for n in args.clients:
                    rate = aggregate(mode, n, args.secs)
                    put(f"loopback: {n} clients at once, 1 stream each (Mbit/s, sum)", rate)
                    ok = ok and rate > 0
            for n in args.idle:
                served, per, secs = idle_visitors(pn, n, mode.pids[0] if mode.pids else None)
                put(f"loopback: {n} idle visitors served", served)
                put(f"loopback: {n} idle visitors, seconds to serve all", secs)
                if mode.pids:
                    put(f"loopback: server KiB per idle visitor ({n})", per)
                ok = ok and served == n
        ok = ok and all(moved.values())
        put(f"{dist}: every transfer complete", "yes" if ok else "NO")
        return ok
    finally:
        mode.stop()


def fmt(values, base):
    """median (min–max) ×ratio-to-base."""
    if isinstance(values[0], str):
        return values[-1] if len(set(values)) == 1 else "/".join(values)
    if isinstance(values[0], tuple):
        p50 = statistics.median(v[0] for v in values if v[0] is not None)
        p99 = statistics.median(v[1] for v in values if v[1] is not None)
        return f"{p50:.0f} / {p99:.0f}"
    med = statistics.median(values)
    text = f"{med:,.0f}" if med >= 100 else f"{med:.1f}"
    if len(values) > 1:
        lo, hi = min(values), max(values)
        text += f" ({(hi - lo) / med * 100 if med else 0:.0f}%)"
    if base and not isinstance(base[0], (str, tuple)):
        b = statistics.median(base)
        if b and base is not values:
            text += f" x{med / b:.2f}"
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds long; checks bytes moved, judges no speed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5, help="seconds per iperf3/wrk run")
    ap.add_argument("--delays", default="0,10,50,150", help="round-trip times in ms, 0 = loopback")
    ap.add_argument("--modes", default="", help="comma list of mode names (default: all available)")
    ap.add_argument("--idle", default="1000,10000", help="idle-visitor counts on loopback")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.secs, args.delays, args.idle = 1, 1, "0,10", "50"
        # Ours only: the smoke checks Reitunnel, not whichever peers are installed.
        args.modes = args.modes or "direct,reitunnel,reitunnel 1thr,reitunnel +hooks,reitunnel tls +hooks"
    args.delays = [int(d) for d in args.delays.split(",")]
    args.idle = [int(n) for n in args.idle.split(",") if n]
    args.streams = [1, 4]
    args.wrk_conns = [1, 50]
    args.clients = [1, 2] if args.smoke else [1, 2, 4]
    args.ttfb_n = 5 if args.smoke else 21

    ensure_tools(not args.no_install)
    if not args.no_build:
        build()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="reitunnel-bench-")
    services = Procs(work)
    try:
        svc = start_services(work, services, args.smoke)
        modes = [Direct(work, svc), Reitunnel(work, svc), Reitunnel(work, svc, threads=1),
                 Reitunnel(work, svc, hooks=True),
                 Reitunnel(work, svc, hooks=True, tls=True)]
        if shutil.which("bore"):
            modes.append(Bore(work, svc))
        if shutil.which("rathole"):
            modes += [Rathole(work, svc), Rathole(work, svc, tls=True)]
        if args.modes:
            wanted = [m.strip() for m in args.modes.split(",")]
            modes = [m for m in modes if m.name in wanted or (m.name == "no tunnel" and "direct" in wanted)]
        results, all_ok = {}, True
        for r in range(args.rounds):
            for rtt in args.delays:
                for mode in modes:
                    print(f"round {r + 1}/{args.rounds}, {rtt} ms, {mode.name}", file=sys.stderr, flush=True)
                    try:
                        ok = measure(mode, rtt, args, results)
                    except Exception as e:  # a peer that fails to start must not end the run
                        print(f"  {mode.name} failed: {e}", file=sys.stderr)
                        results.setdefault((f"{rtt} ms: every transfer complete", mode.name), []).append("NO")
                        ok = False
                    all_ok = all_ok and ok
        rows = list(dict.fromkeys(row for row, _ in results))
        names = [m.name for m in modes]
        width = max(len(r) for r in rows)
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} cores, {args.rounds} rounds, "
              f"{args.secs}s runs; median (spread) xratio to no tunnel")
        print("| " + "metric".ljust(width) + " | " + " | ".join(names) + " |")
        print("|" + "-" * (width + 2) + "|" + "|".join("---" for _ in names) + "|")
        for row in rows:
            base = results.get((row, "no tunnel"))
            cells = [fmt(results[(row, n)], base) if (row, n) in results else "-" for n in names]
            print("| " + row.ljust(width) + " | " + " | ".join(cells) + " |")
        print(f"{'every mode moved its bytes' if all_ok else 'SOME MODE FAILED'}; work dir {work}")
        sys.exit(0 if all_ok else 1)
    finally:
        services.stop()


if __name__ == "__main__":
    main()
