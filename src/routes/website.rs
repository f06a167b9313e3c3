//! The website-app path (Open Platform `qrconnect`): the PC page is sent to WeChat's own QR page
//! (or embeds it in an iframe, as `wxLogin.js` does); WeChat sends the browser back to the
//! callback with a code, which completes the same kind of login session as the mini-program path.
//!
//! A login completes only in the browser that started it (DESIGN §6). Starting sets a
//! short-lived HttpOnly cookie holding a random binding value (only its hash is stored); the
//! callback confirms the session only when the browser presents it. An iframe on a website's
//! own origin cannot carry the relay's cookie, so there the callback hands the page a one-time
//! completion code instead, posted only to the connection's allowed origins, which only the
//! holder of the browser secret can turn into a confirmed session. A link or iframe options
//! sent to someone else complete nothing.

use super::{AppState, Vetted, optional_json, scene_id};
use crate::config::{CodeSettings, Connection};
use crate::error::ApiError;
use crate::markup::{escape_html, url_encode};
use crate::session::{Identity, LoginPath, SceneId, Sealed, Ticket, unix_now};
use crate::store::{UpdateError, Versioned};
use crate::token;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

const CALLBACK_PATH: &str = "/v1/callbacks/wechat-website";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/login-sessions/{id}/website", web::post().to(start))
        .route(
            "/v1/login-sessions/{id}/website/complete",
            web::post().to(complete),
        )
        .route(CALLBACK_PATH, web::get().to(callback));
}

/// WeChat returns `state` verbatim; 24 random characters (143 bits) are plenty and short.
const STATE_LEN: usize = 24;

/// Only hashes of states and completion codes are stored, like every other token.
fn state_key(state: &str) -> String {
    format!("website-state:{}", token::hash(state))
}

fn completion_key(code: &str) -> String {
    format!("website-completion:{}", token::hash(code))
}

/// One cookie per state, so two logins in two tabs do not overwrite each other's binding.
fn binding_cookie(state: &str) -> String {
    format!("qrlogin-bind-{}", &token::hash(state)[..16])
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

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// The browser goes to WeChat's page and comes back to the callback.
    #[default]
    Redirect,
    /// WeChat's page in an iframe (`self_redirect`), as `wxLogin.js` embeds it.
    Embed,
}

/// `POST /v1/login-sessions/{id}/website` (the body may be empty).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    #[serde(default)]
    mode: Mode,
    /// Where the callback sends the browser back to (redirect mode): the hosted page.
    return_to: Option<String>,
}

/// What a `state` stands for, stored under its hash until the callback takes it.
#[derive(Serialize, Deserialize)]
struct Started {
    session: SceneId,
    binding_hash: String,
    return_to: Option<String>,
}

/// A resolved person (sealed) waiting for the browser secret holder (the iframe handoff).
#[derive(Serialize, Deserialize)]
struct Handoff {
    session: SceneId,
    identity: Sealed,
}

/// `POST /v1/login-sessions/{id}/website` with the bearer secret and `{"mode"?, "return_to"?}`:
/// WeChat's page address (`url`; for `embed`, the iframe's, plus `wxLogin.js` `options`), and
/// the binding cookie. Each call issues a fresh single-use `state`.
async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: StartRequest = optional_json(&req, &body)?;
    if let Some(r) = &request.return_to
        && (!r.starts_with("/login?") || r.contains(['\\', '\r', '\n']))
    {
        return Err(ApiError::bad_request(
            "invalid_return_to",
            "return_to must be a path of this relay's hosted page (/login?…).",
        ));
    }
    let id = scene_id(&path)?;
    let current = state.browser_session(&req, &id).await?;
    let connection = state.connection_of(&current.session)?;
    let redirect_uri = callback_url(&connection)?;
    current.session.ensure_waiting()?;

    let login_state = token::random_base62(STATE_LEN);
    let binding = token::random_base62(32);
    let ttl = current.session.expires_at.saturating_sub(unix_now()).max(1);
    let started = Started {
        session: id.clone(),
        binding_hash: token::hash(&binding),
        return_to: request.return_to,
    };
    // One live state per session: a new one replaces the old, so a page asking again and again
    // holds one key in the store, not thousands.
    let latest = format!("website-latest:{id}");
    if let Some(previous) = state.store.take_value(&latest).await? {
        state
            .store
            .take_value(&String::from_utf8_lossy(&previous))
            .await?;
    }
    let key = state_key(&login_state);
    state.store.put_record(&key, &started, ttl).await?;
    state.store.put_value(&latest, key.as_bytes(), ttl).await?;

    let appid = &connection.app.appid;
    let mut url = format!(
        "{}/connect/qrconnect?appid={appid}&redirect_uri={}&response_type=code&scope=snsapi_login&state={login_state}",
        state.wechat_open_base,
        url_encode(redirect_uri)
    );
    let body = match request.mode {
        Mode::Redirect => json!({ "url": format!("{url}#wechat_redirect") }),
        Mode::Embed => {
            url.push_str("&login_type=jssdk&self_redirect=true&style=black");
            json!({
                "url": url,
                "options": {
                    "self_redirect": true,
                    "id": "wechat-login",
                    "appid": appid,
                    "scope": "snsapi_login",
                    "redirect_uri": redirect_uri,
                    "state": login_state,
                    "style": "black",
                    "href": "",
                },
            })
        }
    };
    let cookie = Cookie::build(binding_cookie(&login_state), binding)
        .path(CALLBACK_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.public_base_url.starts_with("https://"))
        .max_age(actix_web::cookie::time::Duration::seconds(ttl as i64))
        .finish();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .json(body))
}

