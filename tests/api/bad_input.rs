//! Every mistake a client can make gets a 4xx with the JSON error body, and changes nothing.

use crate::both_stores;
use crate::helpers::{Backend, TestApp, settings, spawn_app, spawn_app_with};
use qrlogin_relay::client_ip::TrustedProxies;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

both_stores!(
    malformed_bodies_and_unknown_routes_get_json_errors,
    sessions_are_guarded_by_the_browser_secret,
    only_the_scanner_confirms_and_only_after_scanning,
    wechat_codes_work_once,
    tickets_work_once_for_their_own_backend,
    forwarded_scans_are_refused,
);

fn assert_error(got: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

async fn raw(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

async fn malformed_bodies_and_unknown_routes_get_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let scan = app.url("/v1/mp/scan");
    let bad_json = app
        .http
        .post(&scan)
        .header("content-type", "application/json")
        .body("{nope");
    assert_error(raw(bad_json).await, StatusCode::BAD_REQUEST, "invalid_json");
    let missing_field = app.http.post(&scan).json(&json!({ "scene": "abc" }));
    assert_error(raw(missing_field).await, StatusCode::BAD_REQUEST, "invalid_json");
    let wrong_type = app
        .http
        .post(&scan)
        .header("content-type", "text/plain")
        .body("{}");
    assert_error(
        raw(wrong_type).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = json!({ "scene": "a".repeat(100_000), "login_code": "x" });
    assert_error(
        raw(app.http.post(&scan).json(&huge)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    let huge_create = app
        .http
        .post(app.url("/v1/login-sessions"))
        .body("x".repeat(100_000));
    assert_eq!(raw(huge_create).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(
        raw(app.http.get(app.url("/v2/nothing"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.create_session(json!({ "connection": "nobody" })).await,
        StatusCode::NOT_FOUND,
        "unknown_connection",
    );
    assert_error(
        app.create_session(json!({ "surprise": 1 })).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    let bad_wait = app
        .http
        .get(app.url("/v1/login-sessions/abc?wait=soon"))
        .bearer_auth("x");
    assert_error(raw(bad_wait).await, StatusCode::BAD_REQUEST, "invalid_query");
}

async fn sessions_are_guarded_by_the_browser_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let url = app.url(&format!("/v1/login-sessions/{}", pc.id));
    assert_error(
        raw(app.http.get(&url)).await,
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
    );
    assert_error(
        raw(app.http.get(&url).bearer_auth("guess")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_secret",
    );
    // An unknown session answers like a wrong secret: no telling which ids exist.
    let unknown = app.url("/v1/login-sessions/AAAAAAAAAAAAAAAAAAAAAA");
    assert_error(
        raw(app.http.get(&unknown).bearer_auth(&pc.secret)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_secret",
    );
    // The scheme is case-insensitive (RFC 7235).
    let lower = app
        .http
        .get(&url)
        .header("authorization", format!("bearer {}", pc.secret));
    assert_eq!(raw(lower).await.0, StatusCode::OK);
    let malformed = app.url("/v1/login-sessions/not-an-id!");
    assert_error(
        raw(app.http.get(&malformed).bearer_auth(&pc.secret)).await,
        StatusCode::NOT_FOUND,
        "session_not_found",
    );
    let bad_status = app.http.get(format!("{url}?status=done")).bearer_auth(&pc.secret);
    assert_error(raw(bad_status).await, StatusCode::BAD_REQUEST, "invalid_status");

    let mut guessed = app.unauthenticated_socket(&pc, None).await;
    guessed
        .send_json(json!({ "type": "auth", "secret": "guess" }))
        .await;
    assert_eq!(guessed.closed_with().await, (1008, "invalid_secret".into()));
    let mut rambling = app.unauthenticated_socket(&pc, None).await;
    rambling.send_json(json!({ "hello": "there" })).await;
    assert_eq!(rambling.closed_with().await, (1008, "auth_required".into()));
    // A socket to an unknown session is refused exactly like a wrong secret.
    let nobody = crate::helpers::PcSession {
        id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        secret: pc.secret.clone(),
        body: Value::Null,
    };
    let mut unknown = app.unauthenticated_socket(&nobody, None).await;
    unknown
        .send_json(json!({ "type": "auth", "secret": pc.secret }))
        .await;
    assert_eq!(unknown.closed_with().await, (1008, "invalid_secret".into()));
    // Nothing changed.
    assert_eq!(app.get_session(&pc, "").await.1["status"], "pending");
}

async fn only_the_scanner_confirms_and_only_after_scanning(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let phone = app.phone_code("frank", "13800138000").await;
    let early = json!({ "scene": pc.id, "scan_token": "x", "phone_code": phone });
    assert_error(
        app.post_json("/v1/mp/confirm", &early).await,
        StatusCode::CONFLICT,
        "not_scanned",
    );

    let scan = app.scan(&pc, "frank").await;
    assert_error(
        app.scan_as(&pc.id, "mallory").await,
        StatusCode::CONFLICT,
        "session_taken",
    );
    let rescan = app.scan(&pc, "frank").await;
    assert_ne!(
        rescan.scan_token, scan.scan_token,
        "a rescan by the same person gets a fresh token"
    );

    let forged = json!({ "scene": pc.id, "scan_token": scan.scan_token, "phone_code": phone });
    assert_error(
        app.post_json("/v1/mp/confirm", &forged).await,
        StatusCode::FORBIDDEN,
        "invalid_scan_token",
    );
    // Another person's phone code, with the real scan token: WeChat refuses the openid pairing.
    let mallory_phone = app.phone_code("mallory", "13900139000").await;
    assert_error(
        app.confirm(&rescan, &mallory_phone).await,
        StatusCode::BAD_REQUEST,
        "invalid_code",
    );
    assert_eq!(
        app.get_session(&pc, "").await.1["status"],
        "scanned",
        "nothing changed"
    );

    let (status, _) = app.confirm(&rescan, &phone).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        app.scan_as(&pc.id, "frank").await,
        StatusCode::CONFLICT,
        "already_confirmed",
    );
}

async fn wechat_codes_work_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.start().await;
    let second = app.start().await;
    let login_code = app.login_code("grace").await;
    let scan = |scene: &str| json!({ "scene": scene, "login_code": login_code, "launch_scene": 1047 });
    let (status, body) = app.post_json("/v1/mp/scan", &scan(&first.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        app.post_json("/v1/mp/scan", &scan(&second.id)).await,
        StatusCode::BAD_REQUEST,
        "invalid_code",
    );
    assert_error(
        app.post_json(
            "/v1/mp/scan",
            &json!({ "scene": second.id, "login_code": "made-up", "launch_scene": 1047 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_code",
    );
    assert_eq!(
        app.get_session(&second, "").await.1["status"],
        "pending",
        "a refused scan changes nothing"
    );

    let scan_token = body["scan_token"].as_str().unwrap();
    let phone = app.phone_code("grace", "13800138000").await;
    let confirm = json!({ "scene": first.id, "scan_token": scan_token, "phone_code": phone });
    assert_eq!(app.post_json("/v1/mp/confirm", &confirm).await.0, StatusCode::OK);

    let other = app.scan(&second, "grace").await;
    let (status, body) = app.confirm(&other, &phone).await;
    assert_error((status, body), StatusCode::BAD_REQUEST, "invalid_code");
}

async fn tickets_work_once_for_their_own_backend(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    app.log_in(&pc, "heidi", "13800138000").await;
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_error(
        app.redeem("garbage", "sandbox").await,
        StatusCode::BAD_REQUEST,
        "invalid_ticket",
    );
    let forged = format!("{}.{}", pc.id, "A".repeat(32));
    assert_error(
        app.redeem(&forged, "sandbox").await,
        StatusCode::BAD_REQUEST,
        "invalid_ticket",
    );
    assert_error(
        app.redeem(&ticket, "wrong-backend").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let no_auth = app
        .http
        .post(app.url("/v1/tickets/redeem"))
        .json(&json!({ "ticket": ticket }));
    assert_error(
        raw(no_auth).await,
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
    );

    assert_eq!(
        app.redeem(&ticket, "sandbox").await.0,
        StatusCode::OK,
        "failed attempts did not burn the ticket"
    );
    assert_error(
        app.redeem(&ticket, "sandbox").await,
        StatusCode::CONFLICT,
        "already_redeemed",
    );
}

async fn forwarded_scans_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let login_code = app.login_code("ivan").await;
    let body = json!({ "scene": pc.id, "login_code": login_code, "launch_scene": 1049 });
    assert_error(
        app.post_json("/v1/mp/scan", &body).await,
        StatusCode::FORBIDDEN,
        "forwarded_scan_refused",
    );
    // Fail closed: no launch scene (or 0) says nothing about how the code was opened.
    for missing in [
        json!({ "scene": pc.id, "login_code": login_code }),
        json!({ "scene": pc.id, "login_code": login_code, "launch_scene": 0 }),
    ] {
        assert_error(
            app.post_json("/v1/mp/scan", &missing).await,
            StatusCode::BAD_REQUEST,
            "launch_scene_required",
        );
    }
    let body = json!({ "scene": pc.id, "login_code": login_code, "launch_scene": 1047 });
    assert_eq!(
        app.post_json("/v1/mp/scan", &body).await.0,
        StatusCode::OK,
        "the refused scan did not spend the code"
    );
}

#[tokio::test]
async fn a_connection_may_opt_out_of_requiring_the_launch_scene() {
    let mut settings = settings(Backend::Memory);
    settings.connections[0].allow_missing_launch_scene = true;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let login_code = app.login_code("ivy").await;
    let (status, body) = app
        .post_json(
            "/v1/mp/scan",
            &json!({ "scene": pc.id, "login_code": login_code }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let forwarded =
        json!({ "scene": pc.id, "login_code": app.login_code("ivy").await, "launch_scene": 1049 });
    assert_error(
        app.post_json("/v1/mp/scan", &forwarded).await,
        StatusCode::FORBIDDEN,
        "forwarded_scan_refused",
    );
}

#[tokio::test]
async fn websockets_from_other_origins_are_refused() {
    let mut settings = settings(Backend::Memory);
    settings.connections[0].allowed_origins = vec!["https://shop.example".into()];
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let url = format!(
        "{}/v1/login-sessions/{}/ws",
        app.base.replacen("http", "ws", 1),
        pc.id,
    );
    for (origin, allowed) in [
        ("https://evil.example", false),
        ("https://shop.example", true),
        (app.base.as_str(), true),
    ] {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("Origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => assert!(allowed, "{origin} was let in"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(!allowed, "{origin} was refused");
                assert_eq!(response.status(), 403);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"], "origin_not_allowed");
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

both_stores!(floods_are_rate_limited);

async fn floods_are_rate_limited(backend: Backend) {
    let mut settings = settings(backend);
    settings.sessions_per_ip_per_minute = 3;
    let app = spawn_app_with(settings).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let response = app.http.post(app.url("/v1/login-sessions")).send().await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            limited = Some((retry, response.json::<Value>().await.unwrap()));
        }
    }
    // Six starts span at most two one-minute windows: the first three always pass, and some
    // window sees a fourth.
    assert!(
        statuses[..3].iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    let (retry, body) = limited.expect("a flood is refused");
    assert!((1..=60).contains(&retry));
    assert_eq!(body["error"], "rate_limited");

    // Mini-program calls are limited per WeChat user (five calls span at most two windows,
    // so one window sees a third).
    let mut settings = crate::helpers::settings(backend);
    settings.calls_per_openid_per_minute = 2;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let mut scans = Vec::new();
    for _ in 0..5 {
        scans.push(app.scan_as(&pc.id, "zed").await.0);
    }
    assert!(scans[..2].iter().all(|s| *s == StatusCode::OK), "{scans:?}");
    assert!(scans.contains(&StatusCode::TOO_MANY_REQUESTS), "{scans:?}");
}

#[tokio::test]
async fn the_client_ip_comes_from_trusted_proxies_only() {
    for (trusted, expected) in [
        (None, "127.0.0.1"),
        (Some("127.0.0.1"), "203.0.113.5"),
        (Some("127.0.0.0/8"), "203.0.113.5"),
    ] {
        let mut settings = settings(Backend::Memory);
        if let Some(trusted) = trusted {
            settings.trusted_proxies = TrustedProxies::parse([trusted]).unwrap();
        }
        let app = spawn_app_with(settings).await;
        let ip = client_ip_seen(&app, &["198.51.100.1, 203.0.113.5"]).await;
        assert_eq!(ip, expected, "trusted: {trusted:?}");
    }
}

/// What the confirm screen shows for a session started with these `X-Forwarded-For` lines.
async fn client_ip_seen(app: &TestApp, lines: &[&str]) -> String {
    let mut request = app.http.post(app.url("/v1/login-sessions"));
    for line in lines {
        request = request.header("X-Forwarded-For", *line);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    let (_, scan) = app.scan_as(body["id"].as_str().unwrap(), "yara").await;
    scan["session"]["client"]["ip"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_cannot_choose_its_ip_behind_a_proxy_that_adds_a_line() {
    // A dual-stack listener: IPv4 peers arrive as ::ffff:127.0.0.1, and must still be trusted.
    let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
        return; // no IPv6 on this machine: the unit tests cover mapped addresses
    };
    let port = listener.local_addr().unwrap().port();
    let mut settings = settings(Backend::Memory);
    settings.trusted_proxies = TrustedProxies::parse(["127.0.0.1"]).unwrap();
    settings.public_base_url = Some(format!("http://127.0.0.1:{port}"));
    let app = qrlogin_relay::startup::Application::build(settings, listener)
        .await
        .unwrap();
    tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        wechat: format!("http://127.0.0.1:{port}/sandbox/wechat"),
        http: reqwest::Client::new(),
    };
    // HAProxy's `option forwardfor` adds its own line after the client's.
    let ip = client_ip_seen(&app, &["6.6.6.6", "203.0.113.77:51234"]).await;
    assert_eq!(ip, "203.0.113.77");
}

#[tokio::test]
async fn responses_with_secrets_tickets_or_identities_are_never_cached() {
    let app = spawn_app(Backend::Memory).await;
    let no_store = |response: &reqwest::Response| {
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            == Some("no-store")
    };
    let pc = app.start().await;
    let scan = app
        .http
        .post(app.url("/v1/mp/scan"))
        .json(&json!({ "scene": pc.id, "login_code": app.login_code("wes").await, "launch_scene": 1047 }))
        .send()
        .await
        .unwrap();
    assert!(no_store(&scan), "the scan answer carries the scan token");
    let scan: Value = scan.json().await.unwrap();
    let phone_code = app.phone_code("wes", "13800138000").await;
    let confirm = app
        .http
        .post(app.url("/v1/mp/confirm"))
        .json(&json!({ "scene": pc.id, "scan_token": scan["scan_token"], "phone_code": phone_code }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let (_, view) = app.get_session(&pc, "").await;
    let redeem = app
        .http
        .post(app.url("/v1/tickets/redeem"))
        .bearer_auth("sandbox")
        .json(&json!({ "ticket": view["ticket"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(redeem.status(), StatusCode::OK);
    assert!(no_store(&redeem), "the identity and ID token");
    let issued = app
        .http
        .post(app.url("/v1/admin/connections/default/credentials"))
        .bearer_auth("sandbox-admin")
        .send()
        .await
        .unwrap();
    assert!(no_store(&issued), "a new backend credential");
    // Codes stay cacheable; pages that are only HTML say what they may load.
    let waiting = app.start().await;
    let code = app
        .http
        .get(app.url(&format!("/v1/login-sessions/{}/code", waiting.id)))
        .send()
        .await
        .unwrap();
    assert!(
        code.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age=")
    );
    let page = app
        .http
        .get(app.url(&format!("/q/{}", pc.id)))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_phone_code_of_another_mini_program_is_the_clients_mistake() {
    let app = spawn_app(Backend::Memory).await;
    let pc = app.start().await;
    let scan = app.scan(&pc, "xena").await;
    let foreign = crate::helpers::fetch_json(
        app.http
            .post(format!("{}/_sim/phone-code", app.wechat))
            .json(&json!({ "user": "xena", "appid": "wx00000000000000f1" })),
    )
    .await;
    let (status, body) = app.confirm(&scan, foreign["code"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_code"))
    );
    // The scan stands: a code of the right app still confirms.
    let phone_code = app.phone_code("xena", "13800138000").await;
    assert_eq!(app.confirm(&scan, &phone_code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn head_is_answered_where_get_is_and_every_oversized_body_gets_json() {
    let app = spawn_app(Backend::Memory).await;
    for path in ["/healthz", "/qrlogin.js", "/.well-known/openid-configuration"] {
        let get = app.http.get(app.url(path)).send().await.unwrap();
        let head = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{path}: no body");
    }
    let big = vec![b'a'; 200_000];
    for (path, content_type) in [
        ("/v1/login-sessions", "application/json"),
        ("/oauth2/token", "application/x-www-form-urlencoded"),
        ("/v1/admin/connections", "application/json"),
    ] {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth("sandbox-admin")
            .header("content-type", content_type)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "body_too_large", "{path}");
    }
}

both_stores!(a_junk_code_scan_flood_stops_before_wechat);

/// 40 scans with junk login codes from one IP: past the per-IP limit they are refused before
/// WeChat is asked, so the AppID's quota is not spent for everyone else.
async fn a_junk_code_scan_flood_stops_before_wechat(backend: Backend) {
    let mut settings = settings(backend);
    settings.mini_program_calls_per_ip_per_minute = 5;
    settings.scans_per_session_per_minute = 1000;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let (status, _) = app
            .post_json(
                "/v1/mp/scan",
                &json!({ "scene": pc.id, "login_code": format!("junk-{i}"), "launch_scene": 1047 }),
            )
            .await;
        statuses.push(status);
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // Forty calls span at most two one-minute windows of five.
    assert!(limited >= 30, "{statuses:?}");
    assert!(
        app.sim_calls("jscode2session").await <= 10,
        "WeChat was asked at most twice the limit"
    );
    assert!(app.metric("qrlogin_rate_limited_total").await >= 30);
    // One session takes only so many scan attempts, whoever makes them.
    let mut settings = crate::helpers::settings(backend);
    settings.scans_per_session_per_minute = 3;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let mut statuses = Vec::new();
    for user in ["a", "b", "c", "d", "e", "f", "g"] {
        statuses.push(app.scan_as(&pc.id, user).await.0);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test]
async fn sockets_and_long_polls_are_capped_and_freed() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut settings = settings(Backend::Memory);
    settings.websockets_per_session = 2;
    settings.long_polls_per_ip = 1;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let url = format!(
        "{}/v1/login-sessions/{}/ws",
        app.base.replacen("http", "ws", 1),
        pc.id
    );
    let mut first = app.socket(&pc).await;
    let _second = app.socket(&pc).await;
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("a third socket on one session: {:?}", other.map(|_| ())),
    }
    // Closing one frees its place.
    first.close().await;
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tokio_tungstenite::connect_async(url.as_str()).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the closed socket's place is freed");

    // One long-poll per IP here: while one waits, a second is refused.
    let polled = app.start().await;
    let waiting = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/login-sessions/{}?wait=3", polled.id));
        let secret = polled.secret.clone();
        tokio::spawn(async move { http.get(url).bearer_auth(secret).send().await.unwrap().status() })
    };
    app.until_waiting(2).await; // the sockets' session, and now the polled one
    let (status, body) = app.get_session(&polled, "?wait=3").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}
