//! End-to-end tests of a real `reitunnel-server` process and a real
//! `reitunnel-client` process together on loopback: server restarts
//! (crash and orderly), a frozen client, a frozen server, a balancer in
//! front, an external authorization service, the shipped systemd units;
//! and the tree's own layering (`tests/layering.rs`: no module cycles).
//!
//! Why a package of its own: these tests need both programs, which live in
//! different packages; cargo hands an integration test only its own
//! package's binaries. They get both from
//! `reitunnel_testkit::{server_program, client_program}`, which has cargo
//! build them from the current sources. The library itself is empty; the
//! helpers are in `tests/common/`.
