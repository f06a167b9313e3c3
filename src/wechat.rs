//! The one client for WeChat's server API (or the simulator, through the configurable base
//! URL). Access tokens come from `stable_token`, are cached per AppID in the session store so
//! every instance shares them, and are refreshed by one caller at a time (a store lock); each
//! instance keeps what it read for up to `LOCAL_TOKEN_LIFE`, so a call costs no store round trip.
//! A call refused for a stale token (40001/40014/42001) refreshes and retries once.
//! Transient failures (no answer, HTTP 5xx, errcode -1 "system busy", 45009/45011 frequency
//! limits) are retried up to `ATTEMPTS` times with doubling, jittered pauses, but only where a
//! retry cannot spend anything twice: token fetches and code minting always; calls carrying a
//! person's single-use code only when the request never left (no connection).

use crate::config::WeChatApp;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::session::Phone;
use crate::store::{SessionStore, StoreError};
use actix_web::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN_ERRORS: [i64; 3] = [40001, 40014, 42001];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TOKEN_LOCK_MS: u64 = 10_000;
const TOKEN_WAIT_STEP: Duration = Duration::from_millis(25);
/// How long an instance uses a token it read from the store before reading it again. Short
/// against a token's two hours (the store's copy lapses a minute early): a token another
/// instance replaced is at most this old here, and a stale-token answer skips the copy anyway.
const LOCAL_TOKEN_LIFE: Duration = Duration::from_secs(30);
/// Tries per call, and the pause before the first retry (doubled after each, jittered).
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// WeChat's errcodes for "busy, try again": system busy, and the frequency limits.
const BUSY_ERRORS: [i64; 3] = [-1, 45009, 45011];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeChatError {
    /// WeChat answered with a non-zero errcode.
    Api {
        errcode: i64,
        errmsg: String,
    },
    /// No answer (timeout, connection lost): the request may have reached WeChat.
    Unreachable(String),
    /// No connection: the request never left.
    Unsent(String),
    /// An answer we cannot read.
    BadResponse(String),
    Store(StoreError),
}

impl fmt::Display for WeChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeChatError::Api { errcode, errmsg } => write!(f, "wechat errcode {errcode}: {errmsg}"),
            WeChatError::Unreachable(e) | WeChatError::Unsent(e) => write!(f, "wechat unreachable: {e}"),
            WeChatError::BadResponse(e) => write!(f, "unreadable wechat response: {e}"),
            WeChatError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WeChatError {}

impl From<StoreError> for WeChatError {
    fn from(e: StoreError) -> Self {
        WeChatError::Store(e)
    }
}

impl WeChatError {
    fn is_stale_token(&self) -> bool {
        matches!(self, WeChatError::Api { errcode, .. } if TOKEN_ERRORS.contains(errcode))
    }

    /// Whether trying again may help; `replayable`: whether the request may be sent twice
    /// (it carries no single-use code).
    fn may_retry(&self, replayable: bool) -> bool {
        match self {
            WeChatError::Unsent(_) => true,
            WeChatError::Unreachable(_) => replayable,
            WeChatError::BadResponse(e) => replayable && e.starts_with("HTTP 5"),
            WeChatError::Api { errcode, .. } => replayable && BUSY_ERRORS.contains(errcode),
            WeChatError::Store(_) => false,
        }
    }
}

