//! The servers a client may log in to: `--server a:7000,b:7000` names the
//! nodes of a fleet, any of which will do. The list is checked when the
//! settings are read, so a typo stops the client at once; each login
//! resolves every entry anew (a fleet's DNS changes), and every address an
//! entry gives is a candidate of its own.
//!
//! A login tries the candidates in turn, beginning at a random one so that
//! many clients spread over the fleet; see [`Rotation`] for where a
//! reconnect begins.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::ClientError;

/// One entry of the server list, `host:port`: a name or an address (an
/// IPv6 one in brackets) and the port of its control listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// As written (trimmed), for messages.
    written: String,
    /// Without the brackets of an IPv6 address.
    host: String,
    port: u16,
}

impl ServerEntry {
    /// The name or address, without brackets: what DNS resolves and what
    /// the server's TLS certificate must be valid for by default.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The control port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ServerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl FromStr for ServerEntry {
    type Err = ServerListError;

    fn from_str(entry: &str) -> Result<ServerEntry, ServerListError> {
        let written = entry.trim().to_owned();
        let no_port = || ServerListError::NoPort {
            entry: written.clone(),
        };
        let (host, port) = written.rsplit_once(':').ok_or_else(no_port)?;
        if port.is_empty() {
            return Err(no_port());
        }
        let port = port.parse().map_err(|_| ServerListError::BadPort {
            entry: written.clone(),
            port: port.to_owned(),
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(ServerListError::NoHost { entry: written });
        }
        Ok(ServerEntry {
            host: host.to_owned(),
            written,
            port,
        })
    }
}

/// Why a server list was refused; each message names the entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerListError {
    /// Nothing at all was given.
    #[error("no server given (expected host:port, or several separated by commas)")]
    Empty,
    /// Two commas in a row, or one at either end.
    #[error("server list '{list}': entry {position} is empty")]
    EmptyEntry {
        /// The whole list.
        list: String,
        /// The empty entry's place, from 1.
        position: usize,
    },
    /// `host` alone, or `host:`.
    #[error("server '{entry}' has no port (expected host:port)")]
    NoPort {
        /// The entry.
        entry: String,
    },
    /// The part after the last colon is not a port number.
    #[error("server '{entry}': '{port}' is not a port number")]
    BadPort {
        /// The entry.
        entry: String,
        /// What stood where the port should.
        port: String,
    },
    /// `:7000`.
    #[error("server '{entry}' has no host (expected host:port)")]
    NoHost {
        /// The entry.
        entry: String,
    },
}

/// The entries of a comma-separated list, in order.
pub(crate) fn parse_list(list: &str) -> Result<Vec<ServerEntry>, ServerListError> {
    if list.trim().is_empty() {
        return Err(ServerListError::Empty);
    }
    list.split(',')
        .enumerate()
        .map(|(at, entry)| match entry.trim() {
            "" => Err(ServerListError::EmptyEntry {
                list: list.to_owned(),
                position: at + 1,
            }),
            entry => entry.parse(),
        })
        .collect()
}

/// One address to try, with the entry it came from (whose host names the
/// TLS certificate).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub entry: &'a ServerEntry,
    pub addr: SocketAddr,
}

impl fmt::Display for Candidate<'_> {
    /// The entry, and the address too where the entry is a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entry.host.parse::<std::net::IpAddr>().is_ok() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.entry, self.addr)
        }
    }
}

