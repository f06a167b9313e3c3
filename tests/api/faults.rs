//! The worst day, with real processes: Redis killed and restarted mid-login, a subscription
//! that silently stops delivering, Redis over TLS. Nothing is lost and the waiting browser is
//! pushed the outcome.

use crate::helpers::{Backend, PcSession, Socket, TestApp, settings, spawn_app_with};
use crate::processes::{RedisServer, TcpProxy, until};
use reqwest::StatusCode;
use serde_json::json;

/// A relay on the Redis at `url` (trusting `ca`), and a browser waiting on a new session.
async fn waiting_on(url: String, ca: Option<std::path::PathBuf>) -> (TestApp, PcSession, Socket) {
    let mut settings = settings(Backend::Redis);
    settings.redis_url = Some(url);
    settings.redis_ca_file = ca;
    let app = spawn_app_with(settings).await;
    let pc = app.start().await;
    let mut socket = app.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    (app, pc, socket)
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_login_loses_nothing_and_the_socket_stays_open() {
    let mut redis = RedisServer::start();
    let (app, pc, mut socket) = waiting_on(redis.url(), None).await;
    let scan = app.scan(&pc, "rita").await;
    assert_eq!(socket.next_json().await["status"], "scanned");

    redis.kill();
    let outage = tokio::time::Instant::now();
    // Requests are told the store is away and when to come back; readiness says so.
    app.start_refused_503("store_unavailable").await;
    let (status, body) = app.get_session(&pc, "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable"))
    );
    app.until_readyz(StatusCode::SERVICE_UNAVAILABLE).await;

    redis.restart();
    app.until_readyz(StatusCode::OK).await;
    eprintln!("redis restart: ready again {:?} after the kill", outage.elapsed());

    // The login goes on where it stopped, on the socket that waited through the outage.
    let phone_code = app.phone_code("rita", "13800138000").await;
    let (status, body) = app.confirm(&scan, &phone_code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let confirmed = socket.next_json().await;
    assert_eq!(confirmed["status"], "confirmed");
    let (status, redeemed) = app.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    assert_eq!(redeemed["user"]["phone_number"], "13800138000");
}

#[tokio::test]
async fn a_subscription_gone_silent_is_noticed_reopened_and_the_missed_change_pushed() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(vec![([127, 0, 0, 1], redis.port).into()]).await;
    let (app, pc, mut socket) = waiting_on(proxy.url("redis"), None).await;

    // The subscription's TCP link goes half-open: no error, no close, no more events (and new
    // subscriptions fare no better for now).
    assert_eq!(proxy.silence_subscribers(), 1);
    let cut = tokio::time::Instant::now();
    // This change's event is lost on the silent link; only a resync can bring it.
    app.scan(&pc, "sam").await;
    app.until_readyz(StatusCode::SERVICE_UNAVAILABLE).await;
    eprintln!("silent subscription: noticed {:?} after the cut", cut.elapsed());

    proxy.end_silence();
    let healed = tokio::time::Instant::now();
    assert_eq!(
        socket.next_json().await["status"],
        "scanned",
        "the missed change, by resync"
    );
    eprintln!(
        "silent subscription: missed change pushed {:?} after the link healed",
        healed.elapsed()
    );
    app.until_readyz(StatusCode::OK).await;
}

