//! Test payloads: deterministic bytes a receiver can check, and a message
//! that says where an echo went wrong.

/// Deterministic pseudo-random bytes (xorshift64) from `seed`, so a failing
/// transfer can be replayed byte for byte.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `Ok` if `back` is exactly `sent`; else how much came back and the first
/// byte that differs, naming `through` (an address, a tunnel).
pub fn same_echo(sent: &[u8], back: &[u8], through: impl std::fmt::Display) -> Result<(), String> {
    if back == sent {
        return Ok(());
    }
    let at = back.iter().zip(sent).take_while(|(a, b)| a == b).count();
    Err(format!(
        "echo through {through} differs: {} of {} bytes back, first difference at byte {at}",
        back.len(),
        sent.len()
    ))
}
