//! Challenge–response login. The token never crosses the wire: the server
//! sends a fresh random nonce, the client answers with
//! `HMAC-SHA256(token, DOMAIN | nonce | name)`, and the server verifies it in
//! constant time (`ring::hmac::verify`). Binding the name into the proof stops
//! a captured proof from being replayed under another client name, and the
//! per-connection nonce stops replays altogether.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Size of the server's challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Size of a login proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// Size of a session's join key (see [`lane_proof`]).
pub const LANE_KEY_LEN: usize = 32;

/// Domain separation, so a proof can never be mistaken for another HMAC use of the same token.
const DOMAIN: &[u8] = b"reitunnel-login-v1";

/// A fresh random nonce from the operating system's CSPRNG.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the operating system's random source failed");
    nonce
}

fn message(key: &hmac::Key, nonce: &[u8; NONCE_LEN], name: &str) -> hmac::Context {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(DOMAIN);
    ctx.update(nonce);
    ctx.update(name.as_bytes());
    ctx
}

/// The client's answer to `nonce` for `name`, keyed by `token`.
pub fn proof(token: &[u8], nonce: &[u8; NONCE_LEN], name: &str) -> [u8; PROOF_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    let tag = message(&key, nonce, name).sign();
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `proof` answers `nonce` for `name` under `token`. Constant time in the proof.
pub fn verify(token: &[u8], nonce: &[u8; NONCE_LEN], name: &str, proof: &[u8; PROOF_LEN]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    let mut msg = Vec::with_capacity(DOMAIN.len() + NONCE_LEN + name.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(name.as_bytes());
    hmac::verify(&key, &msg, proof).is_ok()
}

/// A fresh random join key for a session's extra connections.
pub fn new_lane_key() -> [u8; LANE_KEY_LEN] {
    new_nonce()
}

/// What a connection joining session `client_id` answers the challenge
/// `nonce` with: the login's proof keyed by the session's join key, over
/// the session's id instead of a name (`lane:<id>`, which no client name
/// can be, so a join proof never passes as a login proof or back).
pub fn lane_proof(
    key: &[u8; LANE_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    client_id: u64,
) -> [u8; PROOF_LEN] {
    proof(key, nonce, &lane_name(client_id))
}

/// Whether `proof` is [`lane_proof`] of `nonce` for `client_id` under `key`. Constant time.
pub fn verify_lane(
    key: &[u8; LANE_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    client_id: u64,
    proof: &[u8; PROOF_LEN],
) -> bool {
    verify(key, nonce, &lane_name(client_id), proof)
}

fn lane_name(client_id: u64) -> String {
    format!("lane:{client_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_token_verifies() {
        let n = new_nonce();
        assert!(verify(
            b"s3cret",
            &n,
            "alice",
            &proof(b"s3cret", &n, "alice")
        ));
    }

    #[test]
    fn wrong_token_name_or_nonce_fails() {
        let n = new_nonce();
        let p = proof(b"s3cret", &n, "alice");
        assert!(!verify(b"other", &n, "alice", &p));
        assert!(!verify(b"s3cret", &n, "mallory", &p));
        assert!(!verify(b"s3cret", &new_nonce(), "alice", &p));
    }

    #[test]
    fn a_lane_proof_holds_for_its_key_nonce_and_session_only() {
        let (key, n) = (new_lane_key(), new_nonce());
        let p = lane_proof(&key, &n, 7);
        assert!(verify_lane(&key, &n, 7, &p));
        assert!(!verify_lane(&key, &n, 8, &p));
        assert!(!verify_lane(&new_lane_key(), &n, 7, &p));
        assert!(!verify_lane(&key, &new_nonce(), 7, &p));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(new_nonce(), new_nonce());
    }
}
