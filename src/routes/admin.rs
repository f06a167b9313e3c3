//! The operator's API, `/v1/admin/…`, behind the operator token. Every change is an audit log
//! event (target `audit`): who, what, which — never a secret value.

use super::{AppState, bearer};
use crate::error::ApiError;
use crate::token;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/admin/signing-keys/rotate",
        web::post().to(rotate_signing_key),
    )
    .route("/.well-known/jwks.json", web::get().to(jwks));
}

/// Checks the operator token (constant time); the admin API is off without a configured one.
fn operator(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::forbidden(
            "admin_disabled",
            "The admin API is off: the operator configured no admin token.",
        ));
    };
    let presented = bearer(req)?;
    if token::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "invalid_admin_token",
            "This is not the operator token.",
        ))
    }
}

/// `POST /v1/admin/signing-keys/rotate`: a new ID-token signing key; the previous one stays
/// in the JWKS so tokens issued before still verify.
async fn rotate_signing_key(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let (kid, previous) = state.keys.rotate().await?;
    tracing::info!(target: "audit", actor = "operator", action = "rotate_signing_key", kid = %kid, previous = %previous);
    Ok(HttpResponse::Ok().json(json!({ "kid": kid, "previous": previous })))
}

/// `GET /.well-known/jwks.json`: the public keys that verify ID tokens (current and previous).
async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state.keys.current().await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(json!({ "keys": keys.jwks })))
}
