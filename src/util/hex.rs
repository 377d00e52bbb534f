//! Hex encoding, and random hex strings from the system's secure RNG.

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 bytes from the system's secure RNG, hex encoded.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system RNG works");
    hex(&b)
}