/// `POST /v1/login-sessions/{id}/website/complete`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteRequest {
    completion: String,
}

/// `POST /v1/login-sessions/{id}/website/complete` with the bearer secret and
/// `{"completion"}`: the iframe handoff's second half.
async fn complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = scene_id(&path)?;
    state.browser_session(&req, &id).await?;
    let keys = state.keys.current().await?;
    let handoff = state
        .store
        .take_record::<Handoff>(&completion_key(&body.completion))
        .await?
        .filter(|h| h.session == id)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_completion",
                "This completion code is not valid for this login session (used, expired or foreign).",
            )
        })?;
    let stored = confirm(&state, &id, handoff.identity).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(stored.session.browser_view(&keys.ticket_key)))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

/// How a callback ended.
enum Outcome {
    /// The browser that started the login came back: the session is confirmed.
    Confirmed { return_to: Option<String> },
    /// No binding cookie: a page framing the callback may finish with the completion code.
    Handoff {
        session: SceneId,
        completion: String,
        origins: Vec<String>,
    },
    /// The person declined, or WeChat refused the code: the session ended.
    Ended {
        return_to: Option<String>,
        failure: Failure,
    },
}

/// `GET /v1/callbacks/wechat-website?code&state`: WeChat's redirect after the scan.
async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let outcome = match finish(&state, &req, &query).await {
        Ok(outcome) => outcome,
        Err(failure) => {
            return page(
                &state,
                failure.status,
                failure.title,
                &failure.message,
                Posted::Failed,
            );
        }
    };
    let cookie_reset = query.state.as_deref().map(|s| {
        let mut gone = Cookie::build(binding_cookie(s), "").path(CALLBACK_PATH).finish();
        gone.make_removal();
        gone
    });
    let mut response = match outcome {
        Outcome::Confirmed { return_to: Some(to) }
        | Outcome::Ended {
            return_to: Some(to), ..
        } => HttpResponse::Found()
            .insert_header((header::LOCATION, to))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Outcome::Confirmed { return_to: None } => page(
            &state,
            StatusCode::OK,
            "登录成功 · Logged in",
            "You are logged in on the page on your computer. 电脑上的页面已登录。",
            Posted::Confirmed,
        ),
        Outcome::Ended { failure, .. } => page(
            &state,
            failure.status,
            failure.title,
            &failure.message,
            Posted::Failed,
        ),
        Outcome::Handoff {
            session,
            completion,
            origins,
        } => page(
            &state,
            StatusCode::OK,
            "请在发起登录的浏览器中完成 · Finish in the browser that started the login",
            "This login must be finished in the browser that started it. If you did not start it, close this page: nobody was logged in. 此登录只能在发起它的浏览器中完成；若非您本人发起，请关闭此页面，没有人因此登录。",
            Posted::Handoff {
                session,
                completion,
                origins,
            },
        ),
    };
    if let Some(reset) = cookie_reset {
        let _ = response.add_cookie(&reset);
    }
    response
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
        Failure::new(e.status, "登录失败 · Login failed", e.message)
    }
}

