//! The fixed bytes each side sends first. Kept outside the frame format on
//! purpose: a peer speaking another version (or another protocol entirely)
//! is recognised from six bytes, before any length prefix is trusted.

use thiserror::Error;

/// The four bytes that open every Reitunnel session.
pub const MAGIC: [u8; 4] = *b"RTUN";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
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
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak v{ours}, peer speaks v{theirs}")]
    VersionMismatch {
        /// Our version.
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

    /// Decodes six bytes and checks magic and version against ours.
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
        if version != PROTOCOL_VERSION {
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
            "protocol version mismatch: we speak v1, peer speaks v9"
        );
    }

    #[test]
    fn http_request_is_bad_magic() {
        let err = Preamble::decode_and_check(*b"GET / ").unwrap_err();
        assert!(matches!(err, PreambleError::BadMagic(m) if &m == b"GET "));
    }
}
