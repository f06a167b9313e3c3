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
use crate::upgrade::Socket;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket that has not authenticated by then is closed.
const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// While the store is unreachable, each socket re-reads its session this often (plus jitter,
/// so recovering Redis is not hit by every socket at once); the feed's resync comes first
/// when it is back.
const STORE_RETRY_EVERY: Duration = Duration::from_secs(2);
/// A browser that does not take a frame within this is gone: its socket is dropped.
const SEND_WITHIN: Duration = Duration::from_secs(10);
/// After our close frame, how long the browser has to answer with its own before the
/// connection is dropped.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions/{id}/ws", web::get().to(connect));
}

async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
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
    let current = current.map(Box::new);
    let held = state.caps.websocket(&state.client_info(&req).ip, id.as_str())?;
    let keys = state.keys.current().await?;
    let key = keys.ticket_key.clone();
    let opened = state.clone();
    let response = crate::upgrade::accept(&req, move |socket| {
        push_to_browser(opened, key, waiter, current, socket, held)
    })
    .map_err(|_| ApiError::bad_request("websocket_required", "This endpoint speaks WebSocket only."))?;
    state.metrics.websockets_opened.inc();
    Ok(response)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth { secret: String },
}

/// Sends one frame; `false` when the browser is gone or does not take it in time.
async fn send(socket: &mut Socket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_WITHIN, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Waits for the first client message and checks the secret it carries (no secret opens an
/// unknown session). Pings are answered by the socket itself.
async fn authenticate(current: Option<&Versioned>, socket: &mut Socket) -> Result<(), &'static str> {
    let first = tokio::time::timeout(AUTH_WITHIN, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
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

fn frame(current: &Versioned, key: &TicketKey) -> Message {
    Message::text(serde_json::to_string(&current.session.browser_view(key)).unwrap_or_default())
}

/// The next state to push: from the hub, or, while the store is unreachable, a re-read after
/// a pause.
async fn follow(
    waiter: &mut Waiter,
    store: &SessionStore,
    current: &Versioned,
    store_down: bool,
) -> Result<Option<Box<Versioned>>, StoreError> {
    let next = if store_down {
        tokio::time::sleep(STORE_RETRY_EVERY + crate::token::jitter(Duration::from_secs(1))).await;
        waiter.read(store).await
    } else {
        waiter.next_update(store, current).await
    };
    next.map(|next| next.map(Box::new))
}

/// Closes the socket with `code`: our close frame, then the browser's answer (or a short wait
/// for it), so the frame is read before the connection goes. Boxed, as it happens once: a
/// waiting socket does not carry room for it.
fn close(mut socket: Socket, code: CloseCode, reason: &'static str) -> LocalBoxFuture<'static, ()> {
    Box::pin(async move {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if !send(&mut socket, Message::Close(Some(frame))).await {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WITHIN, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    })
}

/// One browser's socket, from its first message to its end. Tens of thousands wait at once,
/// so what each keeps while waiting is kept small: the session record is boxed, and the one-off
/// steps (authenticating, closing) are boxed futures.
async fn push_to_browser(
    state: web::Data<AppState>,
    key: TicketKey,
    mut waiter: Waiter,
    current: Option<Box<Versioned>>,
    mut socket: Socket,
    // Counted against the caps until this socket ends.
    _held: [crate::limits::Held; 3],
) {
    let (store, mut shutdown) = (&state.store, state.shutdown.clone());
    let authenticated = Box::pin(authenticate(current.as_deref(), &mut socket)).await;
    let (Ok(()), Some(mut current)) = (authenticated, current) else {
        let reason = authenticated.err().unwrap_or("invalid_secret");
        close(socket, CloseCode::Policy, reason).await;
        return;
    };
    // A change made while the browser authenticated is already in the waiter: it comes next.
    // A failed send means the browser is gone: stop quietly.
    if !send(&mut socket, frame(&current, &key)).await {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut store_down = false;
    while !current.session.status.is_final_for_browser() {
        // What woke the socket, decided without waiting on anything else, so no branch's
        // output is kept while a frame goes out.
        let woke = tokio::select! {
            update = follow(&mut waiter, store, &current, store_down) => Woke::Update(update),
            () = shutdown.started() => Woke::Restart,
            _ = ping.tick() => Woke::Ping,
            // Pings are answered by the socket itself as it reads.
            message = socket.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        match woke {
            Woke::Update(Ok(Some(next))) => {
                store_down = false;
                if next.version > current.version {
                    current = next;
                    if !send(&mut socket, frame(&current, &key)).await {
                        return;
                    }
                    if let Some(committed) = current.session.changed_at_us {
                        let took = unix_micros().saturating_sub(committed);
                        state
                            .metrics
                            .push_latency
                            .observe(&[], Duration::from_micros(took));
                    }
                }
            }
            Woke::Update(Ok(None)) => break,
            Woke::Update(Err(e)) if unix_now() < current.session.expires_at => {
                if !store_down {
                    tracing::warn!(error = %e, "store unavailable: the socket waits for it");
                }
                store_down = true;
            }
            Woke::Update(Err(_)) => {
                // The session's deadline passed while the store was away: the page retries.
                return close(socket, CloseCode::Again, "store_unavailable").await;
            }
            Woke::Restart => return close(socket, CloseCode::Restart, "service_restart").await,
            Woke::Ping => {
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
    close(socket, CloseCode::Normal, "").await;
}

enum Woke {
    Update(Result<Option<Box<Versioned>>, StoreError>),
    Restart,
    Ping,
}
