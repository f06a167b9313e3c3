//! What a website's page meets: CORS per connection, JSON-only bodies, no secret in a URL, the
//! hosted login page's checks and headers, and the widget's files.

use crate::helpers::{Backend, Socket, TestApp, fetch_json, settings, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SITE: &str = "https://shop.example";
const OTHER_SITE: &str = "https://evil.example";

async fn shop_app() -> TestApp {
    let mut settings = settings(Backend::Memory);
    for connection in &mut settings.connections {
        connection.allowed_origins = vec![SITE.into()];
        connection.callback_urls = vec![format!("{SITE}/callback")];
    }
    spawn_app_with(settings).await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only() {
    let app = shop_app().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/v1/login-sessions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, authorization")
            .send()
    };
    let allowed = preflight(SITE).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some(SITE));
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&allowed, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(header(&allowed, "access-control-max-age"), Some("600"));
    assert!(header(&allowed, "vary").unwrap().contains("Origin"));
    assert!(header(&allowed, "access-control-allow-credentials").is_none());

    let refused = preflight(OTHER_SITE).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(header(&refused, "access-control-allow-origin").is_none());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "origin_not_allowed");
}

#[tokio::test]
async fn sessions_start_only_from_allowed_origins_and_echo_only_them() {
    let app = shop_app().await;
    let create = |origin: Option<&str>| {
        let mut request = app.http.post(app.url("/v1/login-sessions")).json(&json!({}));
        if let Some(origin) = origin {
            request = request.header("origin", origin.to_owned());
        }
        request.send()
    };
    let from_site = create(Some(SITE)).await.unwrap();
    assert_eq!(from_site.status(), StatusCode::CREATED);
    assert_eq!(header(&from_site, "access-control-allow-origin"), Some(SITE));
    assert!(header(&from_site, "vary").unwrap().contains("Origin"));
    assert_eq!(
        header(&from_site, "cache-control"),
        Some("no-store"),
        "it carries the secret"
    );
    let session: Value = from_site.json().await.unwrap();

    let from_other = create(Some(OTHER_SITE)).await.unwrap();
    assert_eq!(from_other.status(), StatusCode::FORBIDDEN);
    assert!(header(&from_other, "access-control-allow-origin").is_none());
    assert_eq!(
        from_other.json::<Value>().await.unwrap()["error"],
        "origin_not_allowed"
    );

    // The relay's own pages (the hosted page, the sandbox) and non-browser clients may.
    assert_eq!(
        create(Some(&app.base)).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(create(None).await.unwrap().status(), StatusCode::CREATED);

    // Reading the session from the site echoes the site; from elsewhere, nothing is echoed.
    let read = |origin: &'static str| {
        app.http
            .get(app.url(&format!("/v1/login-sessions/{}", session["id"].as_str().unwrap())))
            .bearer_auth(session["secret"].as_str().unwrap())
            .header("origin", origin)
            .send()
    };
    let ok = read(SITE).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(SITE));
    let other = read(OTHER_SITE).await.unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert!(header(&other, "access-control-allow-origin").is_none());

    // Endpoints a page never calls carry no CORS headers.
    let redeem = app
        .http
        .post(app.url("/v1/tickets/redeem"))
        .header("origin", SITE)
        .bearer_auth("sandbox")
        .json(&json!({ "ticket": "x" }))
        .send()
        .await
        .unwrap();
    assert!(header(&redeem, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn json_endpoints_refuse_other_body_types() {
    let app = shop_app().await;
    let post = |content_type: &'static str, body: &'static str| {
        app.http
            .post(app.url("/v1/login-sessions"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // What a page can send without a preflight must not start a session.
    for (content_type, body) in [
        ("text/plain", r#"{"connection":"default"}"#),
        ("application/x-www-form-urlencoded", "connection=default"),
    ] {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "unsupported_media_type"
        );
    }
    assert_eq!(
        post("text/plain", "").await.unwrap().status(),
        StatusCode::CREATED,
        "no body is fine"
    );
    assert_eq!(
        post("application/json", r#"{"connection":"default"}"#)
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn no_secret_travels_in_a_url() {
    let app = shop_app().await;
    let pc = app.start().await;
    for key in ["code_url", "ws_url"] {
        let url = pc.body[key].as_str().unwrap();
        assert!(!url.contains(&pc.secret) && !url.contains('?'), "{key}: {url}");
    }
    // A socket that only names the secret in its URL is not served.
    let in_url = format!("{}?secret={}", pc.body["ws_url"].as_str().unwrap(), pc.secret);
    let mut socket = Socket::connect(in_url).await;
    socket.send_json(json!({ "type": "hello" })).await;
    assert_eq!(socket.closed_with().await.0, 1008);
    // The first message opens it.
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
}

/// A client may send its first frame in the same packet as the handshake: the bytes read
/// past the request head belong to the socket.
#[tokio::test]
async fn a_first_frame_sent_with_the_handshake_is_read() {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::Role};
    let app = shop_app().await;
    let pc = app.start().await;
    let address = app.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = json!({ "type": "auth", "secret": pc.secret }).to_string();
    let mut bytes = format!(
        "GET /v1/login-sessions/{}/ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        pc.id
    )
    .into_bytes();
    // One masked text frame (a zero mask leaves the payload as it is).
    bytes.extend([0x81, 0x80 | u8::try_from(auth.len()).unwrap(), 0, 0, 0, 0]);
    bytes.extend(auth.as_bytes());
    tcp.write_all(&bytes).await.unwrap();
    // The answer's head, byte by byte so nothing of the socket's frames is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next()).await;
    match first {
        Ok(Some(Ok(Message::Text(text)))) => {
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"], "pending");
        }
        other => panic!("expected the pending frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_hosted_page_sends_browsers_only_to_registered_callbacks() {
    let app = shop_app().await;
    let page = |query: &str| app.http.get(app.url(&format!("/login?{query}"))).send();
    let callback = qrlogin_relay::markup::url_encode(&format!("{SITE}/callback"));
    let good = page(&format!("connection=default&redirect_uri={callback}&state=s1"))
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    let csp = header(&good, "content-security-policy").unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains(&format!("frame-ancestors 'self' {SITE}")), "{csp}");
    assert!(csp.contains(&format!("form-action {SITE}")), "{csp}");
    assert_eq!(header(&good, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&good, "cache-control"), Some("no-store"));
    let html = good.text().await.unwrap();
    assert!(
        html.contains(r#"<script src="/qrlogin.js" data-hosted-page>"#),
        "{html}"
    );
    assert!(
        html.contains(r#""redirect_uri":"https://shop.example/callback""#),
        "{html}"
    );

    for query in [
        format!(
            "connection=default&redirect_uri={}",
            qrlogin_relay::markup::url_encode(&format!("{SITE}/callback/x"))
        ),
        format!(
            "connection=default&redirect_uri={}",
            qrlogin_relay::markup::url_encode(&format!("{OTHER_SITE}/callback"))
        ),
        format!("connection=default&redirect_uri={callback}%3Fnext%3D1"),
        "connection=default".to_owned(),
        format!("connection=nope&redirect_uri={callback}"),
        format!("connection=default&redirect_uri={callback}&mode=frame"),
    ] {
        let refused = page(&query).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(refused.headers().get("location").is_none());
        let html = refused.text().await.unwrap();
        assert!(
            html.contains("cannot be opened") || html.contains("无法打开"),
            "{html}"
        );
    }
    // A value that tries to close the config element stays inside it.
    let sneaky = page(&format!(
        "connection=default&redirect_uri={callback}&state=%3C%2Fscript%3E%3Cscript%3Ealert(1)"
    ))
    .await
    .unwrap();
    let html = sneaky.text().await.unwrap();
    assert!(!html.contains("</script><script>alert"), "{html}");

    let unasked = page(&format!("connection=default&redirect_uri={callback}"))
        .await
        .unwrap();
    assert!(unasked.text().await.unwrap().contains(r#"<html lang="en">"#));
    let asked = app
        .http
        .get(app.url(&format!("/login?connection=default&redirect_uri={callback}")))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(asked.text().await.unwrap().contains(r#"<html lang="zh-CN">"#));
}

#[tokio::test]
async fn the_widget_files_and_connection_details_are_served() {
    let app = shop_app().await;
    for (path, content_type) in [("/qrlogin.js", "text/javascript"), ("/qrlogin.css", "text/css")] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            header(&response, "content-type")
                .unwrap()
                .starts_with(content_type)
        );
    }
    let details = fetch_json(
        app.http
            .get(app.url("/v1/connections/default"))
            .header("origin", SITE),
    )
    .await;
    assert_eq!(details["display_name"], "Sandbox Mini Program");
    assert_eq!(details["kind"], "mini_program");
    assert_eq!(details["companion"]["identifier"], "website");
    let logo = app
        .http
        .get(details["logo_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&logo, "content-type"), Some("image/png"));
    let png = image::load_from_memory(&logo.bytes().await.unwrap()).unwrap();
    assert_eq!((png.width(), png.height()), (128, 128));
}
