//! Public doors into the crate-private login, for the fuzz targets in
//! `fuzz/` only. They are a separate crate, and the point is to fuzz the
//! client's real code rather than a copy. Not a supported API.

pub use crate::login::login;
pub use reitunnel_proto::login::LoggedIn;
