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
    bad_states_and_codes_change_nothing_or_say_why
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

/// `GET …/website`: WeChat's login page URL (a 302).
async fn qrconnect_url(pc: &PcSession) -> String {
    let url = format!(
        "{}?secret={}",
        pc.body["website_url"].as_str().unwrap(),
        pc.secret
    );
    let response = no_redirects().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    response.headers()["location"].to_str().unwrap().to_owned()
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

async fn callback_page(url: &str) -> (StatusCode, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status(), response.text().await.unwrap())
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

    let qrconnect = qrconnect_url(&pc).await;
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

    let (status, page) = callback_page(&callback).await;
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
    let qrconnect = qrconnect_url(&pc).await;
    let state = param(&qrconnect, "state");

    for url in [
        callback.clone(),
        format!("{callback}?code=x"),
        format!("{callback}?code=x&state={}", "A".repeat(24)),
        format!("{callback}?code=x&state=short"),
    ] {
        let (status, page) = callback_page(&url).await;
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
    let (status, page) = callback_page(&format!("{callback}?code=made-up&state={state}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("WeChat does not accept this code"), "{page}");
    let told = socket.next_json().await;
    assert_eq!(
        (told["status"].as_str(), told["error"].as_str()),
        (Some("cancelled"), Some("invalid_code"))
    );

    // The state was spent by that attempt: replaying it is refused.
    let (status, _) = callback_page(&format!("{callback}?code=made-up&state={state}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A denial: WeChat returns the state alone.
    let pc = start_website(&app).await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let denied = scan_on_wechat(&qrconnect_url(&pc).await, "bob", "deny").await;
    assert!(!denied.contains("code="));
    let (status, page) = callback_page(&denied).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("You declined the login"), "{page}");
    let told = socket.next_json().await;
    assert_eq!(
        (told["status"].as_str(), told["error"].as_str()),
        (Some("cancelled"), Some("authorization_denied"))
    );

    // A state for a session the browser gave up on: refused, and the session stays cancelled.
    let pc = start_website(&app).await;
    let late = scan_on_wechat(&qrconnect_url(&pc).await, "carl", "allow").await;
    assert_eq!(app.give_up(&pc, &pc.secret).await, StatusCode::OK);
    let (status, page) = callback_page(&late).await;
    assert_eq!(status, StatusCode::GONE, "{page}");
    assert_eq!(app.get_session(&pc, "").await.1["status"], "cancelled");
    assert!(app.get_session(&pc, "").await.1.get("error").is_none());
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
    let callback = scan_on_wechat(&qrconnect_url(&pc).await, "dora", "allow").await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    assert_eq!(socket.next_json().await["status"], "expired");
    let (status, page) = callback_page(&callback).await;
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
    let url = format!(
        "{}?secret={}&mode=embed",
        pc.body["website_url"].as_str().unwrap(),
        pc.secret
    );
    let options = fetch_json(app.http.get(url)).await;
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
    let wrong_secret = format!("{}?secret=guess", pc.body["website_url"].as_str().unwrap());
    assert_eq!(
        app.http.get(wrong_secret).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = app.scan_as(&pc.id, "erin").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("wrong_login_path"))
    );
    let mp = app.start().await;
    let url = format!(
        "{}/v1/login-sessions/{}/website?secret={}",
        app.base, mp.id, mp.secret
    );
    let response = no_redirects().get(url).send().await.unwrap();
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
