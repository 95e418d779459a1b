//! Allow-lists of ports: the server's for public tunnels, the policy hook's per client.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use thiserror::Error;

/// A set of allowed ports: `20000-20100,30000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRanges(Vec<RangeInclusive<u16>>);

/// Why a port list did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid port list '{input}': {problem}")]
pub struct PortRangesError {
    input: String,
    problem: String,
}

impl PortRanges {
    /// Unprivileged ports, 1024-65535: the default when no allow-list is given.
    pub fn unprivileged() -> Self {
        PortRanges(vec![1024..=65535])
    }

    /// Whether `port` is allowed.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(&port))
    }

    /// Whether this is the default "any unprivileged port" list, where the
    /// operating system may pick the port itself.
    pub fn is_unrestricted(&self) -> bool {
        *self == PortRanges::unprivileged()
    }

    /// Every allowed port, starting after `start_hint` and wrapping around, so
    /// successive picks spread over the range instead of all probing from the bottom.
    pub fn candidates(&self, start_hint: usize) -> impl Iterator<Item = u16> + '_ {
        let all = self.0.iter().flat_map(|r| r.clone());
        let total = self.0.iter().map(|r| r.len()).sum::<usize>().max(1);
        let skip = start_hint % total;
        all.clone().skip(skip).chain(all.take(skip))
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl FromStr for PortRanges {
    type Err = PortRangesError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| PortRangesError {
            input: input.to_owned(),
            problem,
        };
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(format!("'{}' is not a port (1-65535)", s.trim())))
        };
        let mut ranges = Vec::new();
        for part in input.split(',') {
            let range = match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(err(format!("range {a}-{b} is backwards")));
                    }
                    a..=b
                }
                None => {
                    let p = port(part)?;
                    p..=p
                }
            };
            ranges.push(range);
        }
        Ok(PortRanges(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        let r: PortRanges = "20000-20002, 30000".parse().unwrap();
        assert!(r.contains(20001) && r.contains(30000));
        assert!(!r.contains(19999) && !r.contains(20003));
        assert_eq!(r.to_string(), "20000-20002,30000");
    }

    #[test]
    fn bad_lists_name_the_problem() {
        let e = "20000-abc".parse::<PortRanges>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid port list '20000-abc': 'abc' is not a port (1-65535)"
        );
        let e = "9-3".parse::<PortRanges>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid port list '9-3': range 9-3 is backwards"
        );
        assert!("0".parse::<PortRanges>().is_err());
        assert!("".parse::<PortRanges>().is_err());
    }

    #[test]
    fn candidates_wrap_around_the_hint() {
        let r: PortRanges = "10-12,20".parse().unwrap();
        assert_eq!(r.candidates(2).collect::<Vec<_>>(), [12, 20, 10, 11]);
        assert_eq!(r.candidates(4).collect::<Vec<_>>(), [10, 11, 12, 20]);
    }
}
