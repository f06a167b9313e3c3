//! The PC browser's endpoints: start a session, show its code, read (or long-poll) it, cancel it.

use super::{AppState, cors, optional_json, scene_id};
use crate::codes::BrandedCode;
use crate::error::ApiError;
use crate::session::{LoginSession, Status, unix_now};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest a long-poll waits.
const MAX_WAIT_SECS: u64 = 30;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions", web::post().to(create))
        .route("/v1/login-sessions/{id}", web::get().to(read))
        .route("/v1/login-sessions/{id}", web::delete().to(cancel))
        .route("/v1/login-sessions/{id}/code", web::get().to(code));
}

/// `POST /v1/login-sessions` (the body may be empty).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// The connection's identifier; the default connection when absent.
    connection: Option<String>,
}

/// A started login session, for the page that waits on it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedSession {
    #[schema(value_type = String)]
    id: crate::session::SceneId,
    /// The page's secret: send it as `Authorization: Bearer` and as the socket's first message.
    secret: String,
    status: Status,
    connection: String,
    expires_at: u64,
    expires_in: u64,
    ws_url: String,
    /// The branded code (mini-program connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    code_url: Option<String>,
    /// Where to POST for WeChat's website login page (website connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    website_url: Option<String>,
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CreateRequest = optional_json(&req, &body)?;
    let connection = state.connection(request.connection.as_deref())?.clone();
    cors::check_origin(&state, &req, &connection)?;
    let now = unix_now();
    let (client, ttl) = (state.client_info(&req), connection.session_ttl_secs);
    state.limits.session_start(&state.store, &client.ip).await?;
    let start = |id| LoginSession::start(id, &connection.identifier, client.clone(), now, ttl);
    let (session, secret) = state
        .pool
        .start_session(&state.store, &connection, ttl, start)
        .await?;
    state.record(&session);
    let id = session.id.clone();

    let base = &state.public_base_url;
    let ws_base = base.replacen("http", "ws", 1);
    let body = CreatedSession {
        ws_url: format!("{ws_base}/v1/login-sessions/{id}/ws"),
        code_url: (!connection.is_website()).then(|| format!("{base}/v1/login-sessions/{id}/code")),
        website_url: connection
            .is_website()
            .then(|| format!("{base}/v1/login-sessions/{id}/website")),
        id,
        secret,
        status: Status::Pending,
        connection: connection.identifier.clone(),
        expires_at: session.expires_at,
        expires_in: ttl,
    };
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    wait: Option<u64>,
    status: Option<String>,
}

/// `GET /v1/login-sessions/{id}`, optionally long-polling: with `?wait=N` it answers as soon
/// as the status differs from `?status=` (or from the current one), or after N seconds.
async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&path)?;
    let known = match query.status.as_deref() {
        Some(raw) => Some(Status::parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status must be pending, scanned, confirmed, redeemed, cancelled, expired or denied",
            )
        })?),
        None => None,
    };
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    // A long-poll watches before reading, so a change in between is not missed; a plain read
    // only reads (on a Redis Cluster, watching costs a subscription).
    let waiter = if wait.is_zero() {
        None
    } else {
        Some(state.hub.watch(&id).await?)
    };
    let mut current = state.browser_session(&req, &id).await?;
    let keys = state.keys.current().await?;
    if let Some(mut waiter) = waiter {
        let baseline = known.unwrap_or(current.session.status);
        let _held = state.caps.long_poll(&state.client_info(&req).ip)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = state.shutdown.clone();
        // On shutdown a long-poll answers at once; the page's next one goes to another instance.
        while current.session.status == baseline && !shutdown.has_started() {
            tokio::select! {
                next = tokio::time::timeout_at(deadline, waiter.next_update(&state.store, &current)) => match next {
                    Ok(Ok(Some(next))) => current = next,
                    Ok(Ok(None)) => return Err(ApiError::session_not_found()),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => break,
                },
                () = shutdown.started() => break,
            }
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(current.session.browser_view(&keys.ticket_key)))
}

async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&path)?;
    state.browser_session(&req, &id).await?;
    let (stored, ()) = state
        .store
        .update(&id, |s| s.cancel_by_browser(unix_now()))
        .await?;
    let keys = state.keys.current().await?;
    Ok(HttpResponse::Ok().json(stored.session.browser_view(&keys.ticket_key)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeQuery {
    format: Option<String>,
}

/// The branded code: public (the id is in it anyway), cacheable until the session expires.
/// PNG, or JPEG with `?format=jpeg`.
async fn code(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<CodeQuery>,
) -> Result<HttpResponse, ApiError> {
    let jpeg = match query.format.as_deref() {
        None | Some("png") => false,
        Some("jpeg" | "jpg") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                "format must be png or jpeg.",
            ));
        }
    };
    let id = scene_id(&path)?;
    let current = state.page_session(&req, &id).await?;
    if current.session.status.is_final_for_browser() {
        return Err(ApiError::gone(
            "session_finished",
            "This login session is over; its code is no longer served.",
        ));
    }
    let etag = format!("\"{id}.{}\"", if jpeg { "jpeg" } else { "png" });
    let max_age = current.session.expires_at.saturating_sub(unix_now());
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::ETAG, etag.clone()))
        .insert_header((header::CACHE_CONTROL, format!("private, max-age={max_age}")));
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok(response
            .status(actix_web::http::StatusCode::NOT_MODIFIED)
            .finish());
    }
    if !jpeg {
        let png = state
            .store
            .get_code(&id)
            .await?
            .ok_or_else(ApiError::session_not_found)?;
        return Ok(response.content_type("image/png").body(png));
    }
    // The JPEG variant costs ~9 ms of CPU: made once per session and kept beside the PNG.
    if let Some(jpeg) = state.store.get_code_jpeg(&id).await? {
        return Ok(response.content_type("image/jpeg").body(jpeg));
    }
    let png = state
        .store
        .get_code(&id)
        .await?
        .ok_or_else(ApiError::session_not_found)?;
    let converted = web::block(move || BrandedCode::to_jpeg(&png))
        .await
        .map_err(|_| ApiError::internal())?;
    let jpeg = converted.map_err(|e| {
        tracing::error!(error = %e, "cannot convert a code to JPEG");
        ApiError::internal()
    })?;
    state.metrics.jpeg_conversions.inc();
    state.store.put_code_jpeg(&id, &jpeg, max_age).await?;
    Ok(response.content_type("image/jpeg").body(jpeg))
}
