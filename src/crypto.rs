//! Master-key envelope encryption for what the relay must keep but nobody may read in a store
//! dump (DESIGN §6): signing keys, and in time AppSecrets, hook secrets and identities.
//! AES-256-GCM with a fresh 96-bit nonce per seal; every ciphertext names the key that sealed
//! it (`s1.{kid}.{nonce‖ciphertext}`), so a new master key can be put first while records sealed
//! under the old one still open. The `context` is authenticated too: a ciphertext moved to
//! another purpose does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::fmt;
use std::path::Path;

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoError(pub String);

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CryptoError {}

/// The master keys: the first seals, every one opens what it sealed.
pub struct MasterKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        write!(f, "MasterKeys({kids:?})")
    }
}

/// A key's id: the start of its SHA-256, so it names the key without revealing it.
fn key_id(key: &[u8]) -> String {
    crate::token::hash(key)[..8].to_owned()
}

impl MasterKeys {
    /// One base64 32-byte key per line (`head -c 32 /dev/urandom | base64`); the first line
    /// seals, the others still open. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = STANDARD
                .decode(line)
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| CryptoError(format!("line {} is not a base64 32-byte key", n + 1)))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CryptoError(format!("line {} is not a usable key", n + 1)))?;
            keys.push((key_id(&bytes), cipher));
        }
        if keys.is_empty() {
            return Err(CryptoError("no key in the master key file".into()));
        }
        Ok(Self { keys })
    }

    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CryptoError(format!("cannot read master_key_file {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| CryptoError(format!("master_key_file {}: {}", path.display(), e.0)))
    }

    /// The sandbox's made-up key: fixed, so sandbox instances sharing a Redis open each other's
    /// records. Never for production (a `serve` config must name a `master_key_file`).
    pub fn sandbox() -> Self {
        use sha2::{Digest, Sha256};
        let key = Sha256::digest(b"qrlogin-relay sandbox master key, not a secret");
        Self::parse(&STANDARD.encode(key)).unwrap_or_else(|_| Self { keys: Vec::new() })
    }

    /// The id of the key that seals.
    pub fn current_kid(&self) -> &str {
        self.keys.first().map_or("", |(kid, _)| kid.as_str())
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let (kid, cipher) = self
            .keys
            .first()
            .ok_or_else(|| CryptoError("no master key".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError("no random numbers".into()))?;
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError("cannot encrypt".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("s1.{kid}.{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let unreadable = || CryptoError("a sealed value does not open (wrong master key or context)".into());
        let mut parts = sealed.splitn(3, '.');
        let (Some("s1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(unreadable());
        };
        let (_, cipher) =
            self.keys.iter().find(|(k, _)| k == kid).ok_or_else(|| {
                CryptoError(format!("sealed under master key {kid}, which is not configured"))
            })?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| unreadable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let keys = MasterKeys::parse(&key(1)).unwrap();
        let sealed = keys.seal("signing-keys", b"top secret").unwrap();
        assert!(!sealed.contains("top secret"));
        assert_ne!(
            sealed,
            keys.seal("signing-keys", b"top secret").unwrap(),
            "fresh nonces"
        );
        assert_eq!(keys.open("signing-keys", &sealed).unwrap(), b"top secret");
        assert!(keys.open("app-secret", &sealed).is_err(), "the context is bound");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.open("signing-keys", &tampered).is_err());
        assert!(
            MasterKeys::parse(&key(2))
                .unwrap()
                .open("signing-keys", &sealed)
                .is_err()
        );
    }

    #[test]
    fn a_new_master_key_seals_while_the_old_one_still_opens() {
        let old = MasterKeys::parse(&key(1)).unwrap();
        let sealed_before = old.seal("c", b"v").unwrap();
        let rotated = MasterKeys::parse(&format!(
            "{}\n# the old key, until records are resealed\n{}\n",
            key(2),
            key(1)
        ))
        .unwrap();
        assert_eq!(rotated.open("c", &sealed_before).unwrap(), b"v");
        let sealed_after = rotated.seal("c", b"v").unwrap();
        assert!(sealed_after.contains(rotated.current_kid()));
        assert!(old.open("c", &sealed_after).is_err());
        assert!(MasterKeys::parse("not base64!").is_err());
        assert!(
            MasterKeys::parse(&STANDARD.encode([0u8; 16])).is_err(),
            "AES-256 needs 32 bytes"
        );
        assert!(format!("{rotated:?}").len() < 40, "Debug shows key ids only");
        assert_eq!(
            MasterKeys::sandbox()
                .open("c", &MasterKeys::sandbox().seal("c", b"v").unwrap())
                .unwrap(),
            b"v"
        );
    }
}
