//! ID tokens a website backend verifies with an ordinary JWT library against the JWKS: ES256
//! with a `kid`, the claims, rotation, and the refusals a verifier must make.

use crate::both_stores;
use crate::helpers::{
    Backend, PcSession, TestApp, fetch_json, redis_url, settings, spawn_app, spawn_app_with,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

both_stores!(tokens_verify_against_the_jwks_and_name_the_person_per_connection);

/// A full login as `user` on `connection`; returns the redemption's answer.
async fn login(app: &TestApp, connection: &str, user: &str) -> Value {
    let (status, body) = app.create_session(json!({ "connection": connection })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let pc = PcSession {
        id: body["id"].as_str().unwrap().into(),
        secret: body["secret"].as_str().unwrap().into(),
        body,
    };
    app.log_in(&pc, user, "13800138000").await;
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, redeemed) = app.redeem(&ticket, "sandbox").await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    redeemed
}

fn token_of(redeemed: &Value) -> &str {
    redeemed["id_token"].as_str().unwrap()
}

async fn rotate(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/admin/signing-keys/rotate"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn tokens_verify_against_the_jwks_and_name_the_person_per_connection(backend: Backend) {
    let app = spawn_app(backend).await;
    let redeemed = login(&app, "default", "alice").await;
    let token = token_of(&redeemed);
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert!(header.kid.is_some());
    let claims = app.verify_id_token(token, "default").await.unwrap();
    let user = &redeemed["user"];
    assert_eq!(claims["iss"], app.base);
    assert_eq!(claims["openid"], user["openid"]);
    assert_eq!(claims["unionid"], user["unionid"]);
    assert_eq!(claims["phone_number"], "13800138000");
    assert_eq!(claims["phone_number_verified"], true);
    assert_eq!(claims["amr"], json!(["wechat_miniprogram"]));
    let (iat, exp, auth_time) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
        claims["auth_time"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    assert!(auth_time <= iat);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    let sub = claims["sub"].as_str().unwrap();
    assert!(
        sub != user["openid"] && sub != user["unionid"],
        "sub is pairwise, not the raw id"
    );

    // The same person again: the same sub at this connection, another one at another.
    let again = app
        .verify_id_token(token_of(&login(&app, "default", "alice").await), "default")
        .await
        .unwrap();
    assert_eq!(again["sub"], sub);
    assert_ne!(again["jti"], claims["jti"]);
    let website = login_website_like(&app).await;
    let link = app.verify_id_token(token_of(&website), "link").await.unwrap();
    assert_eq!(link["unionid"], claims["unionid"], "one person");
    assert_ne!(link["sub"], sub, "differs per connection");

    // What a verifier must refuse: another audience, alg none, a changed payload.
    assert!(app.verify_id_token(token, "link").await.is_err(), "wrong aud");
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    assert!(
        app.verify_id_token(&format!("{none_header}.{}.", parts[1]), "default")
            .await
            .is_err()
    );
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["openid"] = json!("someone-else");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert!(
        app.verify_id_token(&forged, "default").await.is_err(),
        "a changed payload"
    );
}

/// A login through the `link` connection (same mini-program, another connection).
async fn login_website_like(app: &TestApp) -> Value {
    login(app, "link", "alice").await
}

#[tokio::test]
async fn a_rotation_keeps_earlier_tokens_verifiable_and_needs_the_operator() {
    let app = spawn_app(Backend::Memory).await;
    let before = login(&app, "default", "bob").await;
    assert_eq!(
        rotate(&app, "not-the-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let anonymous = app
        .http
        .post(app.url("/v1/admin/signing-keys/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let rotated = rotate(&app, "sandbox-admin").await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let old_kid = jsonwebtoken::decode_header(token_of(&before))
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(rotated["previous"], old_kid);

    let after = login(&app, "default", "bob").await;
    let new_kid = jsonwebtoken::decode_header(token_of(&after))
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(rotated["kid"], new_kid);
    assert_ne!(new_kid, old_kid);
    assert!(
        app.verify_id_token(token_of(&before), "default").await.is_ok(),
        "the previous key is still published"
    );
    assert!(app.verify_id_token(token_of(&after), "default").await.is_ok());
    let jwks = fetch_json(app.http.get(app.url("/.well-known/jwks.json"))).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert!(key.get("d").is_none(), "no private part is published");
    }

    // A second rotation retires the first key: its tokens no longer verify.
    assert_eq!(rotate(&app, "sandbox-admin").await.status(), StatusCode::OK);
    assert!(app.verify_id_token(token_of(&before), "default").await.is_err());
    assert!(app.verify_id_token(token_of(&after), "default").await.is_ok());
}

#[tokio::test]
async fn instances_share_keys_and_see_a_rotation_within_a_second() {
    let mut first = settings(Backend::Redis);
    first.mount_simulator = false;
    first.wechat_api_base = crate::helpers::spawn_simulator();
    let prefix = first.key_prefix.clone();
    let a = spawn_app_with(first.clone()).await;
    let b = spawn_app_with(first).await;
    let kids = |app: &TestApp| {
        let request = app.http.get(app.url("/.well-known/jwks.json"));
        async move {
            let jwks = fetch_json(request).await;
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(kids(&a).await, kids(&b).await, "one key for all instances");
    let rotated: Value = rotate(&a, "sandbox-admin").await.json().await.unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    tokio::time::timeout(crate::helpers::PATIENCE, async {
        while !kids(&b).await.contains(&new_kid) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("instance B publishes A's new key");

    // The record in Redis is sealed: no key material in clear.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*signing-keys"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        raw.starts_with("s1."),
        "sealed under the master key: {}",
        &raw[..20.min(raw.len())]
    );
    assert!(
        !raw.contains("pkcs8") && !raw.contains("pairwise"),
        "nothing readable"
    );
}
