//! The production WeChat client against the simulator: token sharing, refresh-and-retry,
//! and WeChat's failures mapped to clear relay errors.

use crate::both_stores;
use crate::helpers::{Backend, fetch_json, settings, spawn_app, spawn_app_with, spawn_simulator};
use qrlogin_relay::config::{Secret, WeChatApp};
use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_APPID};
use qrlogin_relay::store::SessionStore;
use qrlogin_relay::wechat::{CodeRequest, WeChatClient, WeChatError};
use reqwest::StatusCode;
use serde_json::json;

both_stores!(
    one_token_serves_many_calls,
    a_refused_token_is_refreshed_and_the_call_retried_once
);

async fn one_token_serves_many_calls(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..3 {
        app.start().await;
    }
    assert_eq!(app.sim_calls("stable_token").await, 1);
    assert_eq!(app.sim_calls("getwxacodeunlimit").await, 3);
}

async fn a_refused_token_is_refreshed_and_the_call_retried_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let scan = app.scan(&pc, "olga").await;
    let revoke = app
        .http
        .post(format!("{}/_sim/revoke-tokens", app.wechat))
        .json(&json!({ "appid": SANDBOX_APPID }));
    assert!(revoke.send().await.unwrap().status().is_success());

    let phone_code = app.phone_code("olga", "13800138000").await;
    assert_eq!(app.confirm(&scan, &phone_code).await.0, StatusCode::OK);
    // The first fetch, then a normal call that returned the refused token, then a forced one.
    assert_eq!(app.sim_calls("stable_token").await, 3);
    assert_eq!(app.sim_calls("getuserphonenumber").await, 2);
    app.start().await;
    assert_eq!(app.sim_calls("stable_token").await, 3, "the new token is cached");
}

#[tokio::test]
async fn wechat_busy_or_unreachable_is_a_retryable_error_not_a_500() {
    let app = spawn_app(Backend::Memory).await;
    let pc = app.start().await;
    let fail = json!({ "api": "jscode2session", "errcode": -1 });
    app.http
        .post(format!("{}/_sim/fail-next", app.wechat))
        .json(&fail)
        .send()
        .await
        .unwrap();
    let (status, body) = app.scan_as(&pc.id, "paul").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("wechat_busy"))
    );
    assert_eq!(app.get_session(&pc, "").await.1["status"], "pending");

    let fail = json!({ "api": "stable_token", "errcode": 40125 });
    let fresh = spawn_app(Backend::Memory).await;
    fresh
        .http
        .post(format!("{}/_sim/fail-next", fresh.wechat))
        .json(&fail)
        .send()
        .await
        .unwrap();
    let (status, body) = fresh.create_session(json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("wechat_rejected"))
    );
    assert!(
        !body.to_string().contains(SANDBOX_APP_SECRET),
        "no secret in error bodies"
    );

    let mut offline = settings(Backend::Memory);
    offline.mount_simulator = false;
    offline.wechat_api_base = "http://127.0.0.1:9".into();
    let offline = spawn_app_with(offline).await;
    let (status, body) = offline.create_session(json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("wechat_unavailable"))
    );
}

#[tokio::test]
async fn the_client_speaks_the_wire_format() {
    let simulator = spawn_simulator();
    let client = WeChatClient::new(&simulator, SessionStore::memory(60), Default::default()).unwrap();
    let sandbox = WeChatApp {
        appid: SANDBOX_APPID.into(),
        secret: Secret::new(SANDBOX_APP_SECRET),
    };
    let http = reqwest::Client::new();
    let mint = async |appid: &str, user: &str| {
        let body = json!({ "appid": appid, "user": user });
        let answer = fetch_json(http.post(format!("{simulator}/_sim/login-code")).json(&body)).await;
        answer["code"].as_str().unwrap().to_owned()
    };

    let request = CodeRequest {
        scene: "abc",
        page: Some("pages/login/login"),
        check_path: true,
        env_version: "release",
        width: 280,
    };
    let png = client.unlimited_code(&sandbox, &request).await.unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 280);
    let bad_page = CodeRequest {
        page: Some("pages/missing/missing"),
        ..request.clone()
    };
    assert!(matches!(
        client.unlimited_code(&sandbox, &bad_page).await,
        Err(WeChatError::Api { errcode: 41030, .. })
    ));

    let user = client
        .code_to_session(&sandbox, &mint(SANDBOX_APPID, "quinn").await)
        .await
        .unwrap();
    let again = client
        .code_to_session(&sandbox, &mint(SANDBOX_APPID, "quinn").await)
        .await
        .unwrap();
    assert_eq!(user, again, "openid and unionid are stable per app and user");
    assert!(user.unionid.is_some());

    // A private deployment's AppID registers with its first secret, and has no Open Platform binding.
    let private = WeChatApp {
        appid: "wx00112233445566aa".into(),
        secret: Secret::new("first-secret"),
    };
    let code = mint(&private.appid, "quinn").await;
    let private_user = client.code_to_session(&private, &code).await.unwrap();
    assert_ne!(private_user.openid, user.openid, "openids differ per app");
    assert_eq!(private_user.unionid, None);
    let impostor = WeChatApp {
        secret: Secret::new("other-secret"),
        ..private.clone()
    };
    let code = mint(&private.appid, "quinn").await;
    assert!(matches!(
        client.code_to_session(&impostor, &code).await,
        Err(WeChatError::Api { errcode: 40125, .. })
    ));
}

