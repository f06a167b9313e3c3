//! Random identifiers and secrets, their hashes, and constant-time comparison.

use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random characters of `[0-9A-Za-z]` from the OS generator (5.95 bits each).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        // The OS generator only fails when the platform has no entropy source at all.
        if getrandom::fill(&mut buf).is_err() {
            panic!("the operating system's random generator is unavailable");
        }
        // 248 = 4 * 62: rejecting bytes above it keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[(*b % 62) as usize] as char);
        }
    }
    out
}

/// A random pause of up to `max`, so many clients retrying at once do not retry together.
pub fn jitter(max: std::time::Duration) -> std::time::Duration {
    let mut bytes = [0u8; 4];
    // Without an entropy source the pause is simply 0.
    let _ = getrandom::fill(&mut bytes);
    max.mul_f64(f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX))
}

/// Hex SHA-256 of a token: what the stores keep instead of the raw value.
pub fn hash(raw: impl AsRef<[u8]>) -> String {
    hex(&Sha256::digest(raw.as_ref()))
}

/// HMAC-SHA256 under `key` of `parts`, fed in order (ticket derivation, pairwise subjects,
/// account-hook signatures).
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length, so this is never reached.
        Err(_) => {
            let mut digest = Sha256::new();
            digest.update(key);
            for part in parts {
                digest.update(part);
            }
            digest.finalize().into()
        }
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `raw` hashes to `expected_hash`, compared in constant time.
pub fn matches_hash(raw: &str, expected_hash: &str) -> bool {
    constant_time_eq(hash(raw).as_bytes(), expected_hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_have_the_asked_length_and_alphabet_and_differ() {
        let a = random_base62(32);
        let b = random_base62(32);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn hashes_match_only_their_own_token() {
        let h = hash("secret");
        assert!(matches_hash("secret", &h));
        assert!(!matches_hash("secreT", &h));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
