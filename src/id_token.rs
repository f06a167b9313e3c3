//! ID tokens for website backends: a JWT (HS256) signed with the connection's backend secret,
//! so the backend that redeemed the ticket can verify it with the secret it already holds.

use crate::session::Identity;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// How long an ID token is valid, in seconds.
pub const ID_TOKEN_TTL_SECS: u64 = 300;

pub struct IdTokenClaims<'a> {
    pub issuer: &'a str,
    pub connection: &'a str,
    pub identity: &'a Identity,
    pub session_id: &'a str,
    pub now: u64,
}

/// Signs the claims; `None` only if the key is unusable (HMAC accepts any length, so never).
pub fn sign(claims: &IdTokenClaims<'_>, key: &[u8]) -> Option<String> {
    let identity = claims.identity;
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let payload = json!({
        "iss": claims.issuer,
        "aud": claims.connection,
        "sub": identity.unionid.as_deref().unwrap_or(&identity.openid),
        "iat": claims.now,
        "exp": claims.now + ID_TOKEN_TTL_SECS,
        "sid": claims.session_id,
        "openid": identity.openid,
        "unionid": identity.unionid,
        "appid": identity.appid,
        "login_path": identity.path,
        "phone_number": identity.phone.as_ref().map(|p| &p.phone_number),
        "phone_number_verified": identity.phone.is_some(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(signing_input.as_bytes());
    Some(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ))
}

/// Checks an HS256 token's signature and returns its payload (for tests and backends in Rust).
pub fn verify(token: &str, key: &[u8]) -> Option<serde_json::Value> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
    let payload = signing_input.split_once('.')?.1;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let identity = Identity {
            path: crate::session::LoginPath::MiniProgram,
            openid: "o1".into(),
            unionid: Some("u1".into()),
            appid: "wx0123456789abcdef".into(),
            nickname: None,
            avatar_url: None,
            phone: None,
        };
        let claims = IdTokenClaims {
            issuer: "http://relay",
            connection: "shop",
            identity: &identity,
            session_id: "s",
            now: 100,
        };
        let token = sign(&claims, b"key").unwrap();
        let payload = verify(&token, b"key").unwrap();
        assert_eq!(payload["sub"], "u1");
        assert_eq!(payload["exp"], 400);
        assert!(verify(&token, b"other").is_none());
        let tampered = token.replacen('e', "f", 1);
        assert!(verify(&tampered, b"key").is_none() || tampered == token);
    }
}
