//! The OpenID Connect face's protocol pieces, free of HTTP: what an authorization request and
//! an authorization code stand for while they wait in the store, PKCE, client authentication,
//! `at_hash`, and the RFC 6749 error body.

use crate::session::Sealed;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long an access token opens `/oauth2/userinfo`.
pub const ACCESS_TOKEN_TTL_SECS: u64 = 300;

/// An authorization request waiting for its login session (keyed by the request id the hosted
/// page carries as `state`).
#[derive(Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    pub form_post: bool,
    /// The hash of the cookie that binds the request to the browser that made it.
    pub binding_hash: String,
}

/// What an authorization code stands for (keyed by the code's hash; taken once).
#[derive(Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    pub identity: Sealed,
    pub auth_time: u64,
}

/// What an access token opens (keyed by its hash).
#[derive(Serialize, Deserialize)]
pub struct Access {
    pub client_id: String,
    pub scope: String,
    pub identity: Sealed,
}

pub fn pending_key(request_id: &str) -> String {
    format!("oidc-request:{request_id}")
}

pub fn grant_key(code: &str) -> String {
    format!("oidc-code:{}", crate::token::hash(code))
}

pub fn access_key(token: &str) -> String {
    format!("oidc-access:{}", crate::token::hash(token))
}

/// Whether a granted scope includes `name`.
pub fn has_scope(scope: &str, name: &str) -> bool {
    scope.split(' ').any(|s| s == name)
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier)) == challenge`, compared in constant time. A
/// verifier must be 43–128 characters of the unreserved set.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && crate::token::constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// A challenge as S256 makes them: 43 characters of base64url.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// OIDC Core 3.1.3.6: the left half of SHA-256 of the access token, base64url.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// How a client said who it is at the token endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic` or `client_secret_post`.
    Secret { client_id: String, secret: String },
    /// `none`: a public client names itself.
    None { client_id: String },
}

/// The `Authorization: Basic` credentials (RFC 6749 §2.3.1: each part form-urlencoded).
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

fn form_decode(part: &str) -> Option<String> {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// An RFC 6749 §5.2 error body.
pub fn error_body(error: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "error": error, "error_description": description })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20client:s%3Acret+x"));
        assert_eq!(
            basic_credentials(&header),
            Some(("my client".into(), "s:cret x".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn at_hash_is_the_left_half_of_sha256() {
        // OIDC Core A.3's access token and at_hash.
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
