//! The WeChat simulator: WeChat's server API with its real wire format (HTTP 200 with
//! `errcode` bodies, single-use five-minute codes, stable-token rotation, scene/page/width
//! checks, sun-code images), plus `/_sim/*` control endpoints that mint what a phone would get.
//! It is the newcomer's sandbox and what the tests talk to; it keeps its state in memory.

mod controls;
mod settings;
mod sun_code;
mod unlimited_code;
mod website;

pub use settings::{SandboxOptions, sandbox_settings};
pub mod demo;
pub use sun_code::draw as draw_sun_code;

use crate::config::is_valid_appid;
use crate::token;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// The sandbox mini-program, built in.
pub const SANDBOX_APPID: &str = "wxa5d0b0c0ffee0001";
pub const SANDBOX_APP_SECRET: &str = "5a4db0c0ffee0001sandbox0secret00";
/// The sandbox website application (Open Platform), bound to the same account.
pub const SANDBOX_WEBSITE_APPID: &str = "wxa5d0b0c0ffee0002";
pub const SANDBOX_WEBSITE_APP_SECRET: &str = "5a4db0c0ffee0002sandbox0secret00";
/// The Open Platform account the sandbox apps are bound to (so they get unionids).
const SANDBOX_OPEN_ACCOUNT: &str = "sandbox-open-platform";
/// The page the sandbox's codes open: the reference mini-program's login page.
pub const SANDBOX_LOGIN_PAGE: &str = "pages/login/login";
/// The published pages of the sandbox mini-program (`miniprogram-contract/`'s app.json).
pub const SANDBOX_PAGES: [&str; 2] = ["pages/index/index", SANDBOX_LOGIN_PAGE];

const CODE_TTL_SECS: u64 = 300;
/// Website-login codes last ten minutes.
const WEBSITE_CODE_TTL_SECS: u64 = 600;
/// How long a replaced token keeps working, as WeChat promises.
const TOKEN_OVERLAP_SECS: u64 = 300;
const FORCED_REFRESHES_PER_DAY: u32 = 20;
const FORCED_REFRESH_SPACING_SECS: u64 = 30;

struct SimApp {
    secret: String,
    open_account: Option<String>,
    /// Published pages; `None` accepts any page (apps registered on first use).
    pages: Option<Vec<String>>,
}

#[derive(Default)]
struct StableTokens {
    current: Option<(String, u64)>,
    last_forced: Option<u64>,
    forced_today: u32,
}

#[derive(PartialEq, Eq)]
enum GrantKind {
    Login,
    Phone(String),
    Website,
}

/// Which kind of code an API takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Login,
    Phone,
    Website,
}

impl GrantKind {
    fn want(&self) -> Want {
        match self {
            GrantKind::Login => Want::Login,
            GrantKind::Phone(_) => Want::Phone,
            GrantKind::Website => Want::Website,
        }
    }
}

struct Grant {
    appid: String,
    user: String,
    kind: GrantKind,
    expires_at: u64,
    used: bool,
}

#[derive(Default)]
struct SimState {
    apps: HashMap<String, SimApp>,
    stable: HashMap<String, StableTokens>,
    /// Every token that works, with its app and the time it stops working.
    tokens: HashMap<String, (String, u64)>,
    grants: HashMap<String, Grant>,
    /// Website grants, by refresh token.
    sns: HashMap<String, website::SnsGrant>,
    failures: HashMap<String, VecDeque<i64>>,
    /// Added latency per API, optionally for one AppID only.
    delays: HashMap<String, controls::Delay>,
    calls: HashMap<String, u64>,
}

/// The simulator's state. One per simulator; share it through `web::Data`.
pub struct Simulator {
    state: Mutex<SimState>,
    token_ttl_secs: u64,
    layouts: sun_code::Layouts,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new(7200)
    }
}

