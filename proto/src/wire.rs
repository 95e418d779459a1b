//! Field-level reading and writing shared by all frames. The reader carries
//! the frame's name so every error says which frame and which field broke.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut};

use crate::DecodeError;

/// A cursor over one frame's payload.
pub(crate) struct Reader<'a> {
    frame: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(frame: &'static str, buf: &'a [u8]) -> Self {
        Reader { frame, buf }
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                frame: self.frame,
                field,
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.need(N, field)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::TextTooLong {
                frame: self.frame,
                field,
                len,
                max,
            });
        }
        self.need(len, field)?;
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        String::from_utf8(head.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            frame: self.frame,
            field,
        })
    }

    /// `u8 family (4 | 6) | address bytes | u16 port`.
    pub(crate) fn addr(&mut self, field: &'static str) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8(field)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?)),
            family => {
                return Err(DecodeError::InvalidAddrFamily {
                    frame: self.frame,
                    family,
                })
            }
        };
        Ok(SocketAddr::new(ip, self.u16(field)?))
    }

    /// Fails if bytes are left over: a frame must be exactly its fields.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                frame: self.frame,
                extra: self.buf.len(),
            })
        }
    }
}

/// Writes a string as [`Reader::text`] reads it. Longer strings are cut at a
/// character boundary below `max` so the encoder can never produce a frame
/// the decoder refuses (messages are for humans; a cut one is still useful).
pub(crate) fn put_text(out: &mut impl BufMut, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

pub(crate) fn put_addr(out: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}
