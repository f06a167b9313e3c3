//! The mini-program's endpoints (called with `wx.request`): scan, confirm, cancel, and the
//! connection's logo for the confirm screen.

use super::{AppState, Vetted, scene_id};
use crate::error::ApiError;
use crate::session::{Identity, LoginPath, Ticket, unix_now};
use crate::token;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Launch scenes of a code picked from a chat or the album — a forwarded image, the QRLJacking
/// pattern: 1048/1049 for sun codes, 1012/1013 for link QR codes. Refused unless the connection
/// allows them.
const FORWARDED_SCAN_SCENES: [u32; 4] = [1012, 1013, 1048, 1049];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/mp/scan", web::post().to(scan))
        .route("/v1/mp/confirm", web::post().to(confirm))
        .route("/v1/mp/cancel", web::post().to(cancel));
}

/// `POST /v1/mp/scan`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scene": "4kTq2Xw9LmB7vN3pR8sY1z", "login_code": "0a3Xk1Ga1sGAbc0b5xIa1lP2pV3Xk1Gw", "launch_scene": 1047}))]
pub(crate) struct ScanRequest {
    /// The login session id, from the page's `scene` (or the last segment of `q`).
    scene: String,
    /// What `wx.login` returned.
    login_code: String,
    /// `wx.getEnterOptionsSync().scene`: how the code was opened (1047 camera scan, 1011 link
    /// QR code; 1048/1049/1012/1013 are forwarded images and refused by default).
    launch_scene: Option<u32>,
}

/// The scan's answer: what the confirm screen shows.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "scan_token": "Jc8Rk2mQ7xT1vB9nW4pL6sD3fG5hY0aZ",
    "session": {
        "connection": "default",
        "display_name": "Sandbox Mini Program",
        "logo_url": "https://relay.example.com/v1/connections/default/logo",
        "expires_at": 1795324369,
        "expires_in": 97,
        "client": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "browser": "Chrome 131 · Windows"}
    }
}))]
pub(crate) struct ScanAnswer {
    /// Proves later calls come from the person who scanned; keep it in memory only.
    scan_token: String,
    session: ScannedSession,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ScannedSession {
    connection: String,
    display_name: String,
    logo_url: String,
    /// Unix seconds.
    expires_at: u64,
    /// Seconds left, for a countdown that does not trust the phone's clock.
    expires_in: u64,
    client: RequestingClient,
}

/// The computer that started the login, so the person can notice one they did not start.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequestingClient {
    ip: String,
    user_agent: String,
    /// The user agent in words, e.g. "Chrome 131 · Windows".
    browser: String,
}

/// The new status of a confirmed or cancelled login.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatusAnswer {
    #[schema(example = "confirmed")]
    status: crate::session::Status,
}

async fn scan(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ScanRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    let ip = state.client_info(&req).ip;
    state
        .limits
        .mini_program_request(&state.store, &ip, Some(id.as_str()))
        .await?;
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
        .update_from(current, |s| {
            s.scan(&identity, sealed.clone(), scan_token_hash.clone())
        })
        .await?;
    let session = &stored.session;
    state.record(session);
    Ok(HttpResponse::Ok().json(ScanAnswer {
        scan_token,
        session: ScannedSession {
            logo_url: format!(
                "{}/v1/connections/{}/logo",
                state.public_base_url, connection.identifier
            ),
            connection: connection.identifier.clone(),
            display_name: connection.display_name.clone(),
            expires_at: session.expires_at,
            expires_in: session.expires_at.saturating_sub(unix_now()),
            client: RequestingClient {
                ip: session.client.ip.clone(),
                browser: crate::user_agent::describe(&session.client.user_agent),
                user_agent: session.client.user_agent.clone(),
            },
        },
    }))
}

/// `POST /v1/mp/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scene": "4kTq2Xw9LmB7vN3pR8sY1z", "scan_token": "Jc8Rk2mQ7xT1vB9nW4pL6sD3fG5hY0aZ", "phone_code": "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"}))]
pub(crate) struct ConfirmRequest {
    scene: String,
    scan_token: String,
    /// The getPhoneNumber button's `e.detail.code`.
    phone_code: String,
}

async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    let ip = state.client_info(&req).ip;
    state.limits.mini_program_request(&state.store, &ip, None).await?;
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
            let (stored, ()) = state
                .store
                .update(&id, |s| {
                    s.check_scanner(token)?;
                    s.deny(&reason, unix_now())
                })
                .await?;
            state.record(&stored.session);
            return Err(ApiError::forbidden("account_denied", reason));
        }
    };
    let sealed = state.seal_identity(&identity)?;
    let keys = state.keys.current().await?;
    let now = unix_now();
    let ticket = Ticket::issue(&id, now, state.ticket_ttl_secs, &keys.ticket_key);
    let (stored, ()) = state
        .store
        .update_from(current, |s| {
            s.confirm(&body.scan_token, &identity, sealed.clone(), ticket.clone(), now)
        })
        .await?;
    state.record(&stored.session);
    Ok(HttpResponse::Ok().json(StatusAnswer {
        status: crate::session::Status::Confirmed,
    }))
}

/// `POST /v1/mp/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scene": "4kTq2Xw9LmB7vN3pR8sY1z", "scan_token": "Jc8Rk2mQ7xT1vB9nW4pL6sD3fG5hY0aZ"}))]
pub(crate) struct CancelRequest {
    scene: String,
    scan_token: String,
}

async fn cancel(
    state: web::Data<AppState>,
    body: web::Json<CancelRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&body.scene)?;
    let (stored, ()) = state
        .store
        .update(&id, |s| s.cancel_by_scanner(&body.scan_token, unix_now()))
        .await?;
    state.record(&stored.session);
    Ok(HttpResponse::Ok().json(StatusAnswer {
        status: crate::session::Status::Cancelled,
    }))
}
