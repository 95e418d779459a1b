//! The PROXY protocol header the client may send to a local service before
//! a visitor's bytes, so the service (nginx, HAProxy, Postfix…) sees the
//! visitor's real address instead of the client's. The server passes the
//! visitor's address in each stream's header; the destination is the
//! tunnel's public address. Encoded by the `ppp` crate: v1 is the text
//! line, v2 the binary header.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

/// Which PROXY protocol header to send, per tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ProxyProtocol {
    /// `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl FromStr for ProxyProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            other => Err(format!(
                "PROXY protocol version '{other}': expected v1 or v2"
            )),
        }
    }
}

impl TryFrom<String> for ProxyProtocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        })
    }
}

impl ProxyProtocol {
    /// The header for a visitor from `source` that reached `destination`.
    /// Both sides of a header are one address family: a destination of
    /// the other family is given in the visitor's (mapped, or unspecified
    /// with its port when it cannot be).
    pub fn header(self, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let destination = same_family(source, destination);
        match self {
            ProxyProtocol::V1 => {
                let addresses = ppp::v1::Addresses::from((source, destination));
                addresses.to_string().into_bytes()
            }
            ProxyProtocol::V2 => {
                use ppp::v2::{Builder, Command, Protocol, Version};
                Builder::with_addresses(
                    Version::Two | Command::Proxy,
                    Protocol::Stream,
                    (source, destination),
                )
                .build()
                // Writing addresses into a Vec cannot fail.
                .unwrap_or_default()
            }
        }
    }
}

/// `destination` in `source`'s address family.
fn same_family(source: SocketAddr, destination: SocketAddr) -> SocketAddr {
    let ip = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V6(d)) => {
            IpAddr::V4(d.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
        }
        (IpAddr::V6(_), IpAddr::V4(d)) => IpAddr::V6(d.to_ipv6_mapped()),
        (_, d) => d,
    };
    SocketAddr::new(ip, destination.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_the_text_line_and_v2_the_binary_header() {
        let (src, dst) = (
            "127.0.0.2:40000".parse().unwrap(),
            "127.0.0.1:20001".parse().unwrap(),
        );
        assert_eq!(
            ProxyProtocol::V1.header(src, dst),
            b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 20001\r\n"
        );
        let v2 = ProxyProtocol::V2.header(src, dst);
        let mut want = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        want.extend([127, 0, 0, 2, 127, 0, 0, 1]);
        want.extend(40000u16.to_be_bytes());
        want.extend(20001u16.to_be_bytes());
        assert_eq!(v2, want);
    }

    #[test]
    fn a_destination_of_the_other_family_is_mapped() {
        let src = "[2001:db8::7]:40000".parse().unwrap();
        let dst = "0.0.0.0:20001".parse().unwrap();
        assert_eq!(
            String::from_utf8(ProxyProtocol::V1.header(src, dst)).unwrap(),
            "PROXY TCP6 2001:db8::7 ::ffff:0.0.0.0 40000 20001\r\n"
        );
        let e = "v3".parse::<ProxyProtocol>().unwrap_err();
        assert_eq!(e, "PROXY protocol version 'v3': expected v1 or v2");
    }
}
