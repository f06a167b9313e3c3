//! Tenants side by side: two on the operator's shared mini-program (each with its own name and
//! logo on the confirm screen) and one privately deployed with its own AppID, logging in at
//! once; a tenant's credential never redeems another's ticket.

use crate::helpers::{Backend, TestApp, fetch_json, settings, spawn_app_with};
use qrlogin_relay::config::{Secret, SharedMiniProgram};
use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_APPID};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PRIVATE_APPID: &str = "wx0123456789abcd01";

/// A full login as `user` on `connection`, whose mini-program is `appid`: the scan answer and
/// the ticket.
pub async fn log_in(app: &TestApp, connection: &str, appid: &str, user: &str) -> (Value, String) {
    let (status, created) = app.create_session(json!({ "connection": connection })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let mint = |what: &str, body: Value| {
        fetch_json(app.http.post(format!("{}/_sim/{what}", app.wechat)).json(&body))
    };
    let login_code = mint("login-code", json!({ "user": user, "appid": appid })).await["code"].clone();
    let (status, scan) = app
        .post_json(
            "/v1/mp/scan",
            &json!({ "scene": id, "login_code": login_code, "launch_scene": 1047 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{scan}");
    let phone_code = mint(
        "phone-code",
        json!({ "user": user, "appid": appid, "phone": "13600136000" }),
    )
    .await["code"]
        .clone();
    let confirm = json!({ "scene": id, "scan_token": scan["scan_token"], "phone_code": phone_code });
    let (status, body) = app.post_json("/v1/mp/confirm", &confirm).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = fetch_json(
        app.http
            .get(app.url(&format!("/v1/login-sessions/{id}")))
            .bearer_auth(created["secret"].as_str().unwrap()),
    )
    .await;
    (scan, view["ticket"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn tenants_on_the_shared_and_private_mini_programs_log_in_side_by_side() {
    let logo = std::env::temp_dir().join(format!("qrlogin-tenant-b-{}.png", std::process::id()));
    image::RgbaImage::from_pixel(64, 64, image::Rgba([200, 30, 30, 255]))
        .save(&logo)
        .unwrap();
    let mut settings = settings(Backend::Redis);
    settings.shared_miniprogram = Some(SharedMiniProgram {
        appid: SANDBOX_APPID.into(),
        app_secret: Some(Secret::new(SANDBOX_APP_SECRET)),
        app_secret_file: None,
    });
    let base = settings.connections[0].clone();
    let tenant = |identifier: &str, name: &str, backend: &str| {
        let mut c = base.clone();
        c.identifier = identifier.into();
        c.display_name = name.into();
        c.appid = None;
        c.app_secret = None;
        c.companion = None;
        c.backend_secret = Some(Secret::new(backend));
        c
    };
    let a = tenant("tenant-a", "Tenant A", "credential-a");
    let mut b = tenant("tenant-b", "Tenant B", "credential-b");
    b.logo = Some(logo.clone());
    let mut private = tenant("private", "Private Co", "credential-p");
    private.appid = Some(PRIVATE_APPID.into());
    private.app_secret = Some(Secret::new("private-app-secret"));
    settings.connections.extend([a, b, private]);
    let app = spawn_app_with(settings).await;

    let ((scan_a, ticket_a), (scan_b, ticket_b), (scan_p, ticket_p)) = tokio::join!(
        log_in(&app, "tenant-a", SANDBOX_APPID, "zoe"),
        log_in(&app, "tenant-b", SANDBOX_APPID, "zoe"),
        log_in(&app, "private", PRIVATE_APPID, "zoe"),
    );
    // The confirm screen names each tenant, with its own logo.
    assert_eq!(scan_a["session"]["display_name"], "Tenant A");
    assert_eq!(scan_b["session"]["display_name"], "Tenant B");
    assert_eq!(scan_p["session"]["display_name"], "Private Co");
    let app = &app;
    let logo_of = async |scan: &Value| {
        let url = scan["session"]["logo_url"].as_str().unwrap().to_owned();
        app.http.get(url).send().await.unwrap().bytes().await.unwrap()
    };
    assert_ne!(
        logo_of(&scan_a).await,
        logo_of(&scan_b).await,
        "each tenant's own logo"
    );

    // One tenant's credential never redeems another's ticket, and the refusal burns nothing.
    let (status, body) = app.redeem(&ticket_a, "credential-b").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_ticket"))
    );
    let (status, user_a) = app.redeem(&ticket_a, "credential-a").await;
    assert_eq!(status, StatusCode::OK, "{user_a}");
    let (_, user_b) = app.redeem(&ticket_b, "credential-b").await;
    let (_, user_p) = app.redeem(&ticket_p, "credential-p").await;
    assert_eq!(user_a["user"]["appid"], SANDBOX_APPID);
    assert_eq!(user_b["user"]["appid"], SANDBOX_APPID);
    assert_eq!(user_p["user"]["appid"], PRIVATE_APPID);
    assert_eq!(
        user_a["user"]["openid"], user_b["user"]["openid"],
        "one shared mini-program"
    );
    assert_ne!(
        user_a["user"]["openid"], user_p["user"]["openid"],
        "another AppID, another openid"
    );
    let sub = async |redeemed: &Value, aud: &str| {
        let token = redeemed["id_token"].as_str().unwrap();
        app.verify_id_token(token, aud).await.unwrap()["sub"].clone()
    };
    assert_ne!(
        sub(&user_a, "tenant-a").await,
        sub(&user_b, "tenant-b").await,
        "tenants cannot join their users"
    );
    std::fs::remove_file(logo).ok();
}
