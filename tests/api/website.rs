//! The website-app path: WeChat's own QR page (the simulator's), real HTTP redirects, the same
//! sessions, push, tickets and redemption as the mini-program path.

use crate::both_stores;
use crate::helpers::{
    Backend, PcSession, TestApp, fetch_json, settings, spawn_app, spawn_app_with, spawn_simulator,
};
use qrlogin_relay::sandbox::{SANDBOX_WEBSITE_APP_SECRET, SANDBOX_WEBSITE_APPID};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

both_stores!(
    a_website_login_completes_the_same_session_and_shares_the_unionid,
    bad_states_and_codes_change_nothing_or_say_why,
    a_link_opened_in_another_browser_confirms_nothing,
    an_iframe_without_the_cookie_hands_over_to_the_secret_holder
);

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn start_website(app: &TestApp) -> PcSession {
    let (status, body) = app.create_session(json!({ "connection": "website" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body.get("code_url").is_none(),
        "WeChat shows the code on this path"
    );
    assert!(body["website_url"].as_str().unwrap().ends_with("/website"));
    PcSession {
        id: body["id"].as_str().unwrap().into(),
        secret: body["secret"].as_str().unwrap().into(),
        body,
    }
}

/// `POST …/website` as the browser holding the secret: WeChat's page address and the binding
/// cookie (`name=value`) the browser keeps for the callback.
async fn website_start(app: &TestApp, pc: &PcSession, body: Value) -> (String, String) {
    let response = app
        .http
        .post(pc.body["website_url"].as_str().unwrap())
        .bearer_auth(&pc.secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/v1/callbacks/wechat-website",
        "Max-Age=",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    (answer["url"].as_str().unwrap().to_owned(), cookie)
}

/// WeChat's login page URL (redirect mode) and the browser's binding cookie.
async fn qrconnect_url(app: &TestApp, pc: &PcSession) -> (String, String) {
    website_start(app, pc, json!({})).await
}

/// The person scans WeChat's page as `user` (or denies); returns where WeChat sends the browser.
async fn scan_on_wechat(qrconnect: &str, user: &str, action: &str) -> String {
    // Submit the page's form as a browser would: its hidden fields, the user, the button.
    let html = reqwest::get(qrconnect).await.unwrap().text().await.unwrap();
    assert!(
        html.contains(r#"<form method="get" action="qrconnect/scan">"#),
        "{html}"
    );
    let mut fields: Vec<String> = html
        .split(r#"<input type="hidden" name=""#)
        .skip(1)
        .map(|input| {
            let (name, rest) = input.split_once(r#"" value=""#).unwrap();
            let value = rest.split_once('"').unwrap().0.replace("&amp;", "&");
            format!("{name}={}", qrlogin_relay::markup::url_encode(&value))
        })
        .collect();
    fields.push(format!("user={user}&action={action}"));
    let page = qrconnect.split_once('?').unwrap().0;
    let scan = format!("{page}/scan?{}", fields.join("&"));
    let response = no_redirects().get(scan).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The callback as a browser loads it, with the binding cookie or (another browser) without.
async fn callback_page(url: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = no_redirects().get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The completion code a callback page hands to the page framing it.
fn completion_in(page: &str) -> String {
    let data = page
        .split(r#"<script type="application/json" id="outcome">"#)
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    let outcome: Value = serde_json::from_str(data).unwrap();
    assert_eq!(outcome["message"]["outcome"], "handoff", "{outcome}");
    outcome["message"]["completion"].as_str().unwrap().to_owned()
}

fn param(url: &str, name: &str) -> String {
    let query = url
        .split_once('?')
        .unwrap()
        .1
        .trim_end_matches("#wechat_redirect");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

async fn a_website_login_completes_the_same_session_and_shares_the_unionid(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = start_website(&app).await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");

    let (qrconnect, cookie) = qrconnect_url(&app, &pc).await;
    assert!(qrconnect.starts_with(&format!(
        "{}/connect/qrconnect?appid={SANDBOX_WEBSITE_APPID}&redirect_uri=",
        app.wechat
    )));
    assert!(qrconnect.ends_with("#wechat_redirect"));
    assert_eq!(param(&qrconnect, "response_type"), "code");
    assert_eq!(param(&qrconnect, "scope"), "snsapi_login");
    assert!(
        !qrconnect.contains(&pc.secret),
        "the browser secret never goes to WeChat"
    );
    let callback = scan_on_wechat(&qrconnect, "alice", "allow").await;
    assert!(callback.starts_with(&format!("{}/v1/callbacks/wechat-website?code=", app.base)));

    let (status, page) = callback_page(&callback, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("You are logged in"), "{page}");
    let confirmed = socket.next_json().await;
    assert_eq!(confirmed["status"], "confirmed");
    socket.expect_normal_close().await;

    let (status, redeemed) = app.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    let web_user = &redeemed["user"];
    assert_eq!(web_user["path"], "website");
    assert_eq!(web_user["appid"], SANDBOX_WEBSITE_APPID);
    assert_eq!(web_user["connection"], "website");
    assert_eq!(web_user["nickname"], "alice");
    assert!(web_user["avatar_url"].as_str().unwrap().starts_with("https://"));
    assert!(web_user.get("phone_number").is_none(), "no phone on this path");

    // The same person through the mini-program: another openid, the same unionid.
    let mp = app.start().await;
    app.log_in(&mp, "alice", "13800138000").await;
    let ticket = app.get_session(&mp, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let mp_user = app.redeem(&ticket, "sandbox").await.1["user"].clone();
    assert_eq!(mp_user["path"], "mini_program");
    assert_ne!(mp_user["openid"], web_user["openid"]);
    assert_eq!(mp_user["unionid"], web_user["unionid"]);
    assert!(web_user["unionid"].is_string());
}

async fn bad_states_and_codes_change_nothing_or_say_why(backend: Backend) {
    let app = spawn_app(backend).await;
    let callback = format!("{}/v1/callbacks/wechat-website", app.base);
    let pc = start_website(&app).await;
    let (qrconnect, cookie) = qrconnect_url(&app, &pc).await;
    let state = param(&qrconnect, "state");

    for url in [
        callback.clone(),
        format!("{callback}?code=x"),
        format!("{callback}?code=x&state={}", "A".repeat(24)),
        format!("{callback}?code=x&state=short"),
    ] {
        let (status, page) = callback_page(&url, Some(&cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}");
        assert!(page.contains("Login link not valid"), "{page}");
    }
    assert_eq!(
        app.get_session(&pc, "").await.1["status"],
        "pending",
        "nothing changed"
    );

    // A code WeChat refuses: the page says so and the PC page is told.
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let (status, page) =
        callback_page(&format!("{callback}?code=made-up&state={state}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("WeChat does not accept this code"), "{page}");
    let told = socket.next_json().await;
    assert_eq!(
        (told["status"].as_str(), told["error"].as_str()),
        (Some("cancelled"), Some("invalid_code"))
    );

    // The state was spent by that attempt: replaying it is refused.
    let (status, _) = callback_page(&format!("{callback}?code=made-up&state={state}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A denial: WeChat returns the state alone.
    let pc = start_website(&app).await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let (qrconnect, cookie) = qrconnect_url(&app, &pc).await;
    let denied = scan_on_wechat(&qrconnect, "bob", "deny").await;
    assert!(!denied.contains("code="));
    let (status, page) = callback_page(&denied, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("You declined the login"), "{page}");
    let told = socket.next_json().await;
    assert_eq!(
        (told["status"].as_str(), told["error"].as_str()),
        (Some("cancelled"), Some("authorization_denied"))
    );

    // A state for a session the browser gave up on: refused, and the session stays cancelled.
    let pc = start_website(&app).await;
    let (qrconnect, cookie) = qrconnect_url(&app, &pc).await;
    let late = scan_on_wechat(&qrconnect, "carl", "allow").await;
    assert_eq!(app.give_up(&pc, &pc.secret).await, StatusCode::OK);
    let (status, page) = callback_page(&late, Some(&cookie)).await;
    assert_eq!(status, StatusCode::GONE, "{page}");
    assert_eq!(app.get_session(&pc, "").await.1["status"], "cancelled");
    assert!(app.get_session(&pc, "").await.1.get("error").is_none());
}

/// The relay attack: someone starts a login and sends WeChat's link to a victim, whose browser
/// has no binding cookie. The victim's scan confirms nothing, and the page says why.
async fn a_link_opened_in_another_browser_confirms_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let attacker = start_website(&app).await;
    let (link, _attackers_cookie) = qrconnect_url(&app, &attacker).await;
    let callback = scan_on_wechat(&link, "victim", "allow").await;
    let (status, page) = callback_page(&callback, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("must be finished in the browser that started it"),
        "{page}"
    );
    assert_eq!(app.get_session(&attacker, "").await.1["status"], "pending");
    // A cookie from another login does not open this one either.
    let other = start_website(&app).await;
    let (link, _) = qrconnect_url(&app, &attacker).await;
    let (_, other_cookie) = qrconnect_url(&app, &other).await;
    let callback = scan_on_wechat(&link, "victim", "allow").await;
    let (_, page) = callback_page(&callback, Some(&other_cookie)).await;
    assert!(
        page.contains("must be finished in the browser that started it"),
        "{page}"
    );
    let view = app.get_session(&attacker, "").await.1;
    assert_eq!(view["status"], "pending");
    assert!(view.get("ticket").is_none());
}

/// An iframe on a website's own origin cannot carry the relay's cookie: the callback hands the
/// framing page a completion code that only the browser secret turns into a login, once.
async fn an_iframe_without_the_cookie_hands_over_to_the_secret_holder(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = start_website(&app).await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let (link, _) = website_start(&app, &pc, json!({ "mode": "embed" })).await;
    let (status, page) = callback_page(&scan_on_wechat(&link, "gina", "allow").await, None).await;
    assert_eq!(status, StatusCode::OK);
    let csp = "script-src 'nonce-";
    assert!(
        page.contains("nonce="),
        "the page's script runs under a nonce ({csp}…)"
    );
    let completion = completion_in(&page);
    let complete = format!("{}/complete", pc.body["website_url"].as_str().unwrap());
    let attempt = |secret: &str| {
        app.http
            .post(&complete)
            .bearer_auth(secret)
            .json(&json!({ "completion": completion }))
            .send()
    };
    assert_eq!(
        attempt("not-the-secret").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let other = start_website(&app).await;
    let foreign = app
        .http
        .post(format!(
            "{}/complete",
            other.body["website_url"].as_str().unwrap()
        ))
        .bearer_auth(&other.secret)
        .json(&json!({ "completion": "x".repeat(32) }))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    let done = attempt(&pc.secret).await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let view: Value = done.json().await.unwrap();
    assert_eq!(view["status"], "confirmed");
    assert_eq!(socket.next_json().await["status"], "confirmed");
    let again = attempt(&pc.secret).await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "a completion code works once"
    );
    let (status, redeemed) = app.redeem(view["ticket"].as_str().unwrap(), "sandbox").await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    assert_eq!(redeemed["user"]["nickname"], "gina");
}

#[tokio::test]
async fn redirect_mode_returns_to_the_hosted_page() {
    let app = spawn_app(Backend::Memory).await;
    let pc = start_website(&app).await;
    let return_to = "/login?connection=website&redirect_uri=x";
    let (link, cookie) = website_start(&app, &pc, json!({ "return_to": return_to })).await;
    let callback = scan_on_wechat(&link, "hana", "allow").await;
    let response = no_redirects()
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], return_to);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the binding cookie is cleared"
    );
    assert_eq!(app.get_session(&pc, "").await.1["status"], "confirmed");
}

#[tokio::test]
async fn a_state_for_an_expired_session_is_refused() {
    let mut settings = settings(Backend::Memory);
    settings
        .connections
        .iter_mut()
        .find(|c| c.identifier == "website")
        .unwrap()
        .session_ttl_secs = 3;
    let app = spawn_app_with(settings).await;
    let pc = start_website(&app).await;
    let (qrconnect, cookie) = qrconnect_url(&app, &pc).await;
    let callback = scan_on_wechat(&qrconnect, "dora", "allow").await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    assert_eq!(socket.next_json().await["status"], "expired");
    let (status, page) = callback_page(&callback, Some(&cookie)).await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::GONE,
        "{status} {page}"
    );
    assert_eq!(app.get_session(&pc, "").await.1["status"], "expired");
}

#[tokio::test]
async fn embedding_gets_wxlogin_options_and_paths_do_not_mix() {
    let app = spawn_app(Backend::Memory).await;
    let pc = start_website(&app).await;
    let website_url = pc.body["website_url"].as_str().unwrap();
    let answer = fetch_json(
        app.http
            .post(website_url)
            .bearer_auth(&pc.secret)
            .json(&json!({ "mode": "embed" })),
    )
    .await;
    let options = &answer["options"];
    assert_eq!(options["self_redirect"], true);
    assert_eq!(options["appid"], SANDBOX_WEBSITE_APPID);
    assert_eq!(options["scope"], "snsapi_login");
    assert_eq!(
        options["redirect_uri"],
        format!("{}/v1/callbacks/wechat-website", app.base)
    );
    assert_eq!(options["state"].as_str().unwrap().len(), 24);
    for key in ["id", "style", "href"] {
        assert!(options.get(key).is_some(), "{key}");
    }
    let iframe = answer["url"].as_str().unwrap();
    assert!(
        iframe.contains("self_redirect=true") && iframe.contains("login_type=jssdk"),
        "{iframe}"
    );
    assert_eq!(param(iframe, "state"), options["state"].as_str().unwrap());
    let guessed = app
        .http
        .post(website_url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(guessed.status(), StatusCode::UNAUTHORIZED);
    // The secret is never taken from the query string any more.
    let old_style = app
        .http
        .get(format!("{website_url}?secret={}", pc.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(old_style.status(), StatusCode::NOT_FOUND);
    let bad_return = app
        .http
        .post(website_url)
        .bearer_auth(&pc.secret)
        .json(&json!({ "return_to": "https://evil.example/login?x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_return.status(), StatusCode::BAD_REQUEST);

    let (status, body) = app.scan_as(&pc.id, "erin").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("wrong_login_path"))
    );
    let mp = app.start().await;
    let url = format!("{}/v1/login-sessions/{}/website", app.base, mp.id);
    let response = app.http.post(url).bearer_auth(&mp.secret).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_simulator_speaks_the_sns_contract() {
    let sim = spawn_simulator();
    let http = reqwest::Client::new();
    let get = |path: String| fetch_json(http.get(format!("{sim}{path}")));
    let code = fetch_json(
        http.post(format!("{sim}/_sim/website-code"))
            .json(&json!({ "user": "fay" })),
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let exchange = |code: &str| {
        format!(
            "/sns/oauth2/access_token?appid={SANDBOX_WEBSITE_APPID}&secret={SANDBOX_WEBSITE_APP_SECRET}&code={code}&grant_type=authorization_code"
        )
    };
    let grant = get(exchange(&code)).await;
    assert_eq!(grant["scope"], "snsapi_login");
    assert_eq!(grant["expires_in"], 7200);
    assert!(grant["unionid"].is_string());
    let errcode = |v: &Value| v["errcode"].as_i64().unwrap_or(0);
    assert_eq!(errcode(&get(exchange(&code)).await), 40029, "codes work once");

    let (token, openid) = (
        grant["access_token"].as_str().unwrap(),
        grant["openid"].as_str().unwrap(),
    );
    assert_eq!(
        get(format!("/sns/auth?access_token={token}&openid={openid}")).await["errmsg"],
        "ok"
    );
    assert_eq!(
        errcode(&get(format!("/sns/auth?access_token={token}&openid=oWrong")).await),
        40003
    );
    assert_eq!(
        errcode(&get(format!("/sns/auth?access_token=nope&openid={openid}")).await),
        40014
    );
    let profile = get(format!(
        "/sns/userinfo?access_token={token}&openid={openid}&lang=zh_CN"
    ))
    .await;
    assert_eq!(
        (
            profile["nickname"].as_str(),
            profile["sex"].as_i64(),
            profile["province"].as_str()
        ),
        (Some("fay"), Some(0), Some(""))
    );
    assert_eq!(profile["privilege"], json!([]));

    let refresh = grant["refresh_token"].as_str().unwrap();
    let refreshed = get(format!("/sns/oauth2/refresh_token?appid={SANDBOX_WEBSITE_APPID}&grant_type=refresh_token&refresh_token={refresh}")).await;
    assert_eq!(
        refreshed["access_token"], token,
        "a live token is extended, not replaced"
    );
    let bad = get(format!(
        "/sns/oauth2/refresh_token?appid={SANDBOX_WEBSITE_APPID}&grant_type=refresh_token&refresh_token=nope"
    ))
    .await;
    assert_eq!(errcode(&bad), 40030);

    let wrong_scope = format!(
        "{sim}/connect/qrconnect?appid={SANDBOX_WEBSITE_APPID}&redirect_uri=https%3A%2F%2Fx&response_type=code&scope=snsapi_base&state=s"
    );
    assert!(
        reqwest::get(wrong_scope)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("该链接无法访问")
    );
}

both_stores!(a_new_state_replaces_the_old_one);

/// A page may ask for WeChat's page again (a re-render, a retry); only the newest state works,
/// so one session never holds more than one.
async fn a_new_state_replaces_the_old_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = start_website(&app).await;
    let (first, first_cookie) = qrconnect_url(&app, &pc).await;
    let (second, second_cookie) = qrconnect_url(&app, &pc).await;
    assert_ne!(param(&first, "state"), param(&second, "state"));
    let stale = scan_on_wechat(&first, "zoe", "allow").await;
    let (status, page) = callback_page(&stale, Some(&first_cookie)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(app.get_session(&pc, "").await.1["status"], "pending");
    let fresh = scan_on_wechat(&second, "zoe", "allow").await;
    let (status, _) = callback_page(&fresh, Some(&second_cookie)).await;
    assert!(status.is_success() || status.is_redirection(), "{status}");
    assert_eq!(app.get_session(&pc, "").await.1["status"], "confirmed");
}
