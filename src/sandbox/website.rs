//! The simulator's website-login side (Open Platform website applications): WeChat's
//! `qrconnect` page with a "scan as …" form, and the `/sns` endpoints that turn its codes into
//! an access token and a profile, with WeChat's shapes and error codes.

use super::{GrantKind, SimError, Simulator, Want, derive_id, now, query, respond};
use crate::markup::{escape_html as escape, url_encode};
use crate::token;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Website access tokens live two hours; refresh tokens thirty days.
const ACCESS_TTL_SECS: u64 = 7200;
const REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;

/// A website grant's tokens: who they speak for.
pub(super) struct SnsGrant {
    appid: String,
    user: String,
    access_token: String,
    access_until: u64,
    refresh_until: u64,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/qrconnect", web::get().to(login_page))
        .route("/connect/qrconnect/scan", web::get().to(scan))
        .route("/_sim/website-code", web::post().to(mint_website_code))
        .route("/sns/oauth2/access_token", web::get().to(access_token))
        .route("/sns/oauth2/refresh_token", web::get().to(refresh_token))
        .route("/sns/auth", web::get().to(check_token))
        .route("/sns/userinfo", web::get().to(user_info));
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// What WeChat shows for a bad link (wrong scope, bad AppID or redirect).
fn unreachable_link() -> HttpResponse {
    html("<!doctype html><meta charset=utf-8><title>微信登录</title><p>该链接无法访问 (this link cannot be opened)</p>".into())
}

/// The request's query parameter, or "".
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> &'a str {
    q.get(name).map(String::as_str).unwrap_or_default()
}

fn valid_login_link(q: &HashMap<String, String>) -> bool {
    crate::config::is_valid_appid(param(q, "appid"))
        && param(q, "scope").split(',').any(|s| s == "snsapi_login")
        && (param(q, "redirect_uri").starts_with("http://")
            || param(q, "redirect_uri").starts_with("https://"))
        // A redirect_uri with control characters (CR, LF…) could never be a Location.
        && !param(q, "redirect_uri").chars().any(char::is_control)
}

/// GET /connect/qrconnect: WeChat's login page, here with a form that scans as a named person.
async fn login_page(req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    if !valid_login_link(&q) || param(&q, "response_type") != "code" {
        return unreachable_link();
    }
    let hidden = ["appid", "redirect_uri", "response_type", "scope", "state"]
        .map(|name| {
            format!(
                r#"<input type="hidden" name="{name}" value="{}">"#,
                escape(param(&q, name))
            )
        })
        .concat();
    html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>微信登录 (sandbox)</title>
<style>body{{font-family:system-ui,sans-serif;text-align:center;margin:2rem}}input,button{{font-size:1rem;margin:.3rem}}</style></head>
<body><h1>WeChat login (sandbox)</h1><p>App {appid}. In real WeChat a QR code is shown here; scan it as:</p>
<form method="get" action="qrconnect/scan">{hidden}
<input name="user" value="alice" aria-label="WeChat user">
<button name="action" value="allow">Scan and allow</button>
<button name="action" value="deny">Deny</button></form></body></html>"#,
        appid = escape(param(&q, "appid")),
    ))
}