/// Every address of every entry, in the list's order. An entry that does
/// not resolve (within `within`) is skipped with a warning while others
/// give addresses; if none does, the first entry's error is returned.
pub(crate) async fn resolve(
    entries: &[ServerEntry],
    within: Duration,
) -> Result<Vec<Candidate<'_>>, ClientError> {
    let lookups = entries.iter().map(|entry| lookup(entry, within));
    let mut candidates = Vec::new();
    let mut first_error = None;
    for (entry, found) in entries.iter().zip(futures::future::join_all(lookups).await) {
        match found {
            Ok(addrs) => candidates.extend(addrs.into_iter().map(|addr| Candidate { entry, addr })),
            Err(e) => {
                tracing::warn!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if candidates.is_empty() => Err(e),
        _ => Ok(candidates),
    }
}

/// The addresses `entry` resolves to: at least one, or an error naming it.
async fn lookup(entry: &ServerEntry, within: Duration) -> Result<Vec<SocketAddr>, ClientError> {
    let failed = |source| ClientError::Resolve {
        server: entry.to_string(),
        source,
    };
    let looked_up =
        tokio::time::timeout(within, tokio::net::lookup_host((entry.host(), entry.port)))
            .await
            .map_err(|_| failed(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")))?;
    let addrs: Vec<SocketAddr> = looked_up.map_err(failed)?.collect();
    if addrs.is_empty() {
        return Err(failed(io::Error::new(
            io::ErrorKind::NotFound,
            "the name has no addresses",
        )));
    }
    Ok(addrs)
}

/// Where a login begins in the candidate list: just after the server
/// tried last, so that after a lost session (or a refusal for now) the
/// next login moves on to another node rather than knocking again on the
/// one that just failed; at random when there is none (the first login,
/// or that server is no longer in the list), so that a fleet of clients
/// spreads over the servers.
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    last: Option<SocketAddr>,
}

impl Rotation {
    /// The server tried last, if it is among `candidates`.
    pub fn last_in<'c, 'a>(&self, candidates: &'c [Candidate<'a>]) -> Option<&'c Candidate<'a>> {
        self.last_at(candidates).map(|at| &candidates[at])
    }

    fn last_at(&self, candidates: &[Candidate]) -> Option<usize> {
        let last = self.last?;
        candidates.iter().position(|c| c.addr == last)
    }

    /// Every candidate once, in the order to try them.
    pub fn order<'c, 'a>(
        &self,
        candidates: &'c [Candidate<'a>],
    ) -> impl Iterator<Item = &'c Candidate<'a>> + 'c {
        let start = match self.last_at(candidates) {
            Some(last) => last + 1,
            None => fastrand::usize(..candidates.len().max(1)),
        };
        let (before, after) = candidates.split_at(start.min(candidates.len()));
        after.iter().chain(before)
    }

    /// Notes that `addr` is being tried.
    pub fn trying(&mut self, addr: SocketAddr) {
        self.last = Some(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(list: &str) -> String {
        parse_list(list).unwrap_err().to_string()
    }

    #[test]
    fn a_list_parses_in_order() {
        let entries = parse_list(" a.example:7000, [::1]:7001 ,10.0.0.1:7002").unwrap();
        let hosts: Vec<(&str, u16)> = entries.iter().map(|e| (e.host(), e.port())).collect();
        assert_eq!(
            hosts,
            [("a.example", 7000), ("::1", 7001), ("10.0.0.1", 7002)]
        );
        assert_eq!(entries[1].to_string(), "[::1]:7001");
        assert_eq!(parse_list("h:1").unwrap().len(), 1);
    }

    #[test]
    fn mistakes_name_the_entry() {
        assert_eq!(
            error("a:7000,,b:7000"),
            "server list 'a:7000,,b:7000': entry 2 is empty"
        );
        assert_eq!(error("a:7000,"), "server list 'a:7000,': entry 2 is empty");
        assert_eq!(
            error("a:7000,b"),
            "server 'b' has no port (expected host:port)"
        );
        assert_eq!(error("b:"), "server 'b:' has no port (expected host:port)");
        assert_eq!(
            error("b:http"),
            "server 'b:http': 'http' is not a port number"
        );
        assert_eq!(
            error("b:70000"),
            "server 'b:70000': '70000' is not a port number"
        );
        assert_eq!(
            error(":7000"),
            "server ':7000' has no host (expected host:port)"
        );
        assert!(error(" ").starts_with("no server given"), "{}", error(" "));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_nothing_is_named() {
        let entries = parse_list("nowhere.invalid:7000").unwrap();
        let e = resolve(&entries, Duration::from_secs(30))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot resolve server nowhere.invalid:7000: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn every_address_of_every_entry_is_a_candidate() {
        let entries = parse_list("nowhere.invalid:7000,localhost:7001,127.0.0.2:7002").unwrap();
        let found = resolve(&entries, Duration::from_secs(30)).await.unwrap();
        let local = found.iter().filter(|c| c.entry.host() == "localhost");
        assert!(local.clone().count() >= 1);
        assert!(local
            .clone()
            .all(|c| c.addr.ip().is_loopback() && c.addr.port() == 7001));
        let last = found.last().unwrap();
        assert_eq!(last.to_string(), "127.0.0.2:7002");
        assert!(found[0].to_string().starts_with("localhost:7001 ("));
    }

    fn candidates<'a>(entry: &'a ServerEntry, ports: &[u16]) -> Vec<Candidate<'a>> {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        ports
            .iter()
            .map(|&port| Candidate {
                entry,
                addr: at(port),
            })
            .collect()
    }

    fn ports(rotation: &Rotation, candidates: &[Candidate]) -> Vec<u16> {
        rotation.order(candidates).map(|c| c.addr.port()).collect()
    }

    #[test]
    fn a_login_begins_after_the_server_tried_last() {
        let entry: ServerEntry = "h:1".parse().unwrap();
        let list = candidates(&entry, &[1, 2, 3]);
        let mut rotation = Rotation::default();
        // At random at first, yet every candidate once, in the list's cycle.
        let first = ports(&rotation, &list);
        assert!([[1, 2, 3], [2, 3, 1], [3, 1, 2]].contains(&first.as_slice().try_into().unwrap()));
        rotation.trying(list[1].addr);
        assert_eq!(ports(&rotation, &list), [3, 1, 2]);
        rotation.trying(list[2].addr);
        assert_eq!(ports(&rotation, &list), [1, 2, 3]);
        // A server gone from the list: at random again.
        let fewer = candidates(&entry, &[1, 2]);
        assert_eq!(ports(&rotation, &fewer).len(), 2);
    }
}
