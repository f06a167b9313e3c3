//! The tenant's account hook (login-only mode and account association, the relay way). Before
//! a confirm is accepted, the verified person is POSTed to the connection's hook as JSON, signed
//! with `X-Qrlogin-Signature: t={unix time},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`, with a
//! 3 s limit. The tenant answers `{"allow": true, "user_id": "…"}` or
//! `{"allow": false, "reason": "…"}`. A hook that is down, slow or answers anything else is
//! unavailable: the login waits (the phone may retry), it is neither allowed nor denied.

use crate::config::{AccountHook, Connection};
use crate::session::{Identity, unix_now};
use crate::token;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the tenant decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow { user_id: Option<String> },
    Deny { reason: String },
}

/// Why the hook gave no usable answer (for the log; the phone is told only "unavailable").
#[derive(Debug)]
pub struct Unavailable(pub String);

#[derive(Deserialize)]
struct Answer {
    allow: bool,
    user_id: Option<String>,
    reason: Option<String>,
}

/// `t=…,v1=…` for `body` sent at `t`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let mac = token::mac(secret.as_bytes(), &[format!("{t}.{body}").as_bytes()]);
    format!("t={t},v1={}", token::hex(&mac))
}

/// Asks the connection's hook about `identity`.
pub async fn ask(
    http: &reqwest::Client,
    connection: &Connection,
    hook: &AccountHook,
    identity: &Identity,
) -> Result<Verdict, Unavailable> {
    let body = json!({
        "connection": connection.identifier,
        "path": identity.path,
        "appid": identity.appid,
        "openid": identity.openid,
        "unionid": identity.unionid,
        "phone_number": identity.phone.as_ref().map(|p| &p.phone_number),
        "nickname": identity.nickname,
    })
    .to_string();
    let response = http
        .post(&hook.url)
        .timeout(HOOK_TIMEOUT)
        .header("content-type", "application/json")
        .header(
            "x-qrlogin-signature",
            signature(hook.secret.expose(), unix_now(), &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| Unavailable(format!("unreachable or slow: {}", e.without_url())))?;
    if !response.status().is_success() {
        return Err(Unavailable(format!(
            "answered HTTP {}",
            response.status().as_u16()
        )));
    }
    let answer: Answer = response
        .json()
        .await
        .map_err(|_| Unavailable("answered something that is not the hook's JSON".into()))?;
    let user_id = answer.user_id.filter(|u| !u.is_empty() && u.len() <= 256);
    match (answer.allow, user_id) {
        (true, None) if connection.login_only => Err(Unavailable(
            "allowed without a user_id on a login-only connection".into(),
        )),
        (true, user_id) => Ok(Verdict::Allow { user_id }),
        (false, _) => Ok(Verdict::Deny {
            reason: answer
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "The website does not let this WeChat account log in.".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_time_and_body() {
        let s = signature("secret", 1_700_000_000, r#"{"a":1}"#);
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, signature("secret", 1_700_000_001, r#"{"a":1}"#));
        assert_ne!(s, signature("secret", 1_700_000_000, r#"{"a":2}"#));
        assert_ne!(s, signature("other", 1_700_000_000, r#"{"a":1}"#));
    }
}