/// GET /connect/qrconnect/scan: the person scanned; back to `redirect_uri` with a code (or,
/// on denial, with the state alone).
async fn scan(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let user = param(&q, "user");
    if !valid_login_link(&q) || user.is_empty() || user.len() > 128 {
        return unreachable_link();
    }
    let redirect = param(&q, "redirect_uri");
    let joiner = if redirect.contains('?') { '&' } else { '?' };
    let state = url_encode(param(&q, "state"));
    let location = if param(&q, "action") == "deny" {
        format!("{redirect}{joiner}state={state}")
    } else {
        let code = sim.grant(param(&q, "appid").to_owned(), user.to_owned(), GrantKind::Website);
        format!("{redirect}{joiner}code={code}&state={state}")
    };
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// POST /_sim/website-code {"appid"?, "user"}: the code `qrconnect` would hand back.
async fn mint_website_code(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    super::mint(&sim, &body, Want::Website)
}

fn grant_answer(grant: &SnsGrant, refresh: &str, unionid: Option<String>, now: u64) -> Value {
    let mut answer = json!({
        "access_token": grant.access_token,
        "expires_in": grant.access_until.saturating_sub(now),
        "refresh_token": refresh,
        "openid": derive_id(&format!("openid:{}:{}", grant.appid, grant.user)),
        "scope": "snsapi_login",
    });
    if let Some(unionid) = unionid {
        answer["unionid"] = json!(unionid);
    }
    answer
}

/// GET /sns/oauth2/access_token: a website code (single use, ten minutes) → tokens.
async fn access_token(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    respond(sim.enter("oauth2_access_token", None).await.and_then(|_| {
        if param(&q, "grant_type") != "authorization_code" {
            return Err((40002, "invalid grant_type"));
        }
        let mut state = sim.state();
        let appid = param(&q, "appid");
        state.authenticate(appid, param(&q, "secret"))?;
        let now = now();
        let (user, _) = state.redeem_grant(param(&q, "code"), appid, Want::Website, now)?;
        let grant = SnsGrant {
            appid: appid.to_owned(),
            user,
            access_token: token::random_base62(86),
            access_until: now + ACCESS_TTL_SECS,
            refresh_until: now + REFRESH_TTL_SECS,
        };
        let refresh = token::random_base62(86);
        let (_, unionid) = state.identity(appid, &grant.user);
        let answer = grant_answer(&grant, &refresh, unionid, now);
        state.sns.insert(refresh, grant);
        Ok(answer)
    }))
}

/// GET /sns/oauth2/refresh_token: a lapsed access token is replaced, a live one extended; the
/// refresh token itself is never extended.
async fn refresh_token(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    respond(sim.enter("oauth2_refresh_token", None).await.and_then(|_| {
        if param(&q, "grant_type") != "refresh_token" {
            return Err((40002, "invalid grant_type"));
        }
        let mut state = sim.state();
        let now = now();
        let refresh = param(&q, "refresh_token").to_owned();
        let grant = state
            .sns
            .get_mut(&refresh)
            .filter(|g| g.appid == param(&q, "appid") && now < g.refresh_until)
            .ok_or((40030, "invalid refresh_token"))?;
        if now >= grant.access_until {
            grant.access_token = token::random_base62(86);
        }
        grant.access_until = now + ACCESS_TTL_SECS;
        let mut answer = grant_answer(grant, &refresh, None, now);
        if let Some(fields) = answer.as_object_mut() {
            fields.remove("unionid");
        }
        Ok(answer)
    }))
}

/// The grant an access token belongs to, checked against `openid`.
fn granted<'a>(
    sim: &'a super::SimState,
    q: &HashMap<String, String>,
    now: u64,
) -> Result<&'a SnsGrant, SimError> {
    let grant = sim
        .sns
        .values()
        .find(|g| {
            !param(q, "access_token").is_empty()
                && g.access_token == param(q, "access_token")
                && now < g.access_until
        })
        .ok_or((40014, "invalid access_token"))?;
    if derive_id(&format!("openid:{}:{}", grant.appid, grant.user)) != param(q, "openid") {
        return Err((40003, "invalid openid"));
    }
    Ok(grant)
}

/// GET /sns/auth: is this access token good for this openid?
async fn check_token(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    respond(sim.enter("sns_auth", None).await.and_then(|_| {
        granted(&sim.state(), &q, now())?;
        Ok(json!({ "errcode": 0, "errmsg": "ok" }))
    }))
}

/// GET /sns/userinfo: the profile. Gender and region are blank, as WeChat has sent since 2021.
async fn user_info(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    respond(sim.enter("userinfo", None).await.and_then(|_| {
        let state = sim.state();
        let grant = granted(&state, &q, now())?;
        let (openid, unionid) = state.identity(&grant.appid, &grant.user);
        let avatar = derive_id(&format!("avatar:{}", grant.user));
        let mut answer = json!({
            "openid": openid,
            "nickname": grant.user,
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": format!("https://thirdwx.qlogo.cn/mmopen/vi_32/{avatar}/132"),
            "privilege": [],
            "language": "zh_CN",
        });
        if let Some(unionid) = unionid {
            answer["unionid"] = json!(unionid);
        }
        Ok(answer)
    }))
}
