//! `-R [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT` and
//! `-L [BIND_ADDR:]LOCAL_PORT:TARGET_HOST:TARGET_PORT`, as ssh spells them;
//! with a `udp:` prefix, the tunnel carries UDP datagrams instead.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::proxy_header::ProxyProtocol;
pub use reitunnel_hooks::Transport;

/// A reverse tunnel request: the server listens on `bind`, visitors reach `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Public address on the server. An unspecified IP (`0.0.0.0`) lets the
    /// server use its default; port 0 lets it pick a free allowed port.
    pub bind: SocketAddr,
    /// `host:port` the client connects to for each visitor.
    pub target: String,
    /// Send the target a PROXY protocol header with the visitor's address
    /// first (TCP tunnels only).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// TCP connections, or UDP datagrams (`udp:` before the spec).
    pub transport: Transport,
}

/// A local forward request (`-L`): the client listens on `bind`, the
/// server dials `target` for each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSpec {
    /// Local address to listen on (default IP 127.0.0.1, like `ssh -L`; port 0 picks one).
    pub bind: SocketAddr,
    /// `host:port` the server connects to; it must be in the server's `allow_forward`.
    pub target: String,
    /// TCP connections, or UDP datagrams (`udp:` before the spec).
    pub transport: Transport,
}

/// Why a `-R` or `-L` value did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid tunnel spec '{spec}': {problem} (expected {grammar})")]
pub struct SpecError {
    spec: String,
    problem: String,
    grammar: &'static str,
}

/// The two spellings: `-R` binds on the server, `-L` on the client.
struct Grammar {
    text: &'static str,
    bind_port: &'static str,
    target_port: &'static str,
    default_ip: IpAddr,
}

const REMOTE: Grammar = Grammar {
    text: "[udp:][BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT",
    bind_port: "remote port",
    target_port: "local port",
    default_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
};

const LOCAL: Grammar = Grammar {
    text: "[udp:][BIND_ADDR:]LOCAL_PORT:TARGET_HOST:TARGET_PORT",
    bind_port: "local port",
    target_port: "target port",
    default_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
};

/// Splits at colons outside `[...]`, so IPv6 literals survive.
fn split_colons(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses `[udp:][BIND_ADDR:]PORT:HOST:PORT` into the transport, the bind
/// address and the target.
fn parse(whole: &str, g: &Grammar) -> Result<(Transport, SocketAddr, String), SpecError> {
    let err = |problem: String| SpecError {
        spec: whole.to_owned(),
        problem,
        grammar: g.text,
    };
    let (transport, spec) = match whole.strip_prefix("udp:") {
        Some(rest) => (Transport::Udp, rest),
        None => (Transport::Tcp, whole.strip_prefix("tcp:").unwrap_or(whole)),
    };
    let port = |s: &str, what: &str| {
        s.parse::<u16>()
            .map_err(|_| err(format!("{what} '{s}' is not a port number")))
    };
    let parts = split_colons(spec);
    let (bind_ip, rest) = match parts.len() {
        3 => (g.default_ip, &parts[..]),
        4 => {
            let raw = parts[0].trim_start_matches('[').trim_end_matches(']');
            let ip = if raw == "localhost" {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                raw.parse()
                    .map_err(|_| err(format!("bind address '{}' is not an IP address", parts[0])))?
            };
            (ip, &parts[1..])
        }
        n => return Err(err(format!("{n} fields separated by ':'"))),
    };
    let bind_port = port(rest[0], g.bind_port)?;
    let target_port = port(rest[2], g.target_port)?;
    if target_port == 0 {
        return Err(err(format!("{} 0 cannot be connected to", g.target_port)));
    }
    if rest[1].is_empty() {
        return Err(err("target host is empty".to_owned()));
    }
    Ok((
        transport,
        SocketAddr::new(bind_ip, bind_port),
        format!("{}:{}", rest[1], target_port),
    ))
}

impl FromStr for RemoteSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let (transport, bind, target) = parse(spec, &REMOTE)?;
        Ok(RemoteSpec {
            bind,
            target,
            proxy_protocol: None,
            transport,
        })
    }
}

impl FromStr for LocalSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let (transport, bind, target) = parse(spec, &LOCAL)?;
        Ok(LocalSpec {
            bind,
            target,
            transport,
        })
    }
}

impl fmt::Display for LocalSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} (via the server)", self.bind, self.target)?;
        udp_mark(f, self.transport)
    }
}

impl fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.bind, self.target)?;
        udp_mark(f, self.transport)?;
        match self.proxy_protocol {
            Some(version) => write!(f, " (PROXY {version})"),
            None => Ok(()),
        }
    }
}

