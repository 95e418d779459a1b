//! The PROXY protocol on the way in, for a server behind an L4 balancer
//! (HAProxy, AWS NLB): the balancer connects from its own address and
//! starts each connection with a header naming the real peer.
//!
//! With `proxy_protocol_from` set, every connection to the control port
//! and the public ports is expected to come from one of those networks and
//! to start with a header (v1 or v2); the peer it names is the one hooks,
//! policies, limits and logs see. A connection from anywhere else is
//! refused with a reason: it either skipped the balancer or is trying to
//! claim another address. The header is read exactly (nothing after it is
//! consumed) and parsed by the `ppp` crate. A header without an address
//! (v1 `UNKNOWN`, v2 `LOCAL`: the balancer's own health check) leaves the
//! balancer's address in place.

use std::net::SocketAddr;

use ipnet::IpNet;
use ppp::v2::{Addresses, Command};
use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 header's fixed part: its 12-byte signature, version and command,
/// family and protocol, and the length of what follows.
const V2_FIXED: usize = 16;
/// The v1 text line's longest form, `\r\n` included (the specification's figure).
const V1_MAX: usize = 107;

/// A network (`10.0.0.0/8`) or a single address (`10.0.0.5`), as written
/// in `proxy_protocol_from` and the policy hook's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(Network)
            .map_err(|_| format!("'{s}' is not a network (like 10.0.0.0/8) or address"))
    }
}

/// Why a connection's PROXY header was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProxiedError {
    /// The peer is not one of the trusted balancers.
    #[error(
        "connection from {0} refused: proxy_protocol_from is set, so only the balancers it \
         lists may connect, and {ip} is not in it",
        ip = .0.ip()
    )]
    Untrusted(SocketAddr),
    /// A trusted balancer sent something that is not a PROXY header.
    #[error("balancer {peer} sent no valid PROXY protocol header: {why}")]
    Malformed {
        /// The balancer.
        peer: SocketAddr,
        /// What was wrong.
        why: String,
    },
    /// The connection failed or closed before the header was whole.
    #[error(
        "balancer {peer} closed or failed before its PROXY protocol header was whole: {source}"
    )]
    Io {
        /// The balancer.
        peer: SocketAddr,
        /// The read error.
        source: std::io::Error,
    },
}

impl ProxiedError {
    /// Its message with the peer's address but not its port: the same for
    /// every connection from one host, so a flood of them sums up.
    pub(crate) fn per_address(&self) -> String {
        let peer = match self {
            ProxiedError::Untrusted(peer)
            | ProxiedError::Malformed { peer, .. }
            | ProxiedError::Io { peer, .. } => peer,
        };
        self.to_string()
            .replace(&peer.to_string(), &peer.ip().to_string())
    }
}

/// The connection's real peer: `peer` itself when `trusted` is empty (the
/// PROXY protocol is off); otherwise the address in the header that a
/// trusted `peer` must send first. The caller bounds the wait.
pub(crate) async fn real_peer<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
    trusted: &[IpNet],
) -> Result<SocketAddr, ProxiedError> {
    if trusted.is_empty() {
        return Ok(peer);
    }
    if !trusted.iter().any(|net| net.contains(&peer.ip())) {
        return Err(ProxiedError::Untrusted(peer));
    }
    let header = read_header(io, peer).await?;
    let malformed = |why: String| ProxiedError::Malformed { peer, why };
    match HeaderResult::parse(&header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => (a.source_address, a.source_port).into(),
            ppp::v1::Addresses::Tcp6(a) => (a.source_address, a.source_port).into(),
            ppp::v1::Addresses::Unknown => peer,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (Command::Proxy, Addresses::IPv4(a)) => (a.source_address, a.source_port).into(),
            (Command::Proxy, Addresses::IPv6(a)) => (a.source_address, a.source_port).into(),
            (Command::Proxy, Addresses::Unix(_)) => {
                return Err(malformed("a UNIX socket address is not a visitor's".into()))
            }
            _ => peer,
        }),
        HeaderResult::V1(Err(e)) => Err(malformed(format!("v1: {e}"))),
        HeaderResult::V2(Err(e)) => Err(malformed(format!("v2: {e}"))),
    }
}

