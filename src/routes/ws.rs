//! `GET /v1/login-sessions/{id}/ws`: the browser's push channel. The browser proves it holds
//! the session's secret with its first message, `{"type": "auth", "secret": "…"}` (never in the
//! URL, which proxies log); the server then sends the current state, one JSON text frame per
//! change, pings every 20 s, and closes normally once the browser has nothing more to wait for.
//! A wrong or missing secret closes the socket with 1008 (policy) and the error code as reason.
//! While the store is unreachable the socket stays open (until the session's deadline) and
//! re-reads once it answers. On shutdown the socket closes with 1012 (service restart): the
//! page reconnects, through the load balancer, to another instance.

use super::{AppState, scene_id};
use crate::error::ApiError;
use crate::metrics::unix_micros;
use crate::push::Waiter;
use crate::session::{TicketKey, unix_now};
use crate::store::{SessionStore, StoreError, Versioned};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;

const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket that has not authenticated by then is closed.
const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// While the store is unreachable, each socket re-reads its session this often (plus jitter,
/// so recovering Redis is not hit by every socket at once); the feed's resync comes first
/// when it is back.
const STORE_RETRY_EVERY: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions/{id}/ws", web::get().to(connect));
}

async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&path)?;
    let waiter = state.hub.watch(&id).await?;
    // An unknown session is refused only after the secret, as a wrong secret is: the socket
    // does not tell which ids exist.
    let current = match state.page_session(&req, &id).await {
        Ok(current) => Some(current),
        Err(e) if e.code == "session_not_found" => None,
        Err(e) => return Err(e),
    };
    let held = state.caps.websocket(&state.client_info(&req).ip, id.as_str())?;
    let (response, socket, messages) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::bad_request("websocket_required", "This endpoint speaks WebSocket only."))?;
    let keys = state.keys.current().await?;
    state.metrics.websockets_opened.inc();
    actix_web::rt::spawn(push_to_browser(
        state.clone(),
        keys.ticket_key.clone(),
        waiter,
        current,
        (socket, messages),
        held,
    ));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth { secret: String },
}

/// Waits for the first client message and checks the secret it carries (no secret opens an
/// unknown session).
async fn authenticate(
    current: Option<&Versioned>,
    socket: &mut actix_ws::Session,
    messages: &mut actix_ws::MessageStream,
) -> Result<(), &'static str> {
    let first = tokio::time::timeout(AUTH_WITHIN, async {
        loop {
            match messages.next().await {
                Some(Ok(Message::Ping(bytes))) => {
                    let _ = socket.pong(&bytes).await;
                }
                Some(Ok(Message::Text(text))) => return Some(text),
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .ok_or("auth_required")?;
    match serde_json::from_str::<ClientMessage>(&first) {
        Ok(ClientMessage::Auth { secret }) if current.is_some_and(|c| c.session.verify_secret(&secret)) => {
            Ok(())
        }
        Ok(ClientMessage::Auth { .. }) => Err("invalid_secret"),
        Err(_) => Err("auth_required"),
    }
}

fn frame(current: &Versioned, key: &TicketKey) -> String {
    serde_json::to_string(&current.session.browser_view(key)).unwrap_or_default()
}

/// The next state to push: from the hub, or, while the store is unreachable, a re-read after
/// a pause.
async fn follow(
    waiter: &mut Waiter,
    store: &SessionStore,
    current: &Versioned,
    store_down: bool,
) -> Result<Option<Versioned>, StoreError> {
    if store_down {
        tokio::time::sleep(STORE_RETRY_EVERY + crate::token::jitter(Duration::from_secs(1))).await;
        return store.get(&current.session.id).await;
    }
    waiter.next_update(store, current).await
}

async fn close(socket: actix_ws::Session, code: CloseCode, reason: &str) {
    let reason = CloseReason {
        code,
        description: Some(reason.into()),
    };
    let _ = socket.close(Some(reason)).await;
}

async fn push_to_browser(
    state: web::Data<AppState>,
    key: TicketKey,
    mut waiter: Waiter,
    current: Option<Versioned>,
    (mut socket, mut messages): (actix_ws::Session, actix_ws::MessageStream),
    // Counted against the caps until this socket ends.
    _held: [crate::limits::Held; 3],
) {
    let (store, mut shutdown) = (&state.store, state.shutdown.clone());
    let authenticated = authenticate(current.as_ref(), &mut socket, &mut messages).await;
    let (Ok(()), Some(mut current)) = (authenticated, current) else {
        close(
            socket,
            CloseCode::Policy,
            authenticated.err().unwrap_or("invalid_secret"),
        )
        .await;
        return;
    };
    // A change made while the browser authenticated is already in the waiter: it comes next.
    // A failed send means the browser is gone: stop quietly.
    if socket.text(frame(&current, &key)).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut store_down = false;
    while !current.session.status.is_final_for_browser() {
        tokio::select! {
            update = follow(&mut waiter, store, &current, store_down) => match update {
                Ok(Some(next)) => {
                    store_down = false;
                    if next.version > current.version {
                        current = next;
                        if socket.text(frame(&current, &key)).await.is_err() {
                            return;
                        }
                        if let Some(committed) = current.session.changed_at_us {
                            let took = unix_micros().saturating_sub(committed);
                            state.metrics.push_latency.observe(&[], Duration::from_micros(took));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if unix_now() < current.session.expires_at => {
                    if !store_down {
                        tracing::warn!(error = %e, "store unavailable: the socket waits for it");
                    }
                    store_down = true;
                }
                Err(_) => {
                    // The session's deadline passed while the store was away: the page retries.
                    close(socket, CloseCode::Again, "store_unavailable").await;
                    return;
                }
            },
            () = shutdown.started() => {
                close(socket, CloseCode::Restart, "service_restart").await;
                return;
            }
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
