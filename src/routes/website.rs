//! The website-app path (Open Platform `qrconnect`): the PC page is sent to WeChat's own QR page
//! (or embeds it with `wxLogin.js`); WeChat sends the browser back to the callback with a code,
//! which completes the same kind of login session as the mini-program path.

use super::{AppState, authorize_browser, scene_id};
use crate::config::{CodeSettings, Connection};
use crate::error::ApiError;
use crate::markup::{escape_html, url_encode};
use crate::session::{Identity, LoginPath, SceneId, Ticket, unix_now};
use crate::store::UpdateError;
use crate::token;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions/{id}/website", web::get().to(start))
        .route("/v1/callbacks/wechat-website", web::get().to(callback));
}

/// WeChat returns `state` verbatim; 24 random characters (143 bits) are plenty and short.
const STATE_LEN: usize = 24;

/// Only the state's hash is stored, like every other token the relay hands out.
fn state_key(state: &str) -> String {
    format!("website-state:{}", token::hash(state))
}

fn callback_url(connection: &Connection) -> Result<&str, ApiError> {
    match &connection.code {
        CodeSettings::QrConnect { callback_url } => Ok(callback_url),
        _ => Err(ApiError::conflict(
            "wrong_login_path",
            "This login session's connection is a mini-program; show its code instead.",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    secret: String,
    mode: Option<String>,
}

/// `GET /v1/login-sessions/{id}/website?secret=…[&mode=embed]`: a 302 to WeChat's QR page, or
/// the `wxLogin.js` options for an iframe. Each call issues a fresh single-use `state`.
async fn start(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<StartQuery>,
) -> Result<HttpResponse, ApiError> {
    let embed = match query.mode.as_deref() {
        None | Some("redirect") => false,
        Some("embed") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_mode",
                "mode must be redirect or embed.",
            ));
        }
    };
    let id = scene_id(&path)?;
    let current = state.session(&id).await?;
    authorize_browser(&current.session, &query.secret)?;
    let connection = state.connection_of(&current.session)?;
    let redirect_uri = callback_url(connection)?;
    current.session.ensure_waiting()?;

    let login_state = token::random_base62(STATE_LEN);
    let ttl = current.session.expires_at.saturating_sub(unix_now()).max(1);
    state
        .store
        .put_value(&state_key(&login_state), id.as_str().as_bytes(), ttl)
        .await?;

    let appid = &connection.app.appid;
    if embed {
        return Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({
                "self_redirect": true,
                "id": "wechat-login",
                "appid": appid,
                "scope": "snsapi_login",
                "redirect_uri": redirect_uri,
                "state": login_state,
                "style": "black",
                "href": "",
            })));
    }
    let location = format!(
        "{}/connect/qrconnect?appid={appid}&redirect_uri={}&response_type=code&scope=snsapi_login&state={login_state}#wechat_redirect",
        state.wechat_open_base,
        url_encode(redirect_uri)
    );
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

/// `GET /v1/callbacks/wechat-website?code&state`: WeChat's redirect after the scan. Answers with
/// a small page (it may be shown inside the PC page's iframe).
async fn callback(state: web::Data<AppState>, query: web::Query<CallbackQuery>) -> HttpResponse {
    match complete(&state, &query).await {
        Ok(()) => page(
            StatusCode::OK,
            "Logged in",
            "You are logged in. Return to the page on your computer.",
            "confirmed",
        ),
        Err(failure) => page(failure.status, failure.title, &failure.message, "failed"),
    }
}

struct Failure {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::new(e.status, "Login failed", e.message)
    }
}

async fn complete(state: &AppState, query: &CallbackQuery) -> Result<(), Failure> {
    let bad_state = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "Login link not valid",
            "This login link was already used, has expired, or did not come from this site. Start again on your computer.",
        )
    };
    let login_state = query
        .state
        .as_deref()
        .filter(|s| s.len() == STATE_LEN)
        .ok_or_else(bad_state)?;
    // Taking the state consumes it: a replayed callback finds nothing.
    let bound = state
        .store
        .take_value(&state_key(login_state))
        .await
        .map_err(ApiError::from)?;
    let id = bound
        .and_then(|b| SceneId::parse(&String::from_utf8_lossy(&b)))
        .ok_or_else(bad_state)?;
    let current = state.session(&id).await?;
    let connection = state.connection_of(&current.session)?.clone();
    callback_url(&connection)?;
    current.session.ensure_waiting().map_err(ApiError::from)?;

    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        fail(state, &id, "authorization_denied").await;
        return Err(Failure::new(
            StatusCode::OK,
            "Login declined",
            "You declined the login in WeChat. The page on your computer has been told.",
        ));
    };
    let identity = match resolve(state, &connection, code).await {
        Ok(identity) => identity,
        Err(e) => {
            fail(state, &id, e.code).await;
            return Err(e.into());
        }
    };
    let now = unix_now();
    let ticket = Ticket::issue(&id, now, state.ticket_ttl_secs);
    state
        .store
        .update(&id, |s| s.confirm_directly(identity.clone(), ticket.clone(), now))
        .await
        .map_err(ApiError::from)?;
    state.metrics.confirmations.inc();
    Ok(())
}

/// The code → the person: `/sns/oauth2/access_token`, then `/sns/userinfo`.
async fn resolve(state: &AppState, connection: &Connection, code: &str) -> Result<Identity, ApiError> {
    let grant = state.wechat.website_grant(&connection.app, code).await?;
    let profile = state.wechat.website_profile(&grant).await?;
    Ok(Identity {
        path: LoginPath::Website,
        openid: grant.openid,
        unionid: profile.unionid.or(grant.unionid),
        appid: connection.app.appid.clone(),
        nickname: profile.nickname.filter(|n| !n.is_empty()),
        avatar_url: profile.headimgurl.filter(|u| !u.is_empty()),
        phone: None,
    })
}

/// Ends the session with `error` so the waiting PC page is told; a session that already ended
/// stays as it is.
async fn fail(state: &AppState, id: &SceneId, error: &str) {
    match state.store.update(id, |s| s.fail(error, unix_now())).await {
        Ok(_) | Err(UpdateError::Refused(_)) | Err(UpdateError::NotFound) => {}
        Err(UpdateError::Store(e)) => tracing::error!(error = %e, "cannot record a failed website login"),
    }
}

/// A small page; inside the PC page's iframe it also tells the parent window the outcome.
fn page(status: StatusCode, title: &str, message: &str, outcome: &str) -> HttpResponse {
    let body = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>body{{font-family:system-ui,sans-serif;text-align:center;margin:3rem 1rem;color:#222}}p{{color:#555}}</style></head>
<body><h1>{title}</h1><p>{message}</p>
<script>if (window.parent !== window) window.parent.postMessage({{"qrlogin": "{outcome}"}}, "*");</script></body></html>"#,
        title = escape_html(title),
        message = escape_html(message),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
