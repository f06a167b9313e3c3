//! Floods that used to exhaust the relay: bodies that never arrive, and more waiting sockets
//! than the instance can hold. Each hits its cap with a JSON answer while `/healthz` answers.

use crate::helpers::{Backend, PcSession, settings, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `count` connections to the relay that each send `bytes` and then nothing.
async fn stalled(relay: &str, bytes: &[u8], count: usize) -> Vec<tokio::net::TcpStream> {
    let addr = relay.trim_start_matches("http://");
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        streams.push(stream);
    }
    streams
}

async fn answers_health_checks(app: &crate::helpers::TestApp) {
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "health checks answer during the flood"
    );
}

/// What the relay sent on `stream` before closing it.
async fn last_words(mut stream: tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(crate::helpers::PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the stalled request was never cut off")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bodies_that_never_arrive_are_cut_off_while_health_checks_answer() {
    let mut settings = settings(Backend::Memory);
    settings.body_read_timeout_secs = 1;
    let app = spawn_app_with(settings).await;
    let started = tokio::time::Instant::now();
    let head = "POST /v1/login-sessions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{";
    let streams = stalled(&app.base, head.as_bytes(), 200).await;
    answers_health_checks(&app).await;
    for stream in streams {
        let answer = last_words(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""error":"body_timeout""#), "{answer}");
    }
    eprintln!(
        "slow-body flood: 200 stalled bodies cut off within {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn request_heads_that_never_finish_are_dropped_while_health_checks_answer() {
    let app = spawn_app_with(settings(Backend::Memory)).await;
    let started = tokio::time::Instant::now();
    let streams = stalled(&app.base, b"POST /v1/login-sessions HTTP/1.1\r\nHost: re", 200).await;
    answers_health_checks(&app).await;
    for stream in streams {
        let answer = last_words(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    eprintln!(
        "slow-head flood: 200 stalled heads dropped within {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_the_socket_cap_browsers_are_told_the_server_is_busy_while_health_checks_answer() {
    let mut settings = settings(Backend::Memory);
    settings.max_open_sockets = Some(20);
    let app = spawn_app_with(settings).await;
    let mut sessions: Vec<PcSession> = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let pc = app.start().await;
        let mut socket = app.socket(&pc).await;
        assert_eq!(socket.next_json().await["status"], "pending");
        sockets.push(socket);
        sessions.push(pc);
    }
    let extra = app.start().await;
    let url = format!(
        "{}/v1/login-sessions/{}/ws",
        app.base.replacen("http", "ws", 1),
        extra.id
    );
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], "server_busy");
        }
        other => panic!("a socket past the cap was not refused: {:?}", other.map(|_| ())),
    }
    let (status, body) = app.get_session(&extra, "?wait=5&status=pending").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("server_busy"))
    );
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(app.metric("qrlogin_open_websockets").await, 20);
    assert_eq!(
        app.metric(r#"qrlogin_limits_hit_total{limit="max_open_sockets"}"#)
            .await,
        2,
        "the socket and the long-poll, counted under the cap's name"
    );

    // One closes: a new browser gets its place.
    sockets.pop().unwrap().close().await;
    let http = app.http.clone();
    let metrics = app.url("/metrics");
    crate::processes::until("the closed socket is released", || {
        let request = http.get(&metrics).send();
        async move {
            let text = request.await.unwrap().text().await.unwrap();
            text.contains("qrlogin_open_websockets 19")
        }
    })
    .await;
    let mut socket = app.socket(&extra).await;
    assert_eq!(socket.next_json().await["status"], "pending");
}