impl From<WeChatError> for ApiError {
    fn from(e: WeChatError) -> Self {
        tracing::warn!(error = %e, "wechat call failed");
        match e {
            WeChatError::Api {
                errcode: 40003 | 40029 | 40163 | 40226 | 42003,
                ..
            } => ApiError::bad_request(
                "invalid_code",
                "WeChat does not accept this code: it is invalid, expired or already used. Ask WeChat for a new one.",
            ),
            WeChatError::Api {
                errcode: -1 | 45009 | 45011,
                ..
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "wechat_busy",
                "WeChat is busy or rate-limiting this app; retry shortly.",
            ),
            WeChatError::Api { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_rejected",
                "WeChat refused the relay's request; the operator should check this connection's WeChat settings.",
            ),
            WeChatError::Unreachable(_) | WeChatError::Unsent(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "wechat_unavailable",
                "WeChat cannot be reached right now; retry shortly.",
            ),
            WeChatError::BadResponse(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "wechat_bad_response",
                "WeChat answered with something the relay cannot read; retry shortly.",
            ),
            WeChatError::Store(_) => ApiError::store_unavailable(),
        }
    }
}

/// What `getwxacodeunlimit` is asked for.
#[derive(Debug, Clone, Serialize)]
pub struct CodeRequest<'a> {
    pub scene: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<&'a str>,
    pub check_path: bool,
    pub env_version: &'a str,
    pub width: u32,
}

/// Who `jscode2session` says logged in. WeChat's `session_key` is read and dropped here: it
/// never leaves the server, and nothing of ours needs it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MiniProgramUser {
    pub openid: String,
    #[serde(default)]
    pub unionid: Option<String>,
}

/// What `/sns/oauth2/access_token` grants for a website-login code.
#[derive(Debug, Clone, Deserialize)]
pub struct WebsiteGrant {
    pub access_token: String,
    pub openid: String,
    #[serde(default)]
    pub unionid: Option<String>,
}

/// `/sns/userinfo`: the person's public profile (gender and region are blank since 2021).
#[derive(Debug, Clone, Deserialize)]
pub struct WebsiteProfile {
    pub openid: String,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub headimgurl: Option<String>,
    #[serde(default)]
    pub unionid: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct PhoneResponse {
    phone_info: PhoneInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    phone_number: String,
    pure_phone_number: String,
    /// A string in real answers, a number in WeChat's own doc example: accept both.
    country_code: Value,
}

#[derive(Clone)]
pub struct WeChatClient {
    http: reqwest::Client,
    base: String,
    store: SessionStore,
    metrics: Arc<Metrics>,
    /// Tokens read from the store, by AppID and secret fingerprint: when read, and the token.
    /// One map for the instance (its workers' clients share it).
    tokens: Arc<Mutex<HashMap<String, (Instant, String)>>>,
}

impl WeChatClient {
    pub fn new(base: &str, store: SessionStore, metrics: Arc<Metrics>) -> Result<Self, WeChatError> {
        Ok(Self {
            http: Self::http_client()?,
            base: base.trim_end_matches('/').to_owned(),
            store,
            metrics,
            tokens: Arc::default(),
        })
    }

    /// The same client for one actix worker: its own connections (their tasks run on the
    /// worker's thread) and `store`, the worker's.
    pub fn for_worker(&self, store: SessionStore) -> Result<Self, WeChatError> {
        Ok(Self {
            http: Self::http_client()?,
            store,
            ..self.clone()
        })
    }

