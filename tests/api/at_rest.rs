//! Nothing readable in a Redis dump (DESIGN §6): after full logins on both paths, every key the
//! relay wrote and every event it published are searched for the secrets and personal data that
//! went through it.

use crate::helpers::{Backend, redis_url, settings, spawn_app_with};
use futures_util::StreamExt;
use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_WEBSITE_APP_SECRET};
use reqwest::StatusCode;

/// Every value under `prefix`, whatever its Redis type, as text.
async fn dump(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<(String, String)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query_async(conn).await.unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(conn).await.unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(conn)
                .await
                .unwrap(),
            other => panic!("{key} is a {other}"),
        };
        for value in values {
            out.push((key.clone(), String::from_utf8_lossy(&value).into_owned()));
        }
    }
    out
}

#[tokio::test]
async fn a_redis_dump_and_the_event_feed_show_no_secret_and_nobody() {
    let settings = settings(Backend::Redis);
    let prefix = settings.key_prefix.clone();
    let app = spawn_app_with(settings).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut events = client.get_async_pubsub().await.unwrap();
    events.psubscribe(format!("{prefix}*")).await.unwrap();

    // A mini-program login, redeemed.
    let pc = app.start().await;
    app.log_in(&pc, "alice", "13800138000").await;
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, redeemed) = app.redeem(&ticket, "sandbox").await;
    assert_eq!(status, StatusCode::OK);
    // A second, confirmed but not yet redeemed: its ticket is live in the store.
    let waiting = app.start().await;
    app.log_in(&waiting, "bob", "13900139000").await;
    let live_ticket = app.get_session(&waiting, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    // A scanned one: the scanner is known, not confirmed.
    let scanned = app.start().await;
    app.scan(&scanned, "carol").await;

    let user = &redeemed["user"];
    let mut secrets = vec![
        ("AppSecret", SANDBOX_APP_SECRET.to_owned()),
        ("website AppSecret", SANDBOX_WEBSITE_APP_SECRET.to_owned()),
        ("redeemed ticket", ticket.clone()),
        ("live ticket", live_ticket.clone()),
        ("openid", user["openid"].as_str().unwrap().to_owned()),
        ("unionid", user["unionid"].as_str().unwrap().to_owned()),
        ("phone", "13800138000".to_owned()),
        ("phone", "13900139000".to_owned()),
        ("browser secret", pc.secret.clone()),
        ("session_key", "session_key".to_owned()),
    ];
    // Carol's openid, as WeChat gives it to the relay.
    let carol_openid = openid_of(&app, "carol").await;
    secrets.push(("scanner openid", carol_openid));

    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored = dump(&mut conn, &prefix).await;
    assert!(
        stored.iter().any(|(k, _)| k.contains("session:")),
        "the dump holds the sessions"
    );
    // Every transition was published; collect until the redemption's event has arrived.
    let mut published = Vec::new();
    let mut stream = events.on_message();
    tokio::time::timeout(crate::helpers::PATIENCE, async {
        while !published
            .iter()
            .any(|p: &String| p.contains(r#""status":"redeemed""#))
        {
            let message = stream.next().await.unwrap();
            published.push(String::from_utf8_lossy(message.get_payload_bytes()).into_owned());
        }
    })
    .await
    .expect("the events arrive");
    for (what, secret) in &secrets {
        for (key, value) in &stored {
            assert!(
                !value.contains(secret.as_str()),
                "{what} readable in Redis key {key}"
            );
        }
        for event in &published {
            assert!(!event.contains(secret.as_str()), "{what} in a published event");
        }
    }
    // And yet the browser that holds the secret still reads its ticket.
    assert_eq!(app.get_session(&waiting, "").await.1["ticket"], live_ticket);
}

/// The openid WeChat (the simulator) gives the sandbox mini-program for `user`.
async fn openid_of(app: &crate::helpers::TestApp, user: &str) -> String {
    let code = app.login_code(user).await;
    let url = format!(
        "{}/sns/jscode2session?appid={}&secret={SANDBOX_APP_SECRET}&js_code={code}&grant_type=authorization_code",
        app.wechat,
        qrlogin_relay::sandbox::SANDBOX_APPID
    );
    crate::helpers::fetch_json(app.http.get(url)).await["openid"]
        .as_str()
        .unwrap()
        .to_owned()
}
