//! The mini-program's endpoints (called with `wx.request`): scan, confirm, cancel, and the
//! connection's logo for the confirm screen.

use super::{AppState, Vetted, scene_id};
use crate::error::ApiError;
use crate::session::{Identity, LoginPath, Ticket, unix_now};
use crate::token;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

/// Launch scenes of a code picked from a chat or the album — a forwarded image, the QRLJacking
/// pattern: 1048/1049 for sun codes, 1012/1013 for link QR codes. Refused unless the connection
/// allows them.
const FORWARDED_SCAN_SCENES: [u32; 4] = [1012, 1013, 1048, 1049];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/mp/scan", web::post().to(scan))
        .route("/v1/mp/confirm", web::post().to(confirm))
        .route("/v1/mp/cancel", web::post().to(cancel));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanRequest {
    scene: String,
    login_code: String,
    launch_scene: Option<u32>,
}

async fn scan(state: web::Data<AppState>, body: web::Json<ScanRequest>) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    let current = state.session(&id).await?;
    let connection = state.connection_of(&current.session)?.clone();
    // Fail closed: a scan that does not say how the code was opened could be a forwarded one.
    let launch_scene = body.launch_scene.filter(|s| *s != 0);
    if launch_scene.is_none() && !connection.allow_missing_launch_scene {
        return Err(ApiError::bad_request(
            "launch_scene_required",
            "Send launch_scene (wx.getEnterOptionsSync().scene): scans that do not say how the code was opened are refused.",
        ));
    }
    if launch_scene.is_some_and(|s| FORWARDED_SCAN_SCENES.contains(&s)) && !connection.allow_forwarded_scans {
        return Err(ApiError::forbidden(
            "forwarded_scan_refused",
            "This code was opened from a forwarded or saved image; scan it from the computer screen.",
        ));
    }
    if connection.is_website() {
        return Err(ApiError::conflict(
            "wrong_login_path",
            "This login session is for WeChat's website login page, not the mini-program.",
        ));
    }
    // Refuse a finished session before spending the person's login code on it.
    current.session.ensure_waiting()?;
    let user = state
        .wechat
        .code_to_session(&connection.app, &body.login_code)
        .await?;
    state.limits.mini_program_call(&state.store, &user.openid).await?;
    let identity = Identity {
        path: LoginPath::MiniProgram,
        openid: user.openid,
        unionid: user.unionid,
        appid: connection.app.appid.clone(),
        user_id: None,
        nickname: None,
        avatar_url: None,
        phone: None,
    };
    let sealed = state.seal_identity(&identity)?;
    let scan_token = token::random_base62(32);
    let scan_token_hash = token::hash(&scan_token);
    let (stored, ()) = state
        .store
        .update(&id, |s| {
            s.scan(&identity, sealed.clone(), scan_token_hash.clone())
        })
        .await?;
    state.metrics.scans.inc();
    let session = &stored.session;
    Ok(HttpResponse::Ok().json(json!({
        "scan_token": scan_token,
        "session": {
            "connection": connection.identifier,
            "display_name": connection.display_name,
            "logo_url": format!("{}/v1/connections/{}/logo", state.public_base_url, connection.identifier),
            "expires_at": session.expires_at,
            // Seconds left, for a countdown that does not trust the phone's clock.
            "expires_in": session.expires_at.saturating_sub(unix_now()),
            "client": {
                "ip": session.client.ip,
                "user_agent": session.client.user_agent,
                "browser": crate::user_agent::describe(&session.client.user_agent),
            },
        }
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    scene: String,
    scan_token: String,
    phone_code: String,
}

async fn confirm(
    state: web::Data<AppState>,
    body: web::Json<ConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    let current = state.session(&id).await?;
    let connection = state.connection_of(&current.session)?.clone();
    // Only the scanner may confirm: check before asking WeChat for the phone number.
    let scanner = current.session.check_scanner(&body.scan_token)?;
    let scanned = state.open_identity(&scanner.identity)?;
    state
        .limits
        .mini_program_call(&state.store, &scanned.openid)
        .await?;
    let phone = state
        .wechat
        .phone_number(&connection.app, &body.phone_code, &scanned.openid)
        .await?;
    let identity = Identity {
        phone: Some(phone),
        ..scanned
    };
    let identity = match state.vet(&connection, identity).await? {
        Vetted::Allowed(identity) => identity,
        Vetted::Denied(reason) => {
            let token = &body.scan_token;
            state
                .store
                .update(&id, |s| {
                    s.check_scanner(token)?;
                    s.deny(&reason, unix_now())
                })
                .await?;
            return Err(ApiError::forbidden("account_denied", reason));
        }
    };
    let sealed = state.seal_identity(&identity)?;
    let keys = state.keys.current().await?;
    let now = unix_now();
    let ticket = Ticket::issue(&id, now, state.ticket_ttl_secs, &keys.ticket_key);
    state
        .store
        .update(&id, |s| {
            s.confirm(&body.scan_token, &identity, sealed.clone(), ticket.clone(), now)
        })
        .await?;
    state.metrics.confirmations.inc();
    Ok(HttpResponse::Ok().json(json!({ "status": "confirmed" })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    scene: String,
    scan_token: String,
}

async fn cancel(
    state: web::Data<AppState>,
    body: web::Json<CancelRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    state
        .store
        .update(&id, |s| s.cancel_by_scanner(&body.scan_token, unix_now()))
        .await?;
    state.metrics.cancellations.inc();
    Ok(HttpResponse::Ok().json(json!({ "status": "cancelled" })))
}
