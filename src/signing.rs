//! The ID-token signing keys (DESIGN §6: asymmetric, with a published JWKS). ES256 (P-256) keys
//! are generated once and kept in the store sealed under the master key, so every instance
//! signs with the same key. The newest signs; the one before stays published after a rotation,
//! so tokens issued just before it still verify. Each instance re-reads the keys at most once a
//! second: a rotation made on one instance is in force on all within a second.
//! The same record holds the salt of the per-connection (pairwise) subject ids and the key
//! tickets are derived with.

use crate::crypto::{CryptoError, MasterKeys};
use crate::session::{TicketKey, unix_now};
use crate::store::{SessionStore, StoreError};
use crate::token;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::SecretKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RECORD_KEY: &str = "signing-keys";
const LOCK_KEY: &str = "signing-keys-lock";
/// The record never expires by itself (the store API wants a lifetime: a century).
const RECORD_TTL_SECS: u64 = 100 * 365 * 24 * 3600;
const REREAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub enum KeyError {
    Store(StoreError),
    Crypto(CryptoError),
    /// Another instance is creating or rotating the keys right now.
    Busy,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Store(e) => write!(f, "{e}"),
            KeyError::Crypto(e) => write!(f, "signing keys: {e}"),
            KeyError::Busy => f.write_str("signing keys are being changed by another instance"),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        KeyError::Store(e)
    }
}

impl From<CryptoError> for KeyError {
    fn from(e: CryptoError) -> Self {
        KeyError::Crypto(e)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: u64,
    /// PKCS#8 DER, base64.
    pkcs8: String,
}

/// What the store keeps (sealed): the keys, oldest first, the pairwise salt, the ticket key.
#[derive(Serialize, Deserialize)]
struct StoredKeys {
    pairwise_salt: String,
    ticket_key: String,
    keys: Vec<StoredKey>,
}

impl StoredKeys {
    fn new() -> Result<Self, CryptoError> {
        Ok(Self {
            pairwise_salt: token::random_base62(43),
            ticket_key: token::random_base62(43),
            keys: vec![new_key()?],
        })
    }
}

fn new_key() -> Result<StoredKey, CryptoError> {
    // 32 random bytes are a valid P-256 scalar but with negligible probability; try again then.
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError("no random numbers".into()))?;
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            break key;
        }
    };
    let der = secret
        .to_pkcs8_der()
        .map_err(|_| CryptoError("cannot encode a signing key".into()))?;
    Ok(StoredKey {
        kid: token::random_base62(16),
        created_at: unix_now(),
        pkcs8: STANDARD.encode(der.as_bytes()),
    })
}

/// The keys in force, ready to use.
pub struct SigningKeys {
    /// The newest key: it signs. Kept parsed, public half included: deriving that is a
    /// scalar multiplication, which `jsonwebtoken` repeated for every token it signed.
    pub kid: String,
    pub signer: p256::ecdsa::SigningKey,
    /// The public keys to publish (JWKS entries), newest first.
    pub jwks: Vec<Value>,
    pub pairwise_salt: String,
    pub ticket_key: TicketKey,
}

impl SigningKeys {
    fn load(stored: &StoredKeys) -> Result<Self, CryptoError> {
        let unreadable = || CryptoError("a stored signing key is not a P-256 PKCS#8 key".into());
        let mut jwks = Vec::with_capacity(stored.keys.len());
        let mut newest = None;
        for key in stored.keys.iter().rev() {
            let der = STANDARD.decode(&key.pkcs8).map_err(|_| unreadable())?;
            let secret = SecretKey::from_pkcs8_der(&der).map_err(|_| unreadable())?;
            let mut jwk = serde_json::to_value(secret.public_key().to_jwk()).map_err(|_| unreadable())?;
            jwk["kid"] = json!(key.kid);
            jwk["use"] = json!("sig");
            jwk["alg"] = json!("ES256");
            jwks.push(jwk);
            newest.get_or_insert_with(|| (key.kid.clone(), p256::ecdsa::SigningKey::from(secret)));
        }
        let (kid, signer) = newest.ok_or_else(unreadable)?;
        Ok(Self {
            kid,
            signer,
            jwks,
            pairwise_salt: stored.pairwise_salt.clone(),
            ticket_key: TicketKey::new(stored.ticket_key.clone()),
        })
    }
}

/// The shared key ring of this instance: the store record, and a copy read at most once a second.
pub struct KeyRing {
    store: SessionStore,
    master: Arc<MasterKeys>,
    cached: Mutex<Option<(Instant, Arc<SigningKeys>)>>,
}

