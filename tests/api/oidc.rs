//! The OIDC face over real HTTP, for what a certified client library never does on purpose:
//! malformed token requests, expired and misused codes, foreign browsers, scopes. The hosted
//! page's part (start a session, wait for the ticket, go to `/oauth2/finish`) is done here by
//! hand; `tests/browser/oidc.test.mjs` runs the real page with openid-client.

use crate::helpers::{Backend, TestApp, settings, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use std::collections::HashMap;

const CALLBACK: &str = "http://localhost:8000/callback.html";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The query parameters of a redirect's `Location`.
fn location_params(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

/// `GET /oauth2/authorize` with the usual parameters plus `extra`.
async fn authorize(app: &TestApp, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut query: Vec<(&str, &str)> = vec![
        ("client_id", "default"),
        ("redirect_uri", CALLBACK),
        ("response_type", "code"),
        ("scope", "openid phone"),
        ("state", "client-state"),
        ("nonce", "client-nonce"),
    ];
    for (name, value) in extra {
        query.retain(|(n, _)| n != name);
        query.push((name, value));
    }
    no_redirects()
        .get(app.url("/oauth2/authorize"))
        .query(&query)
        .send()
        .await
        .unwrap()
}

/// Authorize's answer followed to the hosted page: the binding cookie and the page's settings.
async fn hosted_page(app: &TestApp, authorized: reqwest::Response) -> (String, Value) {
    assert_eq!(authorized.status(), StatusCode::FOUND);
    let cookie = authorized.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let location = authorized.headers()[LOCATION].to_str().unwrap();
    assert!(location.starts_with("/login?"), "{location}");
    let html = app
        .http
        .get(app.url(location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config = html
        .split("id=\"qrlogin-config\">")
        .nth(1)
        .unwrap()
        .split("</script>")
        .next()
        .unwrap();
    (cookie, serde_json::from_str(config).unwrap())
}

/// The browser's whole trip: authorize, the hosted page's login (done by hand), finish.
/// Answers the redirect back to the client.
async fn sign_in(app: &TestApp, extra: &[(&str, &str)], user: &str) -> reqwest::Response {
    let (cookie, config) = hosted_page(app, authorize(app, extra).await).await;
    let request_id = config["state"].as_str().unwrap().to_owned();
    assert_eq!(config["redirect_uri"], app.url("/oauth2/finish"));

    let session = app.start().await;
    app.log_in(&session, user, "13800138000").await;
    let (_, view) = app.get_session(&session, "").await;
    let ticket = view["ticket"].as_str().unwrap();
    no_redirects()
        .get(app.url("/oauth2/finish"))
        .query(&[("ticket", ticket), ("state", &request_id)])
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

async fn code_for(app: &TestApp, user: &str) -> String {
    let back = sign_in(app, &[], user).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    let params = location_params(&back);
    assert_eq!(params["state"], "client-state");
    assert_eq!(params["iss"], app.base);
    params["code"].clone()
}

async fn token(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app
        .http
        .post(app.url("/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

fn exchange(code: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("client_id", "default"),
        ("client_secret", "sandbox"),
    ]
}

#[tokio::test]
async fn a_code_works_once_for_its_client_and_redirect_uri_only() {
    let app = spawn_app(Backend::Memory).await;
    let code = code_for(&app, "oidc-once").await;
    let mut wrong_uri = exchange(&code);
    wrong_uri[2].1 = "http://localhost:8000/other.html";
    let (status, _, body) = token(&app, &wrong_uri).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The failed attempt spent it: codes are single-use whatever happens.
    let (status, _, body) = token(&app, &exchange(&code)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let code = code_for(&app, "oidc-once").await;
    let (status, headers, body) = token(&app, &exchange(&code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    let claims = app
        .verify_id_token(body["id_token"].as_str().unwrap(), "default")
        .await
        .unwrap();
    assert_eq!(claims["nonce"], "client-nonce");
    assert!(claims["at_hash"].is_string());
    let (status, _, body) = token(&app, &exchange(&code)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let mut settings = settings(Backend::Memory);
    settings.ticket_ttl_secs = 1;
    let app = spawn_app_with(settings).await;
    let code = code_for(&app, "oidc-late").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // past the code's lifetime
    let (status, _, body) = token(&app, &exchange(&code)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn token_requests_get_rfc_6749_errors() {
    let app = spawn_app(Backend::Memory).await;
    let (status, body) = app
        .post_json("/oauth2/token", &json!({ "grant_type": "authorization_code" }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, _, body) = token(&app, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, _, body) = token(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("grant_type", "authorization_code"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // No client, an unknown one, a wrong secret, a confidential client posing as public: 401.
    for form in [
        vec![("grant_type", "authorization_code"), ("code", "x")],
        vec![
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "nobody"),
            ("client_secret", "sandbox"),
        ],
        vec![
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "default"),
            ("client_secret", "wrong"),
        ],
        vec![
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "default"),
        ],
    ] {
        let (status, headers, body) = token(&app, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{form:?}"
        );
        assert!(headers[WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic"));
    }
    // Basic and a posted secret at once is two methods.
    let response = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth("default", Some("sandbox"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_secret", "sandbox"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn authorization_errors_never_leave_for_an_unknown_place() {
    let app = spawn_app(Backend::Memory).await;
    for extra in [
        [("client_id", "nobody")],
        [("redirect_uri", "https://evil.example/cb")],
    ] {
        let response = authorize(&app, &extra).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
        assert!(response.text().await.unwrap().contains("<!doctype html>"));
    }
    // Once the client and its redirect URI are known, errors go back to it.
    for (extra, error) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "phone")], "invalid_scope"),
        (
            vec![("code_challenge", "abc"), ("code_challenge_method", "plain")],
            "invalid_request",
        ),
        (vec![("response_mode", "fragment")], "invalid_request"),
    ] {
        let response = authorize(&app, &extra).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{extra:?}");
        let params = location_params(&response);
        assert_eq!(params["error"], error);
        assert_eq!(params["state"], "client-state");
    }
    // prompt, max_age, login_hint and unknown scopes are accepted.
    let response = authorize(
        &app,
        &[
            ("prompt", "login"),
            ("max_age", "0"),
            ("login_hint", "x"),
            ("scope", "openid email"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(
        response.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login?")
    );
}

#[tokio::test]
async fn the_finish_step_belongs_to_the_browser_that_asked() {
    let app = spawn_app(Backend::Memory).await;
    let (_cookie, config) = hosted_page(&app, authorize(&app, &[]).await).await;
    let request_id = config["state"].as_str().unwrap().to_owned();
    let response = no_redirects()
        .get(app.url("/oauth2/finish"))
        .query(&[("ticket", "whatever"), ("state", request_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());
}

#[tokio::test]
async fn userinfo_answers_by_scope_and_only_with_a_valid_token() {
    let app = spawn_app(Backend::Memory).await;
    let response = app
        .http
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );

    let back = sign_in(&app, &[("scope", "openid")], "oidc-scopes").await;
    let code = location_params(&back)["code"].clone();
    let (_, _, tokens) = token(&app, &exchange(&code)).await;
    let access = tokens["access_token"].as_str().unwrap();
    let info =
        crate::helpers::fetch_json(app.http.post(app.url("/oauth2/userinfo")).bearer_auth(access)).await;
    assert!(info["sub"].is_string() && info["openid"].is_string(), "{info}");
    assert!(
        info.get("phone_number").is_none(),
        "no phone scope, no phone: {info}"
    );
}

#[tokio::test]
async fn a_public_client_in_the_browser_may_read_token_and_userinfo_answers() {
    let mut settings = settings(Backend::Memory);
    settings.connections[0].public_client = true;
    let app = spawn_app_with(settings).await;
    let site = "http://localhost:8000"; // an allowed origin of the sandbox connections
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/oauth2/userinfo"))
        .header("origin", site)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], site);

    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let back = sign_in(
        &app,
        &[
            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            ("code_challenge_method", "S256"),
        ],
        "oidc-spa",
    )
    .await;
    let code = location_params(&back)["code"].clone();
    let response = app
        .http
        .post(app.url("/oauth2/token"))
        .header("origin", site)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", "default"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], site);
    // A page of an origin the client does not allow gets no CORS headers.
    let stranger = app
        .http
        .post(app.url("/oauth2/token"))
        .header("origin", "https://evil.example")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "default"),
        ])
        .send()
        .await
        .unwrap();
    assert!(stranger.headers().get("access-control-allow-origin").is_none());
}