#[tokio::test]
async fn rediss_with_a_private_ca_carries_a_whole_login() {
    let (redis, ca) = RedisServer::start_tls();
    let (app, pc, mut socket) = waiting_on(format!("rediss://localhost:{}/", redis.port), Some(ca)).await;
    app.log_in(&pc, "tess", "13800138000").await;
    let confirmed = socket.until_status("confirmed").await;
    let (status, _) = app.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
    assert_eq!(status, StatusCode::OK);
    // Every Redis call is timed, by operation: the login's scan and confirm among them.
    assert!(
        app.metric(r#"qrlogin_store_call_seconds_count{op="compare_and_set"}"#)
            .await
            >= 3
    );
}

#[tokio::test]
async fn rediss_refuses_a_server_whose_certificate_it_cannot_verify() {
    let (redis, _ca) = RedisServer::start_tls();
    let mut settings = settings(Backend::Redis);
    // The system's roots do not include the test CA.
    settings.redis_url = Some(format!("rediss://localhost:{}/", redis.port));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = qrlogin_relay::startup::Application::build(settings, listener).await;
    let message = refused
        .err()
        .expect("an unverifiable server was accepted")
        .to_string();
    assert!(message.contains("redis"), "{message}");
}

#[tokio::test]
async fn sigterm_mid_refill_releases_the_pool_lock_and_exits_cleanly() {
    let simulator = crate::helpers::spawn_simulator();
    let http = reqwest::Client::new();
    // WeChat's 100–300 ms per code: the refill of 40 codes takes seconds.
    let delayed = http
        .post(format!("{simulator}/_sim/delay"))
        .json(&json!({ "api": "getwxacodeunlimit", "millis": 300 }))
        .send()
        .await
        .unwrap();
    assert!(delayed.status().is_success());
    let dir = crate::processes::temp_dir("refill");
    let prefix = format!("test-{}:", qrlogin_relay::token::random_base62(8));
    let config = crate::processes::serve_config(
        &dir,
        &format!(
            "redis_url = \"{}\"\nkey_prefix = \"{prefix}\"\nwechat_api_base = \"{simulator}\"",
            crate::helpers::redis_url()
        ),
        "identifier = \"pooled\"\ndisplay_name = \"Pooled\"\npool_size = 40",
    );
    let port = crate::processes::free_port();
    let mut relay = crate::processes::RelayProcess::start(&config, &dir, "refilling", port).await;
    let calls = format!("{simulator}/_sim/stats");
    let minted = || {
        let request = http.get(&calls).send();
        async move {
            let stats: serde_json::Value = request.await.unwrap().json().await.unwrap();
            stats["calls"]["getwxacodeunlimit"].as_u64().unwrap_or(0)
        }
    };
    until("the refill is under way", || async { minted().await >= 1 }).await;
    let redis = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let locks = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let pattern = format!("{prefix}*:refill");
        async move {
            redis::cmd("KEYS")
                .arg(pattern)
                .query_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(locks(&mut conn).await.len(), 1, "the refiller holds its lock");

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &relay.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = relay.exited().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        locks(&mut conn).await.is_empty(),
        "the lock was released, not left to lapse"
    );
    assert!(
        minted().await < 40,
        "the refill stopped between codes instead of finishing"
    );
}

#[tokio::test]
async fn a_socket_whose_resync_read_fails_stays_open_and_reads_again() {
    let redis = RedisServer::start();
    let (app, pc, mut socket) = waiting_on(redis.url(), None).await;

    // Reads fail (as while Redis is loading or failing over) while subscriptions work; then the
    // subscription drops, so every waiting browser re-reads — and that read fails.
    let admin = redis::Client::open(redis.url()).unwrap();
    let admin = admin.get_multiplexed_async_connection().await.unwrap();
    let acl = |rule: &'static str| {
        let mut admin = admin.clone();
        async move {
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("default")
                .arg(rule)
                .query_async::<()>(&mut admin)
                .await
                .unwrap()
        }
    };
    let loads = r#"qrlogin_store_call_seconds_count{op="load"}"#;
    acl("-hmget").await;
    let before = app.metric(loads).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin.clone())
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // The resubscribed feed makes the socket re-read; nobody else reads meanwhile.
    let http = app.http.clone();
    let metrics = app.url("/metrics");
    until("the socket's resync read", || {
        let request = http.get(&metrics).send();
        async move {
            let text = request.await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(loads).and_then(|n| n.trim().parse::<u64>().ok()))
                .is_some_and(|n| n > before)
        }
    })
    .await;
    let (status, _) = app.get_session(&pc, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "reads fail now");
    acl("+hmget").await;

    // The socket that waited through the failed resync is pushed the next change.
    app.scan(&pc, "uma").await;
    assert_eq!(socket.next_json().await["status"], "scanned");
}
