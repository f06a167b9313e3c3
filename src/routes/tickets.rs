//! `POST /v1/tickets/redeem`: the website backend trades the browser's one-time ticket for the
//! verified identity and an ID token.

use super::{AppState, bearer};
use crate::error::ApiError;
use crate::id_token::{self, IdTokenClaims};
use crate::session::{Ticket, unix_now};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/tickets/redeem", web::post().to(redeem));
}

/// `POST /v1/tickets/redeem`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemRequest {
    ticket: String,
}

async fn redeem(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RedeemRequest>,
) -> Result<HttpResponse, ApiError> {
    let credential = bearer(&req)?;
    // Who asks first: credentials of no connection learn nothing about any ticket.
    if !state.connections.any_accepts_credential(credential) {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "These backend credentials belong to no connection.",
        ));
    }
    // Another connection's ticket looks exactly like an unknown one.
    let invalid = || ApiError::bad_request("invalid_ticket", "This ticket is not valid.");
    let id = Ticket::session_of(&body.ticket).ok_or_else(invalid)?;
    let current = state.store.get(&id).await?.ok_or_else(invalid)?;
    let connection = state.connection_of(&current.session).map_err(|_| invalid())?;
    if !connection.accepts_credential(credential) {
        return Err(invalid());
    }
    let now = unix_now();
    // The keys first: a redemption that cannot sign must not spend the ticket.
    let keys = state.keys.current().await?;
    let (stored, sealed) = state
        .store
        .update_from(current, |s| s.redeem(&body.ticket, now))
        .await?;
    state.record(&stored.session);
    let identity = state.open_identity(&sealed)?;

    let claims = IdTokenClaims {
        issuer: &state.public_base_url,
        connection: &connection.identifier,
        identity: &identity,
        auth_time: stored.session.finished_at.unwrap_or(now),
        now,
        nonce: None,
        access_token: None,
    };
    let id_token = id_token::sign(&claims, &keys).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an ID token");
        ApiError::internal()
    })?;
    let phone = identity.phone.as_ref();
    let mut user = json!({
            "path": identity.path,
            "openid": identity.openid,
            "unionid": identity.unionid,
            "phone_number": phone.map(|p| &p.phone_number),
            "pure_phone_number": phone.map(|p| &p.pure_phone_number),
            "country_code": phone.map(|p| &p.country_code),
            "nickname": identity.nickname,
            "avatar_url": identity.avatar_url,
            "appid": identity.appid,
            "user_id": identity.user_id,
            "connection": connection.identifier,
    });
    // Absent fields are left out rather than sent as null.
    if let Some(fields) = user.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    Ok(HttpResponse::Ok().json(json!({ "user": user, "id_token": id_token })))
}
