//! The operator's API, `/v1/admin/…`, behind the operator token: the connections (tenants),
//! their logos and backend credentials, and the ID-token signing keys. Secrets are write-only:
//! no answer carries one, except a new credential, once. Every change is an audit log event
//! (target `audit`): who, what, which fields — never a value.

use super::{AppState, bearer};
use crate::config::ConnectionKind;
use crate::connections::{Record, RegistryError};
use crate::error::ApiError;
use crate::token;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use serde_json::json;

/// Logos are uploaded as they are (≤ 2 MB, checked like the config's).
const LOGO_BODY_LIMIT: usize = 2 * 1024 * 1024 + 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/admin/signing-keys/rotate",
        web::post().to(rotate_signing_key),
    )
    .route("/.well-known/jwks.json", web::get().to(jwks))
    .route("/v1/admin/connections", web::get().to(list))
    .route("/v1/admin/connections", web::post().to(create))
    .route("/v1/admin/connections/{id}", web::get().to(read))
    .route("/v1/admin/connections/{id}", web::patch().to(update))
    .route("/v1/admin/connections/{id}", web::delete().to(delete))
    .service(
        web::resource("/v1/admin/connections/{id}/logo")
            .app_data(web::PayloadConfig::new(LOGO_BODY_LIMIT))
            .route(web::put().to(upload_logo)),
    )
    .route(
        "/v1/admin/connections/{id}/credentials",
        web::get().to(credentials),
    )
    .route(
        "/v1/admin/connections/{id}/credentials",
        web::post().to(issue_credential),
    )
    .route(
        "/v1/admin/connections/{id}/credentials/{credential}",
        web::delete().to(revoke_credential),
    );
}

/// A connection as the operator sees it: its settings, never a secret.
fn view(record: &Record) -> Value {
    let mut view = serde_json::to_value(&record.settings).unwrap_or_default();
    let shared = record.settings.appid.is_none() && record.settings.kind == ConnectionKind::MiniProgram;
    view["mini_program"] = json!(if shared { "shared" } else { "private" });
    view["logo"] = json!(record.logo);
    view["credentials"] = credential_list(record);
    view["updated_at"] = json!(record.updated_at);
    view
}

fn credential_list(record: &Record) -> Value {
    json!(
        record
            .credentials
            .iter()
            .map(|c| json!({ "id": c.id, "created_at": c.created_at }))
            .collect::<Vec<_>>()
    )
}

/// The names of the fields a body set (for the audit log; never their values).
fn field_names(body: &Value) -> Vec<String> {
    body.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn audit(action: &str, connection: &str, fields: &[String]) {
    tracing::info!(target: "audit", actor = "operator", action, connection, fields = ?fields);
}

fn json_body(body: &web::Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("The JSON body is not valid: {e}")))
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let records = state.connections.records().await?;
    let all: Vec<Value> = records.values().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "connections": all })))
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let body = json_body(&body)?;
    let fields = field_names(&body);
    let (record, credential) = state.connections.create(body).await?;
    let id = &record.settings.identifier;
    audit("create_connection", id, &fields);
    let first = record.credentials.first();
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "connection": view(&record),
            "credential": {
                "id": first.map(|c| &c.id),
                "secret": credential.expose(),
                "created_at": first.map(|c| c.created_at),
            },
        })))
}

async fn find(state: &AppState, id: &str) -> Result<Record, ApiError> {
    state
        .connections
        .records()
        .await?
        .remove(id)
        .ok_or_else(|| RegistryError::NotFound.into())
}

async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    Ok(HttpResponse::Ok().json(view(&find(&state, &path).await?)))
}

async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let body = json_body(&body)?;
    let fields = field_names(&body);
    let record = state.connections.update(&path, body).await?;
    audit("update_connection", &path, &fields);
    Ok(HttpResponse::Ok().json(view(&record)))
}

async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    state.connections.delete(&path).await?;
    audit("delete_connection", &path, &[]);
    Ok(HttpResponse::NoContent().finish())
}

async fn upload_logo(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let record = state.connections.set_logo(&path, body.to_vec()).await?;
    audit("upload_logo", &path, &["logo".to_owned()]);
    Ok(HttpResponse::Ok().json(view(&record)))
}

async fn credentials(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    Ok(HttpResponse::Ok().json(json!({ "credentials": credential_list(&find(&state, &path).await?) })))
}

async fn issue_credential(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let (credential, raw) = state.connections.issue_credential(&path).await?;
    audit("issue_credential", &path, std::slice::from_ref(&credential.id));
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "id": credential.id, "secret": raw.expose(), "created_at": credential.created_at })))
}

async fn revoke_credential(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req)?;
    let (id, credential) = path.into_inner();
    state.connections.revoke_credential(&id, &credential).await?;
    audit("revoke_credential", &id, &[credential]);
    Ok(HttpResponse::NoContent().finish())
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
