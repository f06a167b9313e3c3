//! What an operator sees: Prometheus metrics by connection and outcome, push and WeChat
//! latency, and a JSON audit trail with identifiers masked — read off a real relay process.

use crate::helpers::{TestApp, spawn_simulator};
use crate::processes::{RelayProcess, free_port, serve_config, temp_dir};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn a_login_is_counted_timed_and_audited_with_identifiers_masked() {
    let simulator = spawn_simulator();
    let dir = temp_dir("observability");
    let config = serve_config(
        &dir,
        &format!("wechat_api_base = \"{simulator}\"\nadmin_token = \"observability-admin-token\""),
        "identifier = \"shop\"\ndisplay_name = \"Observed shop\"\npool_size = 0",
    );
    let port = free_port();
    let relay = RelayProcess::start(&config, &dir, "observed", port).await;
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        wechat: simulator,
        http: reqwest::Client::new(),
    };
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    app.log_in(&pc, "vera", "13912345678").await;
    // Each frame after the first is one push timed; `scanned` may be folded into `confirmed`
    // when both land before the socket wakes (a browser is sent the latest state).
    let mut pushed = 0;
    let confirmed = loop {
        let frame = socket.next_json().await;
        pushed += 1;
        if frame["status"] == "confirmed" {
            break frame;
        }
    };
    let ticket = confirmed["ticket"].as_str().unwrap().to_owned();
    let (status, redeemed) = app.redeem(&ticket, "sandbox").await;
    assert_eq!(status, StatusCode::OK);
    let openid = redeemed["user"]["openid"].as_str().unwrap().to_owned();
    let admin = app
        .http
        .post(app.url("/v1/admin/signing-keys/rotate"))
        .bearer_auth("observability-admin-token")
        .send()
        .await
        .unwrap();
    assert!(admin.status().is_success(), "{}", admin.status());

    let metrics = app.metrics().await;
    for series in [
        r#"qrlogin_session_transitions_total{connection="shop",status="pending"} 1"#,
        r#"qrlogin_session_transitions_total{connection="shop",status="scanned"} 1"#,
        r#"qrlogin_session_transitions_total{connection="shop",status="confirmed"} 1"#,
        r#"qrlogin_session_transitions_total{connection="shop",status="redeemed"} 1"#,
        r#"qrlogin_wechat_calls_total{endpoint="getwxacodeunlimit",outcome="ok"} 1"#,
        r#"qrlogin_wechat_calls_total{endpoint="sns/jscode2session",outcome="ok"} 1"#,
        r#"qrlogin_wechat_calls_total{endpoint="getuserphonenumber",outcome="ok"} 1"#,
        r#"qrlogin_wechat_calls_total{endpoint="stable_token",outcome="ok"} 1"#,
        &format!("qrlogin_push_latency_seconds_count {pushed}"),
        r#"qrlogin_wechat_call_seconds_count{endpoint="getwxacodeunlimit"} 1"#,
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }

    let log = std::fs::read_to_string(&relay.log).unwrap();
    // Every log line is JSON, but for the one line the CLI prints where it listens.
    let events: Vec<Value> = log
        .lines()
        .filter(|line| !line.starts_with("qrlogin-relay listening on "))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}")))
        .filter(|event: &Value| event["target"] == "audit")
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["pending", "scanned", "confirmed", "redeemed", "admin_change"],
        "{log}"
    );
    assert!(events.iter().take(4).all(|e| e["fields"]["connection"] == "shop"));
    for secret in [
        pc.id.as_str(),
        pc.secret.as_str(),
        openid.as_str(),
        "13912345678",
        ticket.as_str(),
    ] {
        assert!(!log.contains(secret), "the log holds {secret}:\n{log}");
    }
}
