//! ID tokens for website backends: ES256 JWTs (with a `kid`) that any backend verifies against
//! the relay's JWKS (`/.well-known/jwks.json`) with an ordinary JWT library. Nothing verifies
//! with a shared secret.

use crate::crypto::CryptoError;
use crate::session::{Identity, LoginPath};
use crate::signing::SigningKeys;
use crate::token;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Signer;
use serde::Serialize;

/// How long an ID token is valid, in seconds.
pub const ID_TOKEN_TTL_SECS: u64 = 300;

/// What a token says, and about whom.
pub struct IdTokenClaims<'a> {
    pub issuer: &'a str,
    pub connection: &'a str,
    pub identity: &'a Identity,
    /// When the person confirmed the login.
    pub auth_time: u64,
    pub now: u64,
    /// The OIDC client's `nonce`, echoed.
    pub nonce: Option<&'a str>,
    /// The access token issued beside it (its `at_hash` goes in).
    pub access_token: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unionid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<&'a str>,
    phone_number_verified: bool,
    amr: [&'static str; 1],
    auth_time: u64,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nickname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_hash: Option<String>,
}

/// Who the person is to this connection: the tenant's own user id when its account hook named
/// one, else the pairwise subject.
pub fn subject(salt: &str, connection: &str, identity: &Identity) -> String {
    identity
        .user_id
        .clone()
        .unwrap_or_else(|| pairwise_subject(salt, connection, identity))
}

/// The `sub` of a person the account hook did not name: stable for one person at one connection and differs between
/// connections, so two tenants cannot join their users on it: HMAC-SHA256 over the connection
/// and the person's unionid (their openid when there is none), keyed by the relay's salt.
pub fn pairwise_subject(salt: &str, connection: &str, identity: &Identity) -> String {
    let person = identity.unionid.as_deref().unwrap_or(&identity.openid);
    let mac = token::mac(
        salt.as_bytes(),
        &[connection.as_bytes(), b"\0", person.as_bytes()],
    );
    URL_SAFE_NO_PAD.encode(mac)
}

/// One part of a JWS: JSON, base64url without padding.
fn base64_json(part: &impl Serialize) -> Result<String, CryptoError> {
    serde_json::to_vec(part)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| CryptoError(format!("cannot encode an ID token: {e}")))
}

/// The JOSE header of every ID token.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// A signed ID token: a JWS in compact form (RFC 7515 §7.1), ES256 (RFC 7518 §3.4: the
/// signature is R and S, 32 bytes each), by `p256`'s deterministic ECDSA (RFC 6979).
pub fn sign(claims: &IdTokenClaims<'_>, keys: &SigningKeys) -> Result<String, CryptoError> {
    let identity = claims.identity;
    let body = Claims {
        iss: claims.issuer,
        aud: claims.connection,
        sub: subject(&keys.pairwise_salt, claims.connection, identity),
        openid: &identity.openid,
        unionid: identity.unionid.as_deref(),
        phone_number: identity.phone.as_ref().map(|p| p.phone_number.as_str()),
        phone_number_verified: identity.phone.is_some(),
        amr: [match identity.path {
            LoginPath::MiniProgram => "wechat_miniprogram",
            LoginPath::Website => "wechat_website",
        }],
        auth_time: claims.auth_time,
        iat: claims.now,
        exp: claims.now + ID_TOKEN_TTL_SECS,
        jti: token::random_base62(22),
        nickname: identity.nickname.as_deref(),
        picture: identity.avatar_url.as_deref(),
        nonce: claims.nonce,
        at_hash: claims.access_token.map(crate::oidc::at_hash),
    };
    let header = Header {
        alg: "ES256",
        typ: "JWT",
        kid: &keys.kid,
    };
    let message = format!("{}.{}", base64_json(&header)?, base64_json(&body)?);
    let signature: Signature = keys
        .signer
        .try_sign(message.as_bytes())
        .map_err(|e| CryptoError(format!("cannot sign an ID token: {e}")))?;
    Ok(format!(
        "{message}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}