/// A WeChat-style failure: `errcode` and the start of `errmsg`.
type SimError = (i64, &'static str);

impl Simulator {
    pub fn new(token_ttl_secs: u64) -> Self {
        let mut state = SimState::default();
        state.apps.insert(
            SANDBOX_APPID.to_owned(),
            SimApp {
                secret: SANDBOX_APP_SECRET.to_owned(),
                open_account: Some(SANDBOX_OPEN_ACCOUNT.to_owned()),
                pages: Some(SANDBOX_PAGES.iter().map(|p| (*p).to_owned()).collect()),
            },
        );
        state.apps.insert(
            SANDBOX_WEBSITE_APPID.to_owned(),
            SimApp {
                secret: SANDBOX_WEBSITE_APP_SECRET.to_owned(),
                open_account: Some(SANDBOX_OPEN_ACCOUNT.to_owned()),
                pages: None,
            },
        );
        Self {
            state: Mutex::new(state),
            token_ttl_secs,
            layouts: sun_code::Layouts::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mints a single-use code for `user` of `appid`, as the phone would receive it.
    fn grant(&self, appid: String, user: String, kind: GrantKind) -> String {
        // Phone codes look like WeChat's (64 hex digits); the others are opaque.
        let code = match kind {
            GrantKind::Phone(_) => token::hash(token::random_base62(32)),
            GrantKind::Login | GrantKind::Website => token::random_base62(32),
        };
        let ttl = if kind == GrantKind::Website {
            WEBSITE_CODE_TTL_SECS
        } else {
            CODE_TTL_SECS
        };
        let grant = Grant {
            appid,
            user,
            kind,
            expires_at: now() + ttl,
            used: false,
        };
        self.state().grants.insert(code.clone(), grant);
        code
    }

    /// Counts the call, waits out any latency set for `api` (and `appid`, when the caller
    /// names one), and consumes an injected failure for `api`, if one is queued.
    async fn enter(&self, api: &str, appid: Option<&str>) -> Result<(), SimError> {
        let delay = {
            let mut state = self.state();
            *state.calls.entry(api.to_owned()).or_default() += 1;
            state.delays.get(api).and_then(|d| d.applies_to(appid))
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match self.state().failures.get_mut(api).and_then(VecDeque::pop_front) {
            Some(errcode) => Err((errcode, "injected failure")),
            None => Ok(()),
        }
    }
}

impl SimState {
    /// WeChat's app check: a known app needs its secret; a new well-formed AppID is registered
    /// with the secret of its first request.
    fn authenticate(&mut self, appid: &str, secret: &str) -> Result<(), SimError> {
        if appid.is_empty() {
            return Err((41002, "appid missing"));
        }
        if !is_valid_appid(appid) {
            return Err((40013, "invalid appid"));
        }
        if secret.is_empty() {
            return Err((41004, "appsecret missing"));
        }
        let app = self.apps.entry(appid.to_owned()).or_insert_with(|| SimApp {
            secret: secret.to_owned(),
            open_account: None,
            pages: None,
        });
        if token::constant_time_eq(app.secret.as_bytes(), secret.as_bytes()) {
            Ok(())
        } else {
            Err((40125, "invalid appsecret"))
        }
    }

    fn app_of_token(&self, token: Option<&str>, now: u64) -> Result<String, SimError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or((41001, "access_token missing"))?;
        match self.tokens.get(token) {
            Some((appid, until)) if *until > now => Ok(appid.clone()),
            _ => Err((40001, "invalid credential, access_token is invalid or not latest")),
        }
    }

    fn issue_token(&mut self, appid: &str, ttl: u64, now: u64) -> (String, u64) {
        let token = format!("{}_{}", now % 100, token::random_base62(120));
        self.tokens.insert(token.clone(), (appid.to_owned(), now + ttl));
        (token, now + ttl)
    }

    /// Spends a single-use code of kind `wanted` for `appid`: the user it was minted for, and
    /// the phone number for phone codes. Each API answers misuse as WeChat does.
    fn redeem_grant(
        &mut self,
        code: &str,
        appid: &str,
        wanted: Want,
        now: u64,
    ) -> Result<(String, Option<String>), SimError> {
        const INVALID: SimError = (40029, "invalid code");
        let grant = self.grants.get_mut(code).ok_or(INVALID)?;
        if grant.kind.want() != wanted || now >= grant.expires_at {
            return Err(INVALID);
        }
        if grant.appid != appid {
            return Err(if wanted == Want::Phone {
                (40013, "invalid appid")
            } else {
                INVALID
            });
        }
        if grant.used {
            return Err(if wanted == Want::Login {
                (40163, "code been used")
            } else {
                INVALID
            });
        }
        grant.used = true;
        let phone = match &grant.kind {
            GrantKind::Phone(p) => Some(p.clone()),
            GrantKind::Login | GrantKind::Website => None,
        };
        Ok((grant.user.clone(), phone))
    }

    fn identity(&self, appid: &str, user: &str) -> (String, Option<String>) {
        let openid = derive_id(&format!("openid:{appid}:{user}"));
        let unionid = self
            .apps
            .get(appid)
            .and_then(|a| a.open_account.as_ref())
            .map(|account| derive_id(&format!("unionid:{account}:{user}")));
        (openid, unionid)
    }
}

/// A stable 28-character id, shaped like WeChat's openids.
fn derive_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    format!("o{}", &URL_SAFE_NO_PAD.encode(digest)[..27])
}

fn now() -> u64 {
    crate::session::unix_now()
}

fn rid() -> String {
    let hex = |n: usize| token::hash(token::random_base62(8))[..n].to_owned();
    format!("{}-{}-{}", hex(8), hex(8), hex(8))
}

/// WeChat's JSON answer: always HTTP 200.
fn wechat_json(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; encoding=utf-8")
        .body(body.to_string())
}

fn wechat_error((errcode, errmsg): SimError) -> HttpResponse {
    wechat_json(json!({ "errcode": errcode, "errmsg": format!("{errmsg} rid: {}", rid()) }))
}

fn respond(result: Result<Value, SimError>) -> HttpResponse {
    result.map_or_else(wechat_error, wechat_json)
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

fn json_body(body: &[u8]) -> Result<Value, SimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err((47001, "data format error")),
    }
}

fn str_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Mounts the simulator's routes (WeChat's paths, plus `/_sim/*`) on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cgi-bin/token", web::get().to(plain_token))
        .route("/cgi-bin/stable_token", web::post().to(stable_token))
        .route("/wxa/getwxacodeunlimit", web::post().to(unlimited_code::handle))
        .route("/sns/jscode2session", web::get().to(code_to_session))
        .route("/wxa/business/getuserphonenumber", web::post().to(phone_number));
    // A WeChat API called with the wrong method answers as WeChat does: errcode 43002/43001.
    for path in [
        "/cgi-bin/stable_token",
        "/wxa/getwxacodeunlimit",
        "/wxa/business/getuserphonenumber",
    ] {
        cfg.route(
            path,
            web::route().to(|| async { wechat_error((43002, "require POST method")) }),
        );
    }
    for path in ["/cgi-bin/token", "/sns/jscode2session"] {
        cfg.route(
            path,
            web::route().to(|| async { wechat_error((43001, "require GET method")) }),
        );
    }
    cfg.route("/_sim/login-code", web::post().to(mint_login_code))
        .route("/_sim/phone-code", web::post().to(mint_phone_code))
        .configure(controls::configure)
        .configure(website::configure);
}

