//! SHA-256 digests, hex encoded.

use ring::digest;

/// The SHA-256 of `data`, hex encoded.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    super::hex::hex(digest::digest(&digest::SHA256, data).as_ref())
}
