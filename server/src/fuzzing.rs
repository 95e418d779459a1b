//! Public doors into the crate-private handshake, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! server's real code rather than a copy. Not a supported API.

pub use crate::handshake::{check_name, read_login};
pub use reitunnel_proto::login::{ClientHello, JoinRequest, LoginRequest};
