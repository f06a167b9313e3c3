//! `GET /v1/login-sessions/{id}/ws?secret=…`: the browser's push channel. The server sends the
//! current state at once, one JSON text frame per change, pings every 20 s, and closes normally
//! once the browser has nothing more to wait for.

use super::{AppState, authorize_browser, scene_id};
use crate::error::ApiError;
use crate::push::Waiter;
use crate::store::{SessionStore, Versioned};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;

const PING_EVERY: Duration = Duration::from_secs(20);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions/{id}/ws", web::get().to(connect));
}

#[derive(Deserialize)]
struct SecretQuery {
    secret: String,
}

async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<SecretQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&path)?;
    let waiter = state.hub.watch(&id);
    let current = state.session(&id).await?;
    authorize_browser(&current.session, &query.secret)?;
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.connection_of(&current.session)?.allows_origin(origin) {
        return Err(ApiError::forbidden(
            "origin_not_allowed",
            "This page's origin may not open this login session.",
        ));
    }
    let (response, socket, messages) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::bad_request("websocket_required", "This endpoint speaks WebSocket only."))?;
    state.metrics.websockets_opened.inc();
    actix_web::rt::spawn(push_to_browser(
        state.store.clone(),
        waiter,
        current,
        socket,
        messages,
    ));
    Ok(response)
}

fn frame(current: &Versioned) -> String {
    serde_json::to_string(&current.session.browser_view()).unwrap_or_default()
}

async fn push_to_browser(
    store: SessionStore,
    mut waiter: Waiter,
    mut current: Versioned,
    mut socket: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
) {
    // A failed send means the browser is gone: stop quietly.
    if socket.text(frame(&current)).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    while !current.session.status.is_final_for_browser() {
        tokio::select! {
            update = waiter.next_update(&store, &current) => match update {
                Ok(Some(next)) if next.version > current.version => {
                    current = next;
                    if socket.text(frame(&current)).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "push stopped: store unavailable");
                    let reason = CloseReason { code: CloseCode::Again, description: Some("store unavailable".into()) };
                    let _ = socket.close(Some(reason)).await;
                    return;
                }
            },
            _ = ping.tick() => {
                if socket.ping(b"").await.is_err() {
                    return;
                }
            }
            message = messages.next() => match message {
                Some(Ok(Message::Ping(bytes))) => {
                    if socket.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.close(Some(CloseCode::Normal.into())).await;
}
