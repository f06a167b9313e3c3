//! The account hook: a real HTTP hook the test runs, asked before every confirm, allowing with
//! the tenant's user id, denying with a reason (phone and PC both told), and unavailable when
//! slow or talking nonsense (the login waits, the phone may retry).

use crate::helpers::{Backend, PcSession, TestApp, settings, spawn_app_with};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use qrlogin_relay::account_hook::signature;
use qrlogin_relay::config::{AccountHookSettings, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::Mutex;

const HOOK_SECRET: &str = "hook-secret-for-tests";

/// The tenant's hook: answers as `mode` says, and keeps every request it got.
#[derive(Default)]
struct Hook {
    mode: Mutex<&'static str>,
    seen: Mutex<Vec<Value>>,
}

async fn hook(hook: web::Data<Hook>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body = String::from_utf8(body.to_vec()).unwrap();
    let signed = req
        .headers()
        .get("x-qrlogin-signature")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let t: u64 = signed
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    // What a tenant must check: the signature over the time and the body.
    assert_eq!(signed, signature(HOOK_SECRET, t, &body), "a valid signature");
    let person: Value = serde_json::from_str(&body).unwrap();
    hook.seen.lock().unwrap().push(person.clone());
    let mode = *hook.mode.lock().unwrap();
    match mode {
        "allow" => HttpResponse::Ok().json(json!({ "allow": true, "user_id": format!("member-{}", &person["openid"].as_str().unwrap()[..6]) })),
        "allow-anonymous" => HttpResponse::Ok().json(json!({ "allow": true })),
        "deny" => HttpResponse::Ok().json(json!({ "allow": false, "reason": "No account for this WeChat user" })),
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            HttpResponse::Ok().json(json!({ "allow": true, "user_id": "late" }))
        }
        _ => HttpResponse::Ok().content_type("text/html").body("<html>oops</html>"),
    }
}

async fn hooked_app(login_only: bool) -> (TestApp, web::Data<Hook>) {
    let state = web::Data::new(Hook::default());
    *state.mode.lock().unwrap() = "allow";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/hook", web::post().to(hook))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let mut settings = settings(Backend::Memory);
    let shop = &mut settings.connections[0];
    shop.account_hook = Some(AccountHookSettings {
        url,
        secret: Some(Secret::new(HOOK_SECRET)),
        secret_file: None,
    });
    shop.login_only = login_only;
    (spawn_app_with(settings).await, state)
}

async fn confirm_as(app: &TestApp, pc: &PcSession, user: &str) -> (StatusCode, Value) {
    let scan = app.scan(pc, user).await;
    let phone = app.phone_code(user, "13700137000").await;
    app.confirm(&scan, &phone).await
}

#[tokio::test]
async fn an_allowed_person_carries_the_tenants_user_id_into_the_token() {
    let (app, hook) = hooked_app(true).await;
    let pc = app.start().await;
    let (status, body) = confirm_as(&app, &pc, "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["phone_number"], "13700137000",
        "the hook gets the verified person"
    );
    assert_eq!(seen[0]["connection"], "default");
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, redeemed) = app.redeem(&ticket, "sandbox").await;
    let user_id = redeemed["user"]["user_id"].as_str().unwrap().to_owned();
    assert!(user_id.starts_with("member-"), "{redeemed}");
    let claims = app
        .verify_id_token(redeemed["id_token"].as_str().unwrap(), "default")
        .await
        .unwrap();
    assert_eq!(claims["sub"], user_id);
}

#[tokio::test]
async fn a_denied_person_ends_the_login_and_phone_and_pc_are_told() {
    let (app, hook) = hooked_app(true).await;
    *hook.mode.lock().unwrap() = "deny";
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    let (status, body) = confirm_as(&app, &pc, "mallory").await;
    assert_eq!(socket.next_json().await["status"], "scanned");
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_denied"))
    );
    assert_eq!(body["message"], "No account for this WeChat user");
    let told = socket.next_json().await;
    assert_eq!(
        (told["status"].as_str(), told["reason"].as_str()),
        (Some("denied"), Some("No account for this WeChat user"))
    );
    socket.expect_normal_close().await;
    let (_, view) = app.get_session(&pc, "").await;
    assert_eq!(view["status"], "denied");
    assert!(view.get("ticket").is_none());
    // Over for good: the code cannot be scanned again.
    let (status, body) = app.scan_as(&pc.id, "mallory").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("session_denied"))
    );
}

#[tokio::test]
async fn a_slow_or_confused_hook_leaves_the_login_waiting_for_a_retry() {
    let (app, hook) = hooked_app(true).await;
    let pc = app.start().await;
    let scan = app.scan(&pc, "bob").await;
    for mode in ["slow", "garbage", "allow-anonymous"] {
        *hook.mode.lock().unwrap() = mode;
        let phone = app.phone_code("bob", "13700137000").await;
        let (status, body) = app.confirm(&scan, &phone).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("account_hook_unavailable")),
            "{mode}"
        );
        assert_eq!(app.get_session(&pc, "").await.1["status"], "scanned", "{mode}");
    }
    *hook.mode.lock().unwrap() = "allow";
    let phone = app.phone_code("bob", "13700137000").await;
    assert_eq!(
        app.confirm(&scan, &phone).await.0,
        StatusCode::OK,
        "the retry goes through"
    );
}

#[tokio::test]
async fn without_login_only_an_anonymous_allow_is_fine() {
    let (app, hook) = hooked_app(false).await;
    *hook.mode.lock().unwrap() = "allow-anonymous";
    let pc = app.start().await;
    assert_eq!(confirm_as(&app, &pc, "dora").await.0, StatusCode::OK);
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, redeemed) = app.redeem(&ticket, "sandbox").await;
    assert!(redeemed["user"].get("user_id").is_none());
}