async fn steer(app: &crate::helpers::TestApp, control: &str, body: serde_json::Value) {
    let response = app
        .http
        .post(format!("{}/_sim/{control}", app.wechat))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn busy_wechat_is_retried_with_backoff_where_a_retry_spends_nothing_twice() {
    let app = spawn_app(Backend::Memory).await;
    // Token fetch and code minting: retried through two busy answers.
    steer(&app, "fail-next", json!({ "api": "stable_token", "errcode": -1 })).await;
    steer(
        &app,
        "fail-next",
        json!({ "api": "getwxacodeunlimit", "errcode": 45009, "times": 2 }),
    )
    .await;
    let pc = app.start().await;
    assert_eq!(app.sim_calls("stable_token").await, 2);
    assert_eq!(app.sim_calls("getwxacodeunlimit").await, 3);

    // Bounded: a WeChat that stays busy is a clear, retryable 503 after three tries.
    steer(
        &app,
        "fail-next",
        json!({ "api": "getwxacodeunlimit", "errcode": -1, "times": 10 }),
    )
    .await;
    app.start_refused_503("wechat_busy").await;
    assert_eq!(app.sim_calls("getwxacodeunlimit").await, 6);
    steer(
        &app,
        "fail-next",
        json!({ "api": "getwxacodeunlimit", "errcode": -1, "times": 0 }),
    )
    .await;

    // A person's single-use code that reached WeChat is never sent twice: the phone gets
    // wechat_busy and retries with a new wx.login code.
    steer(
        &app,
        "fail-next",
        json!({ "api": "jscode2session", "errcode": -1 }),
    )
    .await;
    let (status, body) = app.scan_as(&pc.id, "quinn").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("wechat_busy"))
    );
    assert_eq!(app.sim_calls("jscode2session").await, 1);
    let (status, _) = app.scan_as(&pc.id, "quinn").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_wechat_for_one_appid_does_not_slow_logins_on_another() {
    let mut settings = settings(Backend::Memory);
    let mut private = settings.connections[0].clone();
    private.identifier = "private".into();
    private.appid = Some("wx00112233445566aa".into());
    private.app_secret = Some(Secret::new("private-app-secret-0000000000000"));
    private.companion = None;
    settings.connections.push(private);
    let app = spawn_app_with(settings).await;
    let slow = app.create_session(json!({ "connection": "private" })).await.1;
    let quick = app.start().await;
    steer(
        &app,
        "delay",
        json!({ "api": "jscode2session", "millis": 3000, "appid": "wx00112233445566aa" }),
    )
    .await;

    let slow_code = fetch_json(
        app.http
            .post(format!("{}/_sim/login-code", app.wechat))
            .json(&json!({ "appid": "wx00112233445566aa", "user": "rosa" })),
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let scan = app.http.post(app.url("/v1/mp/scan")).json(&json!({
        "scene": slow["id"], "login_code": slow_code, "launch_scene": 1047
    }));
    let slow_scan = tokio::spawn(scan.send());
    // The other AppID's whole login goes through while that scan waits on WeChat.
    app.log_in(&quick, "ruth", "13800138000").await;
    assert_eq!(app.get_session(&quick, "").await.1["status"], "confirmed");
    assert!(
        !slow_scan.is_finished(),
        "the slow AppID's scan is still waiting on WeChat"
    );
    assert_eq!(slow_scan.await.unwrap().unwrap().status(), StatusCode::OK);
}