/// Reads exactly one header's bytes: the v1 line up to its `\r\n`, or the
/// v2 fixed part and the length it announces.
async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
) -> Result<Vec<u8>, ProxiedError> {
    let failed = |source| ProxiedError::Io { peer, source };
    // Eight bytes tell the versions apart and fit in both's shortest form.
    let mut header = vec![0u8; 8];
    io.read_exact(&mut header).await.map_err(failed)?;
    if header.starts_with(b"PROXY ") {
        // Byte by byte: what follows the line is the peer's, not ours.
        while !header.ends_with(b"\r\n") {
            if header.len() == V1_MAX {
                let why = format!("a v1 line longer than {V1_MAX} bytes");
                return Err(ProxiedError::Malformed { peer, why });
            }
            header.push(io.read_u8().await.map_err(failed)?);
        }
    } else if header[..] == ppp::v2::PROTOCOL_PREFIX[..8] {
        header.resize(V2_FIXED, 0);
        io.read_exact(&mut header[8..]).await.map_err(failed)?;
        let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(V2_FIXED + rest, 0);
        io.read_exact(&mut header[V2_FIXED..])
            .await
            .map_err(failed)?;
    } else {
        let why = format!("it began with {:?}", String::from_utf8_lossy(&header));
        return Err(ProxiedError::Malformed { peer, why });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const BALANCER: &str = "10.0.0.9:55000";

    /// What `real_peer` makes of `sent` from the balancer, and the bytes it left.
    async fn read(sent: &[u8]) -> (Result<SocketAddr, String>, Vec<u8>) {
        let (mut near, mut far) = tokio::io::duplex(4096);
        far.write_all(sent).await.unwrap();
        drop(far);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let got = real_peer(&mut near, BALANCER.parse().unwrap(), &trusted).await;
        let mut rest = Vec::new();
        near.read_to_end(&mut rest).await.unwrap();
        (got.map_err(|e| e.to_string()), rest)
    }

    #[tokio::test]
    async fn v1_and_v2_name_the_peer_and_leave_what_follows() {
        let v1 = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 20001\r\nhello";
        assert_eq!(
            read(v1).await,
            (Ok("127.0.0.2:40000".parse().unwrap()), b"hello".to_vec())
        );
        let v6 = b"PROXY TCP6 2001:db8::7 ::1 40000 20001\r\n";
        assert_eq!(read(v6).await.0, Ok("[2001:db8::7]:40000".parse().unwrap()));

        use ppp::v2::{Builder, Protocol, Version};
        let source: SocketAddr = "192.0.2.5:41000".parse().unwrap();
        let destination: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut v2 = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (source, destination),
        )
        .write_tlv(ppp::v2::Type::NoOp, &[0; 5])
        .unwrap()
        .build()
        .unwrap();
        v2.extend_from_slice(b"\x00rest");
        assert_eq!(read(&v2).await, (Ok(source), b"\x00rest".to_vec()));
    }

    #[tokio::test]
    async fn a_health_check_keeps_the_balancers_address() {
        let balancer = BALANCER.parse().unwrap();
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(balancer));
        use ppp::v2::{Builder, Protocol, Version};
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(read(&local).await.0, Ok(balancer));
    }

    #[tokio::test]
    async fn what_is_not_a_header_is_named() {
        let (got, _) = read(b"\x00\x00\x00\x10RTUN....").await;
        let e = got.unwrap_err();
        assert!(
            e.starts_with(
                "balancer 10.0.0.9:55000 sent no valid PROXY protocol header: it began with"
            ),
            "{e}"
        );
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        let e = read(&long).await.0.unwrap_err();
        assert!(e.ends_with("a v1 line longer than 107 bytes"), "{e}");
        let e = read(b"PROXY TCP4 nonsense here\r\n").await.0.unwrap_err();
        assert!(
            e.contains("sent no valid PROXY protocol header: v1:"),
            "{e}"
        );
        let e = read(b"PROXY TC").await.0.unwrap_err();
        assert!(
            e.contains("closed or failed before its PROXY protocol header was whole"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn off_or_untrusted() {
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let (mut near, _far) = tokio::io::duplex(64);
        assert_eq!(real_peer(&mut near, peer, &[]).await.unwrap(), peer);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let e = real_peer(&mut near, peer, &trusted).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "connection from 192.0.2.1:5000 refused: proxy_protocol_from is set, so only the \
             balancers it lists may connect, and 192.0.2.1 is not in it"
        );
    }
}