async fn finish(state: &AppState, req: &HttpRequest, query: &CallbackQuery) -> Result<Outcome, Failure> {
    let bad_state = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "登录链接无效 · Login link not valid",
            "This login link was already used, has expired, or did not come from this site. Start again on your computer.",
        )
    };
    let login_state = query
        .state
        .as_deref()
        .filter(|s| s.len() == STATE_LEN)
        .ok_or_else(bad_state)?;
    // Taking the state consumes it: a replayed callback finds nothing.
    let started = state
        .store
        .take_record::<Started>(&state_key(login_state))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(bad_state)?;
    let id = started.session;
    let current = state.session(&id).await?;
    let connection = state.connection_of(&current.session)?.clone();
    callback_url(&connection)?;
    current.session.ensure_waiting().map_err(ApiError::from)?;

    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        fail(state, &id, "authorization_denied").await;
        return Ok(Outcome::Ended {
            return_to: started.return_to,
            failure: Failure::new(
                StatusCode::OK,
                "已拒绝登录 · Login declined",
                "You declined the login in WeChat. The page on your computer has been told.",
            ),
        });
    };
    let vetted = match resolve(state, &connection, code).await {
        Ok(identity) => state.vet(&connection, identity).await,
        Err(e) => Err(e),
    };
    let identity = match vetted {
        Ok(Vetted::Allowed(identity)) => identity,
        Ok(Vetted::Denied(reason)) => {
            match state.store.update(&id, |s| s.deny(&reason, unix_now())).await {
                Ok((stored, ())) => state.record(&stored.session),
                Err(e) => tracing::warn!(error = ?e, "cannot record a denied website login"),
            }
            return Ok(Outcome::Ended {
                return_to: started.return_to,
                failure: Failure::new(StatusCode::OK, "登录被拒绝 · Login refused", reason),
            });
        }
        Err(e) => {
            fail(state, &id, e.code).await;
            return Ok(Outcome::Ended {
                return_to: started.return_to,
                failure: e.into(),
            });
        }
    };
    let same_browser = req
        .cookie(&binding_cookie(login_state))
        .is_some_and(|c| token::matches_hash(c.value(), &started.binding_hash));
    if same_browser {
        confirm(state, &id, state.seal_identity(&identity)?).await?;
        return Ok(Outcome::Confirmed {
            return_to: started.return_to,
        });
    }
    let completion = token::random_base62(32);
    let handoff = Handoff {
        session: id.clone(),
        identity: state.seal_identity(&identity)?,
    };
    let ttl = current.session.expires_at.saturating_sub(unix_now()).max(1);
    state
        .store
        .put_record(&completion_key(&completion), &handoff, ttl)
        .await
        .map_err(ApiError::from)?;
    let mut origins = connection.allowed_origins.clone();
    origins.push(state.public_base_url.clone());
    Ok(Outcome::Handoff {
        session: id,
        completion,
        origins,
    })
}

/// Confirms a website-path session with the person WeChat named (sealed).
async fn confirm(state: &AppState, id: &SceneId, identity: Sealed) -> Result<Versioned, ApiError> {
    let keys = state.keys.current().await?;
    let now = unix_now();
    let ticket = Ticket::issue(id, now, state.ticket_ttl_secs, &keys.ticket_key);
    let (stored, ()) = state
        .store
        .update(id, |s| s.confirm_directly(identity.clone(), ticket.clone(), now))
        .await?;
    state.record(&stored.session);
    Ok(stored)
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
        user_id: None,
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

/// What the callback page tells a page framing it (`{"type": "qrlogin-website", …}`).
enum Posted {
    Confirmed,
    Failed,
    /// Posted only to the connection's allowed origins and the relay's own.
    Handoff {
        session: SceneId,
        completion: String,
        origins: Vec<String>,
    },
}

/// A small page. Framed by a login widget, it tells the widget the outcome; its script runs
/// under a per-response nonce.
fn page(state: &AppState, status: StatusCode, title: &str, message: &str, posted: Posted) -> HttpResponse {
    let own = vec![state.public_base_url.clone()];
    let (message_json, origins) = match posted {
        Posted::Confirmed => (json!({ "type": "qrlogin-website", "outcome": "confirmed" }), own),
        Posted::Failed => (json!({ "type": "qrlogin-website", "outcome": "failed" }), own),
        Posted::Handoff {
            session,
            completion,
            origins,
        } => (
            json!({ "type": "qrlogin-website", "outcome": "handoff", "session": session, "completion": completion }),
            origins,
        ),
    };
    let data = json!({ "message": message_json, "origins": origins })
        .to_string()
        .replace('<', "\\u003c");
    let nonce = token::random_base62(22);
    let body = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style nonce="{nonce}">body{{font-family:system-ui,sans-serif;text-align:center;margin:2rem 1rem;color:#222}}p{{color:#555}}</style></head>
<body><h1>{title}</h1><p id="message">{message}</p>
<script type="application/json" id="outcome">{data}</script>
<script nonce="{nonce}">(function () {{
  if (window.parent === window) return;
  var outcome = JSON.parse(document.getElementById('outcome').textContent);
  outcome.origins.forEach(function (origin) {{ window.parent.postMessage(outcome.message, origin); }});
  if (outcome.message.outcome === 'handoff') document.getElementById('message').textContent = '正在完成登录… · Finishing the login…';
}})();</script></body></html>"#,
        title = escape_html(title),
        message = escape_html(message),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; base-uri 'none'"
            ),
        ))
        .body(body)
}