    fn http_client() -> Result<reqwest::Client, WeChatError> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| WeChatError::Unreachable(e.without_url().to_string()))
    }

    /// The one HTTP client, for the other outbound calls (the account hook).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A sun code image (PNG or JPEG bytes) for `request.scene`.
    pub async fn unlimited_code(
        &self,
        app: &WeChatApp,
        request: &CodeRequest<'_>,
    ) -> Result<Vec<u8>, WeChatError> {
        // Minting a code again only costs quota: replayable.
        self.with_token(app, "getwxacodeunlimit", true, |token: String| async move {
            let url = format!("{}/wxa/getwxacodeunlimit", self.base);
            let response = self
                .http
                .post(url)
                .query(&[("access_token", token)])
                .json(request)
                .send();
            let body = read(response).await?;
            if is_image(&body) {
                return Ok(body);
            }
            // Not an image: WeChat's JSON error (whatever the Content-Type said).
            match parse::<Value>(&body) {
                Ok(_) => Err(WeChatError::BadResponse("neither an image nor an error".into())),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Resolves a `wx.login` code for the mini-program `app`.
    pub async fn code_to_session(
        &self,
        app: &WeChatApp,
        js_code: &str,
    ) -> Result<MiniProgramUser, WeChatError> {
        self.exchange_code(app, "/sns/jscode2session", "js_code", js_code)
            .await
    }

    /// Resolves a phone-number button code; `openid` makes WeChat check the code belongs to them.
    pub async fn phone_number(
        &self,
        app: &WeChatApp,
        code: &str,
        openid: &str,
    ) -> Result<Phone, WeChatError> {
        let response: PhoneResponse = self
            // The phone code is single-use: sent again only if it never left.
            .with_token(app, "getuserphonenumber", false, |token: String| async move {
                let url = format!("{}/wxa/business/getuserphonenumber", self.base);
                let body = json!({ "code": code, "openid": openid });
                parse(
                    &read(
                        self.http
                            .post(url)
                            .query(&[("access_token", token)])
                            .json(&body)
                            .send(),
                    )
                    .await?,
                )
            })
            .await
            .map_err(|e| match e {
                // The access token names the app, so "invalid appid" here means the phone code
                // was minted for another mini-program: the client's mistake, not the operator's.
                WeChatError::Api {
                    errcode: 40013,
                    errmsg,
                } => WeChatError::Api {
                    errcode: 40029,
                    errmsg: format!("phone code of another app ({errmsg})"),
                },
                other => other,
            })?;
        let info = response.phone_info;
        let country_code = match info.country_code {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(Phone {
            phone_number: info.phone_number,
            pure_phone_number: info.pure_phone_number,
            country_code,
        })
    }

    /// Exchanges a website-login code (from `qrconnect`'s redirect) for the person's grant.
    pub async fn website_grant(&self, app: &WeChatApp, code: &str) -> Result<WebsiteGrant, WeChatError> {
        self.exchange_code(app, "/sns/oauth2/access_token", "code", code)
            .await
    }

    /// `GET {path}?appid&secret&{code_param}=…&grant_type=authorization_code`: how both login
    /// paths turn a person's one-time code into who they are.
    async fn exchange_code<T: DeserializeOwned>(
        &self,
        app: &WeChatApp,
        path: &str,
        code_param: &str,
        code: &str,
    ) -> Result<T, WeChatError> {
        let query = [
            ("appid", app.appid.as_str()),
            ("secret", app.secret.expose()),
            (code_param, code),
            ("grant_type", "authorization_code"),
        ];
        // The code is single-use: sent again only if it never left.
        retrying(&self.metrics, path.trim_start_matches('/'), false, || async {
            parse(&read(self.http.get(format!("{}{path}", self.base)).query(&query).send()).await?)
        })
        .await
    }

    /// The profile a website grant may read.
    pub async fn website_profile(&self, grant: &WebsiteGrant) -> Result<WebsiteProfile, WeChatError> {
        let url = format!("{}/sns/userinfo", self.base);
        let query = [
            ("access_token", grant.access_token.as_str()),
            ("openid", &grant.openid),
            ("lang", "zh_CN"),
        ];
        retrying(&self.metrics, "sns/userinfo", true, || async {
            parse(&read(self.http.get(&url).query(&query).send()).await?)
        })
        .await
    }

    /// Runs `call` with the app's access token; on a stale-token answer, refreshes once and
    /// tries again; transient failures are retried as `replayable` allows.
    /// (`call` takes the token by value: futures borrowing a higher-ranked `&str` are not `Send`.)
    async fn with_token<T, F, Fut>(
        &self,
        app: &WeChatApp,
        endpoint: &str,
        replayable: bool,
        call: F,
    ) -> Result<T, WeChatError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, WeChatError>>,
    {
        retrying(&self.metrics, endpoint, replayable, || async {
            let token = self.access_token(app, None).await?;
            match call(token.clone()).await {
                Err(e) if e.is_stale_token() => {
                    tracing::info!(appid = %app.appid, "access token refused; refreshing once");
                    let fresh = self.access_token(app, Some(&token)).await?;
                    call(fresh).await
                }
                other => other,
            }
        })
        .await
    }

    /// The cached token unless it is `stale`; otherwise one caller (across all instances)
    /// fetches a new one while the others wait for it to appear.
    async fn access_token(&self, app: &WeChatApp, stale: Option<&str>) -> Result<String, WeChatError> {
        // Keyed by the secret's fingerprint too: a tenant with a changed (or another tenant's
        // claimed) AppSecret never gets a token fetched with a different one.
        let app_key = format!("{}:{}", app.appid, &crate::token::hash(app.secret.expose())[..16]);
        if let Some(token) = self.local_token(&app_key)
            && Some(token.as_str()) != stale
        {
            return Ok(token);
        }
        let key = format!("wechat-token:{app_key}");
        let lock = format!("wechat-token-lock:{app_key}");
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
        loop {
            if let Some(cached) = self.store.get_value(&key).await? {
                let cached = String::from_utf8_lossy(&cached).into_owned();
                if Some(cached.as_str()) != stale {
                    self.keep_token(&app_key, &cached);
                    return Ok(cached);
                }
            }
            if let Some(lock) = self.store.try_lock(&lock, TOKEN_LOCK_MS).await? {
                let fetched = self.fetch_stable_token(app, stale).await;
                if let Ok((token, expires_in)) = &fetched {
                    // Renew a minute early so no call carries a token about to lapse.
                    self.store
                        .put_value(&key, token.as_bytes(), expires_in.saturating_sub(60).max(1))
                        .await?;
                    self.keep_token(&app_key, token);
                }
                self.store.unlock(lock).await?;
                return fetched.map(|(token, _)| token);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WeChatError::Unreachable(
                    "timed out waiting for another instance's token refresh".into(),
                ));
            }
            tokio::time::sleep(TOKEN_WAIT_STEP).await;
        }
    }

    /// This instance's copy of an app's token, if read less than `LOCAL_TOKEN_LIFE` ago.
    fn local_token(&self, app_key: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let (read_at, token) = tokens.get(app_key)?;
        (read_at.elapsed() < LOCAL_TOKEN_LIFE).then(|| token.clone())
    }

    /// Keeps `token` as this instance's copy (and forgets copies past their life: an app whose
    /// secret changed leaves one behind).
    fn keep_token(&self, app_key: &str, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, (read_at, _)| read_at.elapsed() < LOCAL_TOKEN_LIFE);
            tokens.insert(app_key.to_owned(), (Instant::now(), token.to_owned()));
        }
    }

    async fn fetch_stable_token(
        &self,
        app: &WeChatApp,
        stale: Option<&str>,
    ) -> Result<(String, u64), WeChatError> {
        let url = format!("{}/cgi-bin/stable_token", self.base);
        let request = |force_refresh: bool| {
            let body = json!({
                "grant_type": "client_credential",
                "appid": app.appid,
                "secret": app.secret.expose(),
                "force_refresh": force_refresh,
            });
            self.http.post(&url).json(&body).send()
        };
        let fetch = |force_refresh: bool| {
            retrying(&self.metrics, "stable_token", true, move || async move {
                parse::<TokenResponse>(&read(request(force_refresh)).await?)
            })
        };
        let token = fetch(false).await?;
        if Some(token.access_token.as_str()) == stale {
            // WeChat still hands out the token it just refused: force a new one.
            let forced = fetch(true).await?;
            return Ok((forced.access_token, forced.expires_in));
        }
        Ok((token.access_token, token.expires_in))
    }
}

impl WeChatError {
    /// The outcome label of a failed call in `/metrics`.
    fn outcome(&self) -> String {
        match self {
            WeChatError::Api { errcode, .. } => errcode.to_string(),
            WeChatError::Unreachable(_) => "unreachable".into(),
            WeChatError::Unsent(_) => "unsent".into(),
            WeChatError::BadResponse(_) => "bad_response".into(),
            WeChatError::Store(_) => "store_error".into(),
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or has been tried `ATTEMPTS` times; every
/// try is counted and timed under `endpoint`.
async fn retrying<T, Fut>(
    metrics: &Metrics,
    endpoint: &str,
    replayable: bool,
    call: impl Fn() -> Fut,
) -> Result<T, WeChatError>
where
    Fut: std::future::Future<Output = Result<T, WeChatError>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        let started = std::time::Instant::now();
        let result = call().await;
        metrics.wechat_latency.observe(&[endpoint], started.elapsed());
        let outcome = result.as_ref().map_or_else(WeChatError::outcome, |_| "ok".into());
        metrics.wechat_calls.inc(&[endpoint, &outcome]);
        match result {
            Err(e) if attempt < ATTEMPTS && e.may_retry(replayable) => {
                tracing::info!(attempt, error = %e, "wechat call failed; retrying");
                tokio::time::sleep(pause / 2 + crate::token::jitter(pause)).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn read(
    response: impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
) -> Result<Vec<u8>, WeChatError> {
    // `without_url`: the URL may carry a secret or token in its query.
    let response = response.await.map_err(|e| {
        let unsent = e.is_connect();
        let reason = e.without_url().to_string();
        if unsent {
            WeChatError::Unsent(reason)
        } else {
            WeChatError::Unreachable(reason)
        }
    })?;
    if !response.status().is_success() {
        return Err(WeChatError::BadResponse(format!("HTTP {}", response.status())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| WeChatError::Unreachable(e.without_url().to_string()))?;
    Ok(body.to_vec())
}

/// WeChat answers HTTP 200 for errors too: success is decided by `errcode` (absent means 0),
/// whatever the Content-Type said.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, WeChatError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| WeChatError::BadResponse(e.to_string()))?;
    let errcode = value.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    if errcode != 0 {
        let errmsg = value
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(WeChatError::Api { errcode, errmsg });
    }
    serde_json::from_value(value).map_err(|e| WeChatError::BadResponse(e.to_string()))
}

fn is_image(body: &[u8]) -> bool {
    body.starts_with(b"\x89PNG\r\n\x1a\n") || body.starts_with(&[0xFF, 0xD8, 0xFF])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_the_body_whatever_the_status_says() {
        let err = parse::<Value>(br#"{"errcode":40029,"errmsg":"invalid code, rid: 1"}"#).unwrap_err();
        assert_eq!(
            err,
            WeChatError::Api {
                errcode: 40029,
                errmsg: "invalid code, rid: 1".into()
            }
        );
        let ok: MiniProgramUser = parse(br#"{"openid":"o1","session_key":"k"}"#).unwrap();
        assert_eq!(ok.openid, "o1");
        let ok: MiniProgramUser =
            parse(br#"{"openid":"o1","unionid":"u1","errcode":0,"errmsg":"ok"}"#).unwrap();
        assert_eq!(ok.unionid.as_deref(), Some("u1"));
        assert!(matches!(
            parse::<Value>(b"<html>"),
            Err(WeChatError::BadResponse(_))
        ));
    }

    #[test]
    fn wechat_errors_become_client_or_gateway_errors_never_500() {
        let api = |errcode| {
            ApiError::from(WeChatError::Api {
                errcode,
                errmsg: String::new(),
            })
        };
        assert_eq!(api(40029).status, StatusCode::BAD_REQUEST);
        assert_eq!(api(40163).code, "invalid_code");
        assert_eq!(api(-1).status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api(40125).status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            ApiError::from(WeChatError::Unreachable("x".into())).code,
            "wechat_unavailable"
        );
    }
}
