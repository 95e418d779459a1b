//! The fixed bytes each side sends first. Kept outside the frame format on
//! purpose: a peer speaking another version (or another protocol entirely)
//! is recognised from six bytes, before any length prefix is trusted.

use thiserror::Error;

/// The four bytes that open every Reitunnel session.
pub const MAGIC: [u8; 4] = *b"RTUN";
/// The newest protocol version this crate speaks. Version 2 adds a
/// session's extra connections (the `Lanes` and `Join` frames).
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest version this crate still speaks: a peer of any version from
/// this one to [`PROTOCOL_VERSION`] is answered in its own version, so
/// servers and clients can be upgraded one at a time.
pub const OLDEST_VERSION: u16 = 1;
/// Encoded size of a [`Preamble`].
pub const PREAMBLE_LEN: usize = 6;

/// `MAGIC | u16 version` (big endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The sender's protocol version.
    pub version: u16,
}

/// Why a preamble was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PreambleError {
    /// A TLS record came where the preamble belongs: one side has TLS on, the other off.
    #[error("peer speaks TLS but this side does not: turn TLS on here (or off there)")]
    PeerSpeaksTls,
    /// The peer is not speaking Reitunnel at all (wrong port, TLS vs plain, a scanner).
    #[error("peer is not a reitunnel endpoint (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The peer speaks a protocol version we do not.
    #[error(
        "protocol version mismatch: we speak v{OLDEST_VERSION} to v{ours}, peer speaks v{theirs}"
    )]
    VersionMismatch {
        /// Our newest version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
}

impl Preamble {
    /// The preamble for [`PROTOCOL_VERSION`].
    pub const CURRENT: Preamble = Preamble {
        version: PROTOCOL_VERSION,
    };

    /// Encodes to the six bytes that go on the wire.
    pub fn encode(self) -> [u8; PREAMBLE_LEN] {
        let v = self.version.to_be_bytes();
        [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
    }

    /// The preamble for `version`.
    pub const fn of(version: u16) -> Preamble {
        Preamble { version }
    }

    /// What a server sends back to a client's preamble: the client's own
    /// version where it is one we speak, else our newest (so the client can
    /// say which version the server speaks).
    pub fn answer(theirs: &Result<Preamble, PreambleError>) -> Preamble {
        match theirs {
            Ok(preamble) => *preamble,
            Err(_) => Preamble::CURRENT,
        }
    }

    /// Decodes six bytes and checks magic and version against the versions we speak.
    pub fn decode_and_check(bytes: [u8; PREAMBLE_LEN]) -> Result<Preamble, PreambleError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            // A TLS record header: content type handshake (22) or alert (21), version 3.x.
            if matches!(bytes[0], 21 | 22) && bytes[1] == 3 {
                return Err(PreambleError::PeerSpeaksTls);
            }
            return Err(PreambleError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if !(OLDEST_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(PreambleError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        Ok(Preamble { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_round_trips() {
        assert_eq!(
            Preamble::decode_and_check(Preamble::CURRENT.encode()),
            Ok(Preamble::CURRENT)
        );
    }

    #[test]
    fn tls_is_recognised() {
        let client_hello = [22, 3, 1, 0, 200, 1];
        let alert = [21, 3, 3, 0, 2, 2];
        for bytes in [client_hello, alert] {
            let err = Preamble::decode_and_check(bytes).unwrap_err();
            assert_eq!(err, PreambleError::PeerSpeaksTls);
        }
    }

    #[test]
    fn other_version_is_named() {
        let err = Preamble::decode_and_check(Preamble { version: 9 }.encode()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol version mismatch: we speak v1 to v2, peer speaks v9"
        );
    }

    #[test]
    fn every_version_we_speak_is_answered_in_its_own() {
        for version in OLDEST_VERSION..=PROTOCOL_VERSION {
            let theirs = Preamble::decode_and_check(Preamble::of(version).encode());
            assert_eq!(Preamble::answer(&theirs), Preamble::of(version));
        }
        let wrong = Preamble::decode_and_check(*b"GET / ");
        assert_eq!(Preamble::answer(&wrong), Preamble::CURRENT);
        assert!(Preamble::decode_and_check(Preamble::of(0).encode()).is_err());
    }

    #[test]
    fn http_request_is_bad_magic() {
        let err = Preamble::decode_and_check(*b"GET / ").unwrap_err();
        assert!(matches!(err, PreambleError::BadMagic(m) if &m == b"GET "));
    }
}
