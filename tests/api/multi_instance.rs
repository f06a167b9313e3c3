//! Two relay instances sharing one Redis behave as one service.

use crate::helpers::{Backend, settings, spawn_app_with, spawn_simulator};
use reqwest::StatusCode;

#[tokio::test]
async fn a_socket_on_one_instance_is_pushed_a_confirmation_made_on_another() {
    let simulator = spawn_simulator();
    let shared = settings(Backend::Redis);
    let instance = || {
        let mut s = shared.clone();
        s.mount_simulator = false;
        s.wechat_api_base = simulator.clone();
        s
    };
    let a = spawn_app_with(instance()).await;
    let b = spawn_app_with(instance()).await;

    let pc = a.start().await;
    let mut socket = a.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");

    // The phone's calls land on instance B.
    let scan = b.scan(&pc, "nina").await;
    assert_eq!(socket.next_json().await["status"], "scanned");
    let phone_code = b.phone_code("nina", "13800138000").await;
    assert_eq!(b.confirm(&scan, &phone_code).await.0, StatusCode::OK);
    let confirmed = socket.next_json().await;
    assert_eq!(confirmed["status"], "confirmed");

    // The code image and the ticket are shared too.
    let code = b
        .http
        .get(b.url(&format!("/v1/login-sessions/{}/code", pc.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code.status(),
        StatusCode::GONE,
        "a confirmed session's code is not served"
    );
    let (status, _) = b.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a.get_session(&pc, "").await.1["status"], "redeemed");

    // One token fetch served both instances.
    assert_eq!(a.sim_calls("stable_token").await, 1);
}

#[tokio::test]
async fn a_dropped_event_subscription_is_reopened_and_nothing_is_missed() {
    let app = spawn_app_with(settings(Backend::Redis)).await;
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");

    // Redis drops every subscriber connection (a failover, a restart, a network cut).
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);

    app.scan(&pc, "oscar").await;
    assert_eq!(
        socket.next_json().await["status"],
        "scanned",
        "pushed through the new subscription or the resync"
    );
}
