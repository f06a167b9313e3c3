//! Whole logins, as a PC page, a mini-program and a website backend perform them.

use crate::both_stores;
use crate::helpers::{Backend, fetch_json, settings, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::timeout;

both_stores!(
    a_full_login_is_pushed_to_the_browser_and_redeemed_once,
    a_long_poll_returns_as_soon_as_the_state_changes,
    expiry_is_pushed_to_a_waiting_socket,
    a_cancel_on_the_phone_reaches_the_browser,
    the_browser_can_give_up,
    the_code_image_is_the_branded_sun_code,
);

async fn a_full_login_is_pushed_to_the_browser_and_redeemed_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    assert_eq!(pc.body["status"], "pending");
    assert_eq!(pc.body["expires_in"], 120);
    assert!(pc.body["ws_url"].as_str().unwrap().starts_with("ws://"));

    let mut socket = app.socket(&pc).await;
    let first = socket.next_json().await;
    assert_eq!(first["status"], "pending");
    assert_eq!(first["id"], pc.id.as_str());

    let scan = app.scan(&pc, "alice").await;
    assert_eq!(scan.body["session"]["display_name"], "Sandbox Mini Program");
    assert_eq!(scan.body["session"]["client"]["ip"], "127.0.0.1");
    assert_eq!(
        scan.body["session"]["client"]["browser"], "Unknown browser",
        "reqwest is not a browser"
    );
    assert_eq!(socket.next_json().await["status"], "scanned");

    let phone_code = app.phone_code("alice", "13800138000").await;
    let (status, body) = app.confirm(&scan, &phone_code).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("confirmed"))
    );
    let confirmed = socket.next_json().await;
    assert_eq!(confirmed["status"], "confirmed");
    let ticket = confirmed["ticket"]
        .as_str()
        .expect("the pushed frame carries the ticket")
        .to_owned();
    socket.expect_normal_close().await;

    let (status, view) = app.get_session(&pc, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["ticket"],
        ticket.as_str(),
        "the secret holder reads the same ticket"
    );

    let (status, redeemed) = app.redeem(&ticket, "sandbox").await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    let user = &redeemed["user"];
    assert_eq!(user["phone_number"], "13800138000");
    assert_eq!(user["country_code"], "86");
    assert_eq!(user["connection"], "default");
    assert_eq!(user["appid"], qrlogin_relay::sandbox::SANDBOX_APPID);
    assert!(user["openid"].as_str().unwrap().starts_with('o'));
    assert!(
        user["unionid"].is_string(),
        "the sandbox app is bound to an Open Platform account"
    );
    let claims = app
        .verify_id_token(redeemed["id_token"].as_str().unwrap(), "default")
        .await
        .expect("verifies against the JWKS");
    assert_eq!(claims["openid"], user["openid"]);
    assert_eq!(claims["phone_number"], "13800138000");

    let (status, again) = app.redeem(&ticket, "sandbox").await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::CONFLICT, Some("already_redeemed"))
    );
    let (_, view) = app.get_session(&pc, "").await;
    assert_eq!(view["status"], "redeemed");
    assert!(view.get("ticket").is_none(), "a used ticket is not shown again");
}

async fn a_long_poll_returns_as_soon_as_the_state_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;

    let (status, view) = app.get_session(&pc, "?wait=0").await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    // A caller that last saw another status gets the current one at once.
    let (_, view) = app.get_session(&pc, "?wait=30&status=scanned").await;
    assert_eq!(view["status"], "pending");

    let poll = app.get_session(&pc, "?wait=30&status=pending");
    let scan = async {
        app.until_waiting(1).await;
        app.scan(&pc, "bob").await
    };
    let ((status, view), _) = timeout(crate::helpers::PATIENCE, async { tokio::join!(poll, scan) })
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "scanned", "the poll was woken by the scan");
}

async fn expiry_is_pushed_to_a_waiting_socket(backend: Backend) {
    let mut settings = settings(backend);
    settings.connections[0].session_ttl_secs = 3;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    assert_eq!(socket.next_json().await["status"], "expired");
    socket.expect_normal_close().await;

    let (_, view) = app.get_session(&pc, "").await;
    assert_eq!(view["status"], "expired", "late pollers see expired, not 404");
    let (status, body) = app.scan_as(&pc.id, "carol").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("session_expired"))
    );
    let code = app
        .http
        .get(app.url(&format!("/v1/login-sessions/{}/code", pc.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(code.status(), StatusCode::GONE);
}

async fn a_cancel_on_the_phone_reaches_the_browser(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let scan = app.scan(&pc, "dave").await;
    assert_eq!(socket.next_json().await["status"], "scanned");

    let (status, body) = app
        .post_json("/v1/mp/cancel", &json!({ "scene": pc.id, "scan_token": "wrong" }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_scan_token"))
    );
    let (status, body) = app
        .post_json(
            "/v1/mp/cancel",
            &json!({ "scene": pc.id, "scan_token": scan.scan_token }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert_eq!(socket.next_json().await["status"], "cancelled");
    socket.expect_normal_close().await;

    let phone_code = app.phone_code("dave", "13800138000").await;
    let (status, body) = app.confirm(&scan, &phone_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("session_cancelled"))
    );
}

async fn the_browser_can_give_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    assert_eq!(app.give_up(&pc, "not-the-secret").await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.give_up(&pc, &pc.secret).await, StatusCode::OK);
    let (status, body) = app.scan_as(&pc.id, "erin").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("session_cancelled"))
    );
}

async fn the_code_image_is_the_branded_sun_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let url = pc.body["code_url"].as_str().unwrap();
    let response = app.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let png = response.bytes().await.unwrap();
    let image = image::load_from_memory(&png).unwrap().to_rgba8();
    assert_eq!(image.dimensions(), (430, 430));
    // The bundled logo is blue where the simulator's avatar is green.
    let centre = image.get_pixel(215, 150);
    assert!(
        centre[2] > 200 && centre[1] < 150,
        "logo over the centre, got {centre:?}"
    );

    let cached = app
        .http
        .get(url)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
}

both_stores!(operators_see_health_readiness_and_metrics);

async fn operators_see_health_readiness_and_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = fetch_json(app.http.get(app.url("/healthz"))).await;
    assert_eq!(health["status"], "ok");
    let ready = fetch_json(app.http.get(app.url("/readyz"))).await;
    let kind = match backend {
        Backend::Memory => "memory",
        Backend::Redis => "redis",
    };
    assert_eq!(
        (ready["status"].as_str(), ready["store"].as_str()),
        (Some("ready"), Some(kind))
    );
    app.start().await;
    assert_eq!(app.metric("qrlogin_sessions_created_total").await, 1);
}

#[tokio::test]
async fn the_sandbox_serves_its_demo_page_and_production_does_not() {
    let app = spawn_app(Backend::Memory).await;
    let page = app.http.get(app.url("/sandbox")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/qrlogin.js"></script>"#), "{html}");
    assert!(
        html.contains(&format!(r#"data-callback="{}/sandbox""#, app.base)),
        "{html}"
    );

    let mut production = settings(Backend::Memory);
    production.mount_simulator = false;
    production.wechat_api_base = crate::helpers::spawn_simulator();
    let app = spawn_app_with(production).await;
    assert_eq!(
        app.http.get(app.url("/sandbox")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}
