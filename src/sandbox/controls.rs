//! The simulator's steering wheel, for tests and demos: inject WeChat failures, add latency
//! (WeChat's `getwxacodeunlimit` takes 100–300 ms), retire an app's tokens, count calls.

use super::{Simulator, control_error};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/fail-next", web::post().to(fail_next))
        .route("/_sim/delay", web::post().to(delay))
        .route("/_sim/revoke-tokens", web::post().to(revoke_tokens))
        .route("/_sim/stats", web::get().to(stats));
}

/// Latency added to one API's calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Delay {
    api: String,
    millis: u64,
    /// Only calls for this AppID wait (all calls when absent).
    appid: Option<String>,
}

impl Delay {
    /// How long a call for `appid` waits.
    pub(super) fn applies_to(&self, appid: Option<&str>) -> Option<Duration> {
        let matches = self.appid.as_deref().is_none_or(|wanted| Some(wanted) == appid);
        (matches && self.millis > 0).then(|| Duration::from_millis(self.millis))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    api: String,
    errcode: i64,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// POST /_sim/fail-next {"api", "errcode", "times"?}: the next calls of `api` (token,
/// stable_token, getwxacodeunlimit, jscode2session, getuserphonenumber) fail with `errcode`;
/// `times: 0` stops injecting.
async fn fail_next(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<FailNext>(&body) else {
        return control_error("expected {\"api\", \"errcode\", \"times\"?}");
    };
    // Replaces what was queued for that API: `times: 0` clears it.
    let failures = std::iter::repeat_n(request.errcode, request.times.min(1_000_000)).collect();
    sim.state().failures.insert(request.api, failures);
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// POST /_sim/delay {"api", "millis", "appid"?}: every later call of `api` (for `appid`, if
/// given) waits `millis` before answering; `millis: 0` removes the delay. At most 60 s.
async fn delay(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let Ok(mut request) = serde_json::from_slice::<Delay>(&body) else {
        return control_error("expected {\"api\", \"millis\", \"appid\"?}");
    };
    request.millis = request.millis.min(60_000);
    sim.state().delays.insert(request.api.clone(), request);
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// POST /_sim/revoke-tokens {"appid"}: every token of the app stops working (40001), while
/// `stable_token` still hands out the current one, as happens when WeChat retires it early.
async fn revoke_tokens(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let appid = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("appid")?.as_str().map(str::to_owned));
    let Some(appid) = appid else {
        return control_error("expected {\"appid\"}");
    };
    let mut state = sim.state();
    state.tokens.retain(|_, (owner, _)| *owner != appid);
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// GET /_sim/stats: calls per API, for checking what the relay asked of WeChat.
async fn stats(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "calls": sim.state().calls }))
}