/// GET /cgi-bin/token: a new token each call; the previous one keeps working five minutes.
async fn plain_token(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    respond(sim.enter("token", get("appid").into()).await.and_then(|_| {
        if get("grant_type") != "client_credential" {
            return Err((40002, "invalid grant_type"));
        }
        let mut state = sim.state();
        state.authenticate(get("appid"), get("secret"))?;
        let now = now();
        let appid = get("appid");
        for (_, (owner, until)) in state.tokens.iter_mut() {
            if owner == appid {
                *until = (*until).min(now + TOKEN_OVERLAP_SECS);
            }
        }
        let (token, _) = state.issue_token(appid, sim.token_ttl_secs, now);
        Ok(json!({ "access_token": token, "expires_in": sim.token_ttl_secs }))
    }))
}

/// POST /cgi-bin/stable_token: the same token until five minutes before it lapses;
/// `force_refresh` rotates it at once, at most 20 times a day and 30 s apart.
async fn stable_token(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let appid = json_body(&body).ok().map(|b| str_field(&b, "appid").to_owned());
    respond(sim.enter("stable_token", appid.as_deref()).await.and_then(|_| {
        let body = json_body(&body)?;
        if str_field(&body, "grant_type") != "client_credential" {
            return Err((40002, "invalid grant_type"));
        }
        let appid = str_field(&body, "appid");
        let force = match body.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err((47001, "data format error")),
        };
        let mut guard = sim.state();
        let state = &mut *guard;
        state.authenticate(appid, str_field(&body, "secret"))?;
        let now = now();
        let slot = state.stable.entry(appid.to_owned()).or_default();
        let forced_ok = force
            && slot.forced_today < FORCED_REFRESHES_PER_DAY
            && slot
                .last_forced
                .is_none_or(|t| now >= t + FORCED_REFRESH_SPACING_SECS);
        let current = slot
            .current
            .clone()
            .filter(|(_, until)| *until > now + TOKEN_OVERLAP_SECS);
        let (token, until) = match current {
            Some(current) if !forced_ok => current,
            previous => {
                if forced_ok {
                    slot.last_forced = Some(now);
                    slot.forced_today += 1;
                    if let Some((old, _)) = previous {
                        state.tokens.remove(&old);
                    }
                }
                let issued = state.issue_token(appid, sim.token_ttl_secs, now);
                state.stable.entry(appid.to_owned()).or_default().current = Some(issued.clone());
                issued
            }
        };
        Ok(json!({ "access_token": token, "expires_in": until - now }))
    }))
}

