//! End-to-end tests of a real `reitunnel-server` process and a real
//! `reitunnel-client` process together on loopback: server restarts
//! (crash and orderly), a frozen client, a frozen server.
//!
//! Why a package of its own: cargo gives an integration test only its own
//! package's binaries (`env!("CARGO_BIN_EXE_<name>")`), and the server's and
//! the client's binaries live in different packages. This package's
//! `[[bin]]` targets build both from their own sources
//! (`../server/src/main.rs`, `../client/src/main.rs`) as `e2e-server` and
//! `e2e-client`, so its tests in `tests/` can start them side by side.
//! The library itself is empty; the helpers are in `tests/common/`.
