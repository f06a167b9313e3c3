//! The operator's admin API: tenants onboarded at run time (and in force on every instance),
//! validation naming the field, secrets that never come back, credentials rotated without
//! downtime, logos, and deletion.

use crate::helpers::{Backend, PATIENCE, TestApp, settings, spawn_app, spawn_app_with, spawn_simulator};
use crate::tenants::log_in;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ACME_APPID: &str = "wx0000000000acbe01";
const ACME_SECRET: &str = "acme-app-secret-value";
const HOOK_SECRET: &str = "beta-hook-secret-value";

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .bearer_auth("sandbox-admin");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn acme() -> Value {
    json!({
        "identifier": "acme",
        "display_name": "Acme",
        "appid": ACME_APPID,
        "app_secret": ACME_SECRET,
        "allowed_origins": ["https://acme.example"],
        "callback_urls": ["https://acme.example/cb"],
        "pool_size": 0,
    })
}

#[tokio::test]
async fn a_tenant_onboarded_on_one_instance_logs_in_on_another() {
    let mut settings = settings(Backend::Redis);
    settings.mount_simulator = false;
    settings.wechat_api_base = spawn_simulator();
    let a = spawn_app_with(settings.clone()).await;
    let b = spawn_app_with(settings).await;

    let (status, created) = admin(&a, Method::POST, "/v1/admin/connections", Some(acme())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        !created.to_string().contains(ACME_SECRET),
        "the AppSecret never comes back"
    );
    assert_eq!(created["connection"]["mini_program"], "private");
    let credential = created["credential"]["secret"].as_str().unwrap().to_owned();

    // In force on instance B within moments, through the store's event feed.
    tokio::time::timeout(PATIENCE, async {
        while b
            .http
            .get(b.url("/v1/connections/acme"))
            .send()
            .await
            .unwrap()
            .status()
            != StatusCode::OK
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("instance B serves the new connection");

    let (scan, ticket) = log_in(&b, "acme", ACME_APPID, "yan").await;
    assert_eq!(scan["session"]["display_name"], "Acme");
    let (status, body) = a.redeem(&ticket, "sandbox").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_ticket")),
        "another tenant's credential: its ticket looks unknown"
    );
    let (status, redeemed) = a.redeem(&ticket, &credential).await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    assert_eq!(redeemed["user"]["appid"], ACME_APPID);
    assert!(
        a.verify_id_token(redeemed["id_token"].as_str().unwrap(), "acme")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_admin_api_checks_every_field_and_names_the_wrong_one() {
    let app = spawn_app(Backend::Memory).await;
    let anonymous = app
        .http
        .get(app.url("/v1/admin/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let with = |change: Value| {
        let mut body = acme();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (change, field) in [
        (json!({ "identifier": "Bad!" }), "identifier"),
        (json!({ "code_width": 10 }), "code_width"),
        (json!({ "appid": "wx123" }), "appid"),
        (json!({ "app_secret_file": "/etc/shadow" }), "app_secret_file"),
        (json!({ "backend_secret": "chosen" }), "backend_secret"),
        (json!({ "login_only": true }), "login_only"),
        (
            json!({ "allowed_origins": ["https://acme.example/"] }),
            "allowed_origins",
        ),
        (json!({ "companion": "nope" }), "companion"),
        (json!({ "colour": "red" }), "colour"),
    ] {
        let (status, body) = admin(
            &app,
            Method::POST,
            "/v1/admin/connections",
            Some(with(change.clone())),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{change} → {body}"
        );
        assert!(!body.to_string().contains(ACME_SECRET), "{body}");
    }
    let mut missing = acme();
    missing.as_object_mut().unwrap().remove("display_name");
    let (status, body) = admin(&app, Method::POST, "/v1/admin/connections", Some(missing)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("display_name"))
    );
    let (status, body) = admin(
        &app,
        Method::POST,
        "/v1/admin/connections",
        Some(with(json!({ "identifier": "default" }))),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("connection_exists"))
    );
    let (status, _) = admin(&app, Method::GET, "/v1/admin/connections/acme", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing was created by the refusals"
    );
}

#[tokio::test]
async fn secrets_are_write_only_and_credentials_rotate_without_downtime() {
    let app = spawn_app(Backend::Redis).await;
    let mut body = acme();
    body["identifier"] = json!("beta");
    body["account_hook"] = json!({ "url": "https://beta.example/hook", "secret": HOOK_SECRET });
    let (status, created) = admin(&app, Method::POST, "/v1/admin/connections", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["credential"]["secret"].as_str().unwrap().to_owned();
    let first_id = created["credential"]["id"].as_str().unwrap().to_owned();

    let (_, list) = admin(&app, Method::GET, "/v1/admin/connections", None).await;
    let (_, one) = admin(&app, Method::GET, "/v1/admin/connections/beta", None).await;
    let (_, patched) = admin(
        &app,
        Method::PATCH,
        "/v1/admin/connections/beta",
        Some(json!({ "display_name": "Beta Two", "app_secret": "rotated-app-secret" })),
    )
    .await;
    assert_eq!(patched["display_name"], "Beta Two");
    assert_eq!(
        patched["account_hook"]["url"], "https://beta.example/hook",
        "kept"
    );
    for answer in [&list, &one, &patched] {
        let text = answer.to_string();
        for secret in [ACME_SECRET, HOOK_SECRET, "rotated-app-secret", first.as_str()] {
            assert!(!text.contains(secret), "a secret came back: {text}");
        }
    }
    assert_eq!(
        one["credentials"],
        json!([{ "id": first_id, "created_at": one["credentials"][0]["created_at"] }])
    );
    let (status, body) = admin(
        &app,
        Method::PATCH,
        "/v1/admin/connections/beta",
        Some(json!({ "identifier": "gamma" })),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("identifier"))
    );
    let details = crate::helpers::fetch_json(app.http.get(app.url("/v1/connections/beta"))).await;
    assert_eq!(details["display_name"], "Beta Two");

    // A second credential; the first revoked (redemption with each: the deletion test below).
    let (status, second) = admin(&app, Method::POST, "/v1/admin/connections/beta/credentials", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let second_secret = second["secret"].as_str().unwrap().to_owned();
    let (_, listed) = admin(&app, Method::GET, "/v1/admin/connections/beta/credentials", None).await;
    assert_eq!(listed["credentials"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&second_secret));
    let (status, _) = admin(
        &app,
        Method::DELETE,
        &format!("/v1/admin/connections/beta/credentials/{first_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Nothing of it readable in Redis either.
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*connections")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let raw: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        for secret in [
            ACME_SECRET,
            HOOK_SECRET,
            "rotated-app-secret",
            first.as_str(),
            second_secret.as_str(),
        ] {
            assert!(!raw.contains(secret), "{key} holds a secret in clear");
        }
    }
}

#[tokio::test]
async fn logos_are_checked_and_a_deleted_tenants_logins_stop() {
    let app = spawn_app(Backend::Memory).await;
    let (status, created) = admin(&app, Method::POST, "/v1/admin/connections", Some(acme())).await;
    assert_eq!(status, StatusCode::CREATED);
    let credential = created["credential"]["secret"].as_str().unwrap().to_owned();
    let logo = async || {
        let response = app
            .http
            .get(app.url("/v1/connections/acme/logo"))
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap()
    };
    let logo_before = logo().await;
    let mut png = Vec::new();
    image::RgbaImage::from_pixel(64, 64, image::Rgba([20, 160, 60, 255]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let upload = |bytes: Vec<u8>| {
        app.http
            .put(app.url("/v1/admin/connections/acme/logo"))
            .bearer_auth("sandbox-admin")
            .header("content-type", "image/png")
            .body(bytes)
            .send()
    };
    assert_eq!(upload(png).await.unwrap().status(), StatusCode::OK);
    let logo_after = logo().await;
    assert_ne!(logo_before, logo_after, "the new logo is in force");
    let refused: Value = upload(b"not an image".to_vec())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["field"], "logo", "{refused}");

    // Rotation without downtime: a second credential, the first revoked, logins go on.
    let first_id = created["credential"]["id"].as_str().unwrap().to_owned();
    let (_, ticket) = log_in(&app, "acme", ACME_APPID, "zed").await;
    let (_, second) = admin(&app, Method::POST, "/v1/admin/connections/acme/credentials", None).await;
    let second = second["secret"].as_str().unwrap().to_owned();
    let (status, _) = admin(
        &app,
        Method::DELETE,
        &format!("/v1/admin/connections/acme/credentials/{first_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.redeem(&ticket, &credential).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
    );
    assert_eq!(
        app.redeem(&ticket, &second).await.0,
        StatusCode::OK,
        "the refusal burned nothing"
    );

    // A confirmed login and a waiting one, then the tenant is deleted.
    let (_, ticket) = log_in(&app, "acme", ACME_APPID, "zed").await;
    let (_, waiting) = app.create_session(json!({ "connection": "acme" })).await;
    let (status, _) = admin(&app, Method::DELETE, "/v1/admin/connections/acme", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Its credentials went with it.
    let (status, body) = app.redeem(&ticket, &second).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
    );
    let (status, body) = app.scan_as(waiting["id"].as_str().unwrap(), "zed").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("connection_removed"))
    );
    assert_eq!(
        app.http
            .get(app.url("/v1/connections/acme"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = app.create_session(json!({ "connection": "acme" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