/// GET /sns/jscode2session
async fn code_to_session(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    respond(
        sim.enter("jscode2session", get("appid").into())
            .await
            .and_then(|_| {
                if get("grant_type") != "authorization_code" {
                    return Err((40002, "invalid grant_type"));
                }
                let mut state = sim.state();
                state.authenticate(get("appid"), get("secret"))?;
                let (user, _) = state.redeem_grant(get("js_code"), get("appid"), Want::Login, now())?;
                let (openid, unionid) = state.identity(get("appid"), &user);
                let session_key = STANDARD.encode(&Sha256::digest(token::random_base62(16).as_bytes())[..16]);
                let mut answer = json!({ "openid": openid, "session_key": session_key });
                if let Some(unionid) = unionid {
                    answer["unionid"] = json!(unionid);
                }
                Ok(answer)
            }),
    )
}

/// POST /wxa/business/getuserphonenumber
async fn phone_number(sim: web::Data<Simulator>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    respond(sim.enter("getuserphonenumber", None).await.and_then(|_| {
        let mut state = sim.state();
        let appid = state.app_of_token(query(&req).get("access_token").map(String::as_str), now())?;
        let body = json_body(&body)?;
        let (user, phone) = state.redeem_grant(str_field(&body, "code"), &appid, Want::Phone, now())?;
        let (openid, _) = state.identity(&appid, &user);
        if body.get("openid").is_some() && str_field(&body, "openid") != openid {
            return Err((40003, "invalid openid"));
        }
        let phone = phone.unwrap_or_default();
        Ok(json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": phone,
                "purePhoneNumber": phone,
                "countryCode": "86",
                "watermark": { "timestamp": now(), "appid": appid },
            }
        }))
    }))
}

fn control_error(message: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::BAD_REQUEST)
        .json(json!({ "error": "invalid_request", "message": message }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    appid: Option<String>,
    user: String,
    phone: Option<String>,
}

fn mint(sim: &Simulator, body: &[u8], want: Want) -> HttpResponse {
    let request: MintRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return control_error(&format!("expected {{\"appid\"?, \"user\", \"phone\"?}}: {e}")),
    };
    let default_app = if want == Want::Website {
        SANDBOX_WEBSITE_APPID
    } else {
        SANDBOX_APPID
    };
    let appid = request.appid.unwrap_or_else(|| default_app.to_owned());
    if !is_valid_appid(&appid) || request.user.is_empty() || request.user.len() > 128 {
        return control_error("appid must be wx + 16 hex digits and user 1-128 characters");
    }
    let kind = match want {
        Want::Login => GrantKind::Login,
        Want::Website => GrantKind::Website,
        Want::Phone => {
            let phone = request.phone.unwrap_or_else(|| {
                let digits: String = token::hash(&request.user)
                    .bytes()
                    .filter(u8::is_ascii_digit)
                    .take(8)
                    .map(char::from)
                    .collect();
                format!("138{digits:0<8}")
            });
            if !(5..=15).contains(&phone.len()) || !phone.bytes().all(|b| b.is_ascii_digit()) {
                return control_error("phone must be 5-15 digits");
            }
            GrantKind::Phone(phone)
        }
    };
    HttpResponse::Ok().json(json!({ "code": sim.grant(appid, request.user, kind) }))
}

/// POST /_sim/login-code {"appid"?, "user"}: what `wx.login` gives the mini-program.
async fn mint_login_code(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    mint(&sim, &body, Want::Login)
}

/// POST /_sim/phone-code {"appid"?, "user", "phone"?}: what the phone-number button gives.
async fn mint_phone_code(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    mint(&sim, &body, Want::Phone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_app_publishes_the_pages_of_the_reference_mini_program() {
        let app: Value = serde_json::from_str(include_str!("../../miniprogram-contract/app.json")).unwrap();
        let pages: Vec<&str> = app["pages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(pages, SANDBOX_PAGES);
    }

    #[test]
    fn ids_are_stable_per_app_and_user_and_shaped_like_openids() {
        let state = Simulator::default();
        let state = state.state();
        let (a, union_a) = state.identity(SANDBOX_APPID, "alice");
        let (again, _) = state.identity(SANDBOX_APPID, "alice");
        let (other_app, union_other) = state.identity("wx00112233445566aa", "alice");
        assert_eq!(a, again);
        assert_eq!(a.len(), 28);
        assert_ne!(a, other_app);
        assert!(
            union_a.is_some() && union_other.is_none(),
            "only bound apps get unionids"
        );
    }
}