impl KeyRing {
    pub fn new(store: SessionStore, master: Arc<MasterKeys>) -> Self {
        Self {
            store,
            master,
            cached: Mutex::new(None),
        }
    }

    /// The keys in force; creates them (once, whichever instance comes first) when there are none.
    pub async fn current(&self) -> Result<Arc<SigningKeys>, KeyError> {
        if let Some((read_at, keys)) = self.cached.lock().ok().and_then(|c| c.clone())
            && read_at.elapsed() < REREAD_EVERY
        {
            return Ok(keys);
        }
        let stored = match self.read().await? {
            Some(stored) => stored,
            None => {
                let fresh = StoredKeys::new()?;
                let sealed = self.seal(&fresh)?;
                if self
                    .store
                    .put_new_value(RECORD_KEY, sealed.as_bytes(), RECORD_TTL_SECS)
                    .await?
                {
                    fresh
                } else {
                    // Another instance made them first: use theirs.
                    self.read().await?.ok_or(KeyError::Busy)?
                }
            }
        };
        let keys = Arc::new(SigningKeys::load(&stored)?);
        if let Ok(mut cache) = self.cached.lock() {
            *cache = Some((Instant::now(), keys.clone()));
        }
        Ok(keys)
    }

    /// Makes a new signing key; the previous one stays published, older ones go. Returns the
    /// new key's id and the previous one's.
    pub async fn rotate(&self) -> Result<(String, String), KeyError> {
        self.current().await?;
        let lock = self
            .store
            .try_lock(LOCK_KEY, 5_000)
            .await?
            .ok_or(KeyError::Busy)?;
        let rotated = self.rotate_locked().await;
        self.store.unlock(lock).await?;
        if let Ok(mut cache) = self.cached.lock() {
            *cache = None;
        }
        rotated
    }

    async fn rotate_locked(&self) -> Result<(String, String), KeyError> {
        let mut stored = self.read().await?.ok_or(KeyError::Busy)?;
        let previous = stored.keys.last().map(|k| k.kid.clone()).unwrap_or_default();
        let key = new_key()?;
        let kid = key.kid.clone();
        stored.keys.push(key);
        let excess = stored.keys.len().saturating_sub(2);
        stored.keys.drain(..excess);
        let sealed = self.seal(&stored)?;
        self.store
            .put_value(RECORD_KEY, sealed.as_bytes(), RECORD_TTL_SECS)
            .await?;
        Ok((kid, previous))
    }

    async fn read(&self) -> Result<Option<StoredKeys>, KeyError> {
        let Some(raw) = self.store.get_value(RECORD_KEY).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&raw);
        let plain = self.master.open(RECORD_KEY, &text)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| KeyError::Crypto(CryptoError("the signing-key record is not readable".into())))
    }

    fn seal(&self, stored: &StoredKeys) -> Result<String, CryptoError> {
        let plain =
            serde_json::to_vec(stored).map_err(|_| CryptoError("cannot encode signing keys".into()))?;
        self.master.seal(RECORD_KEY, &plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id_token::{IdTokenClaims, sign};
    use crate::session::{Identity, LoginPath};
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, jwk::Jwk};

    fn verify(token: &str, keys: &SigningKeys) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwk: Jwk = serde_json::from_value(keys.jwks[0].clone()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["shop"]);
        validation.set_issuer(&["https://relay.example"]);
        decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).map(|t| t.claims)
    }

    #[test]
    fn a_standard_verifier_takes_fresh_tokens_and_refuses_expired_ones() {
        let keys = SigningKeys::load(&StoredKeys::new().unwrap()).unwrap();
        let person = Identity {
            path: LoginPath::MiniProgram,
            openid: "o-person".into(),
            unionid: None,
            appid: "wx0123456789abcdef".into(),
            user_id: None,
            nickname: None,
            avatar_url: None,
            phone: None,
        };
        let at = |now: u64| IdTokenClaims {
            issuer: "https://relay.example",
            connection: "shop",
            identity: &person,
            auth_time: now,
            now,
            nonce: None,
            access_token: None,
        };
        let fresh = sign(&at(unix_now()), &keys).unwrap();
        let claims = verify(&fresh, &keys).unwrap();
        assert_eq!(claims["phone_number_verified"], false);
        assert!(claims.get("unionid").is_none(), "absent claims are left out");
        let expired = sign(&at(unix_now() - 3600), &keys).unwrap();
        assert_eq!(
            verify(&expired, &keys).unwrap_err().kind(),
            &ErrorKind::ExpiredSignature
        );
        let other_keys = SigningKeys::load(&StoredKeys::new().unwrap()).unwrap();
        assert!(
            verify(&fresh, &other_keys).is_err(),
            "another key does not verify it"
        );
    }
}
