//! The audit trail: one `audit` log event for every session change a person or website
//! causes (start, scan, confirm, cancel, deny, redeem) and every change made through the admin
//! API. Identifiers are masked: enough to correlate, not enough to reuse or to identify.

use crate::session::LoginSession;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// The first four and last two characters of `value`, the rest replaced: `4kTq…1z`.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 8 {
        return "…".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

/// A session reached its current status.
pub fn session_changed(session: &LoginSession) {
    tracing::info!(
        target: "audit",
        event = %session.status.name(),
        connection = %session.connection,
        session = %mask(session.id.as_str()),
        "session changed"
    );
}

/// Records every successful change made through `/v1/admin/…` (method, path, status). Paths
/// hold connection and credential identifiers, never secrets.
pub async fn admin_changes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    // Only admin changes pay for copying the method and path (every request passes here).
    let change = (req.path().starts_with("/v1/admin/")
        && ![Method::GET, Method::HEAD].contains(req.method()))
    .then(|| (req.method().clone(), req.path().to_owned()));
    let response = next.call(req).await?;
    if let Some((method, path)) = change
        && response.status().is_success()
    {
        tracing::info!(target: "audit", event = "admin_change", %method, %path, status = response.status().as_u16(), "admin change");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_a_little_of_each_end() {
        assert_eq!(mask("oAbCdEfGhIjKlMnOpQrStUvWxYz0"), "oAbC…z0");
        assert_eq!(mask("13800138000"), "1380…00");
        assert_eq!(mask("short"), "…");
    }
}
