//! Real components from Debian that tests put around a tunnel: nginx
//! reading a PROXY protocol header behind it, HAProxy sending one in front
//! of it. Each runs in the foreground on free loopback ports with its files
//! in the test's directory, and ends when its [`Process`] is dropped.
//!
//! A test whose tool is missing is skipped with a message, unless
//! `REITUNNEL_REQUIRE_TOOLS` is set (as CI sets it): there it must run.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Process;

/// nginx, as Debian's nginx-light installs it.
pub const NGINX: &str = "/usr/sbin/nginx";
/// HAProxy, as Debian's haproxy installs it.
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// dnsmasq, as Debian's dnsmasq-base installs it.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// dig, from Debian's dnsutils.
pub const DIG: &str = "/usr/bin/dig";

/// How long a tool may take to start listening: a failure guard.
const STARTUP: Duration = Duration::from_secs(60);

/// Whether `path` is installed. If not, says the test is skipped, or fails
/// it when `REITUNNEL_REQUIRE_TOOLS` is set.
pub fn installed(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("REITUNNEL_REQUIRE_TOOLS").is_none(),
        "REITUNNEL_REQUIRE_TOOLS is set but {path} is not installed (apt-get install {package})"
    );
    eprintln!("skipped: no {path} (apt-get install {package})");
    false
}

/// Chromium, as Debian installs it, if it is; without it a test is skipped
/// unless `REITUNNEL_REQUIRE_TOOLS` is set, which fails it.
pub fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("REITUNNEL_REQUIRE_TOOLS").is_none(),
            "REITUNNEL_REQUIRE_TOOLS is set but Chromium is not installed (apt-get install chromium)"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
    }
    found
}

/// A loopback port that was free a moment ago, for a tool that cannot be
/// told to pick its own and report it.
pub fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    probe.local_addr().expect("its address")
}

/// nginx on a free loopback port, listening with `proxy_protocol` and
/// answering every request with `visitor=ADDR:PORT server=ADDR` from the
/// header it read. Without a header it refuses the connection.
pub fn nginx_showing_proxy_protocol(dir: &Path) -> (Process, SocketAddr) {
    let addr = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen {addr} proxy_protocol;
    location / {{ return 200 \"visitor=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr\\n\"; }}
  }}
}}
"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf written");
    let mut command = Command::new(NGINX);
    command.arg("-p").arg(dir).arg("-c").arg(&path);
    command.args(["-e", "stderr"]);
    let nginx = Process::spawn("nginx", command);
    until_listening(addr, "nginx");
    (nginx, addr)
}

/// HAProxy in TCP mode: each `(front, back)` forwards connections from
/// `front` to `back`, opened from `source`, each starting with a PROXY v2
/// header naming the real peer (`send-proxy-v2`). Returns once every front
/// accepts.
pub fn haproxy_sending_proxy_v2(
    dir: &Path,
    routes: &[(SocketAddr, SocketAddr)],
    source: IpAddr,
) -> Process {
    let mut conf = String::from(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n",
    );
    for (i, (front, back)) in routes.iter().enumerate() {
        conf.push_str(&format!(
            "listen route{i}\n  bind {front}\n  server back {back} send-proxy-v2 source {source}\n"
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).expect("haproxy.cfg written");
    let mut command = Command::new(HAPROXY);
    command.arg("-db").arg("-f").arg(&path);
    let haproxy = Process::spawn("haproxy", command);
    for (front, _) in routes {
        until_listening(*front, "haproxy");
    }
    haproxy
}

/// dnsmasq answering DNS over UDP on a free loopback port, from nothing
/// but its command line: every name under `domain` is `address`. Returns
/// once it says it started.
pub fn dnsmasq_answering(domain: &str, address: IpAddr) -> (Process, SocketAddr) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free UDP port")
        .port();
    let mut command = Command::new(DNSMASQ);
    command.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--user=root",
        "--log-facility=-",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
    ]);
    command.arg(format!("--port={port}"));
    command.arg(format!("--address=/{domain}/{address}"));
    let dnsmasq = Process::spawn("dnsmasq", command);
    dnsmasq.stderr.wait_for("dnsmasq to start", STARTUP, |l| {
        l.contains("started, version")
    });
    (dnsmasq, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Asks `server` for `name`'s A record with dig, over UDP; the answer's
/// addresses, one per line (empty if none).
pub fn dig(server: SocketAddr, name: &str) -> String {
    let out = Command::new(DIG)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, "A"])
        .args(["+short", "+notcp", "+tries=1", "+time=10"])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Blocks until `addr` accepts a connection; panics after [`STARTUP`].
fn until_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {STARTUP:?}"
        );
        std::thread::yield_now();
    }
}