/// ` (udp)` after a UDP tunnel's description.
fn udp_mark(f: &mut fmt::Formatter<'_>, transport: Transport) -> fmt::Result {
    match transport {
        Transport::Udp => f.write_str(" (udp)"),
        Transport::Tcp => Ok(()),
    }
}

/// In a config file's `remote` list: a spec string (`"8080:127.0.0.1:3000"`),
/// or a table with the spec and its options
/// (`{ spec = "8080:127.0.0.1:80", proxy_protocol = "v2" }`).
impl<'de> Deserialize<'de> for RemoteSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = RemoteSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a tunnel spec like "8080:127.0.0.1:3000", or a table { spec = "…", proxy_protocol = "v2" }"#)
            }
            fn visit_str<E: de::Error>(self, spec: &str) -> Result<RemoteSpec, E> {
                spec.parse().map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RemoteSpec, A::Error> {
                const FIELDS: &[&str] = &["spec", "proxy_protocol"];
                let (mut spec, mut proxy_protocol) = (None::<String>, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "spec" => spec = Some(map.next_value()?),
                        "proxy_protocol" => proxy_protocol = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let spec = spec.ok_or_else(|| de::Error::missing_field("spec"))?;
                let mut remote: RemoteSpec = spec.parse().map_err(de::Error::custom)?;
                if remote.transport == Transport::Udp && proxy_protocol.is_some() {
                    let why =
                        format!("tunnel '{spec}': proxy_protocol applies to TCP tunnels only");
                    return Err(de::Error::custom(why));
                }
                remote.proxy_protocol = proxy_protocol;
                Ok(remote)
            }
        }
        d.deserialize_any(Entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_and_four_fields() {
        let s: RemoteSpec = "8080:localhost:3000".parse().unwrap();
        assert_eq!(s.bind, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.target, "localhost:3000");
        let s: RemoteSpec = "127.0.0.1:0:127.0.0.1:3000".parse().unwrap();
        assert_eq!(s.bind, "127.0.0.1:0".parse().unwrap());
        let s: RemoteSpec = "[::1]:9000:[::1]:22".parse().unwrap();
        assert_eq!(s.bind, "[::1]:9000".parse().unwrap());
        assert_eq!(s.target, "[::1]:22");
    }

    #[test]
    fn errors_name_the_field() {
        let e = "80:host".parse::<RemoteSpec>().unwrap_err();
        assert!(e.to_string().contains("2 fields"), "{e}");
        let e = "x:host:80".parse::<RemoteSpec>().unwrap_err();
        assert!(e.to_string().contains("remote port 'x'"), "{e}");
        let e = "nothost:1:h:80".parse::<RemoteSpec>().unwrap_err();
        assert!(e.to_string().contains("bind address 'nothost'"), "{e}");
        let e = "1:h:0".parse::<RemoteSpec>().unwrap_err();
        assert!(e.to_string().contains("local port 0"), "{e}");
    }

    #[test]
    fn a_udp_prefix_makes_a_udp_tunnel() {
        let s: RemoteSpec = "udp:5353:127.0.0.1:53".parse().unwrap();
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!(s.bind, "0.0.0.0:5353".parse().unwrap());
        assert_eq!(s.to_string(), "0.0.0.0:5353 -> 127.0.0.1:53 (udp)");
        let s: LocalSpec = "udp:[::1]:0:dns.internal:53".parse().unwrap();
        assert_eq!(
            (s.transport, s.bind),
            (Transport::Udp, "[::1]:0".parse().unwrap())
        );
        let s: RemoteSpec = "tcp:80:web:8080".parse().unwrap();
        assert_eq!(s.transport, Transport::Tcp);
        let e = "udp:53:dns".parse::<RemoteSpec>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid tunnel spec 'udp:53:dns': 2 fields separated by ':' \
             (expected [udp:][BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT)"
        );
    }

    #[test]
    fn local_specs_bind_loopback_by_default() {
        let s: LocalSpec = "5432:db.internal:5432".parse().unwrap();
        assert_eq!(s.bind, "127.0.0.1:5432".parse().unwrap());
        assert_eq!(s.target, "db.internal:5432");
        let s: LocalSpec = "0.0.0.0:0:10.0.0.7:22".parse().unwrap();
        assert_eq!(s.bind, "0.0.0.0:0".parse().unwrap());
        let e = "5432:db:x".parse::<LocalSpec>().unwrap_err().to_string();
        assert!(
            e.contains("target port 'x'") && e.contains("LOCAL_PORT:TARGET_HOST:TARGET_PORT"),
            "{e}"
        );
    }
}
