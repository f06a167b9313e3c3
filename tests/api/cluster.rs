//! The relay on a real Redis Cluster the tests start (three masters, three replicas): logins
//! across two instances, events on sharded channels that only the waiting instance hears, and a
//! failover of the master holding waiting sessions.

use crate::helpers::{Backend, PcSession, Scan, Socket, TestApp, settings, spawn_app_with, spawn_simulator};
use crate::processes::{RedisCluster, until};
use reqwest::StatusCode;

/// Two relays on `cluster`, sharing one key prefix and a simulator in its own server.
async fn two_relays(cluster: &RedisCluster) -> (TestApp, TestApp, String) {
    let simulator = spawn_simulator();
    let mut shared = settings(Backend::Memory);
    shared.redis_url = Some(cluster.url());
    shared.mount_simulator = false;
    shared.wechat_api_base = simulator;
    let prefix = shared.key_prefix.clone();
    let a = spawn_app_with(shared.clone()).await;
    let b = spawn_app_with(shared).await;
    (a, b, prefix)
}

fn session_key(prefix: &str, session: &PcSession) -> String {
    format!("{prefix}session:{{{}}}", session.id)
}

fn events_channel(prefix: &str, session: &PcSession) -> String {
    format!("{prefix}events:{{{}}}", session.id)
}

#[tokio::test]
async fn logins_across_two_relays_on_a_redis_cluster_travel_on_each_sessions_shard_channel() {
    let cluster = RedisCluster::start().await;
    let (a, b, prefix) = two_relays(&cluster).await;

    let mut waiting = Vec::new();
    for _ in 0..12 {
        let pc = a.start().await;
        let mut socket = a.socket(&pc).await;
        assert_eq!(socket.next_json().await["status"], "pending");
        waiting.push((pc, socket));
    }
    // Sessions spread over the masters by their ids; each one's events go to its own shard
    // channel, which only the instance with its browser (A) subscribes to, and nothing uses
    // the cluster-wide channel.
    let masters: std::collections::HashSet<usize> = waiting
        .iter()
        .map(|(pc, _)| cluster.master_of(&session_key(&prefix, pc)).unwrap())
        .collect();
    assert!(
        masters.len() >= 2,
        "12 sessions all landed on one master: {masters:?}"
    );
    for (pc, _) in &waiting {
        assert_eq!(cluster.shard_subscribers(&events_channel(&prefix, pc)), 1);
    }
    assert_eq!(cluster.classic_subscribers(&format!("{prefix}events")), 0);

    // The phones' calls land on B; every push reaches A's sockets; B redeems.
    for (n, (pc, socket)) in waiting.iter_mut().enumerate() {
        let user = format!("user{n}");
        let scan = b.scan(pc, &user).await;
        assert_eq!(socket.next_json().await["status"], "scanned");
        let phone_code = b.phone_code(&user, "13800138000").await;
        assert_eq!(b.confirm(&scan, &phone_code).await.0, StatusCode::OK);
        let confirmed = socket.next_json().await;
        assert_eq!(confirmed["status"], "confirmed");
        let (status, identity) = b.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
        assert_eq!(status, StatusCode::OK, "{identity}");
        assert_eq!(identity["user"]["phone_number"], "13800138000");
    }

    // Once the browsers leave, A stops listening for their sessions.
    for (_, socket) in &mut waiting {
        socket.close().await;
    }
    until("A unsubscribed from every finished session's channel", || {
        let left = waiting
            .iter()
            .map(|(pc, _)| cluster.shard_subscribers(&events_channel(&prefix, pc)))
            .sum::<i64>();
        async move { left == 0 }
    })
    .await;
}

#[tokio::test]
async fn a_failover_of_the_master_holding_waiting_sessions_loses_no_login_and_closes_no_socket() {
    let mut cluster = RedisCluster::start().await;
    let (a, b, prefix) = two_relays(&cluster).await;

    // Browsers wait on A for sessions on one master; each has been scanned already.
    let first = a.start().await;
    let doomed = cluster.master_of(&session_key(&prefix, &first)).unwrap();
    let mut waiting: Vec<(PcSession, Socket, Scan, String)> = Vec::new();
    let mut candidates = vec![first];
    while waiting.len() < 3 {
        let pc = candidates.pop().unwrap_or(a.start().await);
        if cluster.master_of(&session_key(&prefix, &pc)) != Some(doomed) {
            continue;
        }
        let mut socket = a.socket(&pc).await;
        assert_eq!(socket.next_json().await["status"], "pending");
        let user = format!("user{}", waiting.len());
        let scan = b.scan(&pc, &user).await;
        assert_eq!(socket.next_json().await["status"], "scanned");
        waiting.push((pc, socket, scan, user));
    }

    cluster
        .fail_over_master_of(&session_key(&prefix, &waiting[0].0))
        .await;

    // The phones confirm through B (a 503 while the relay finds the new master is answered
    // with Retry-After; the phone tries again with a fresh code); every socket that waited is
    // pushed its confirmation and its ticket redeems.
    for (_, socket, scan, user) in &mut waiting {
        confirm_until_stored(&b, scan, user).await;
        let confirmed = socket.until_status("confirmed").await;
        let (status, identity) = b.redeem(confirmed["ticket"].as_str().unwrap(), "sandbox").await;
        assert_eq!(status, StatusCode::OK, "{identity}");
    }

    // And new logins go on: a session started after the failover, on the new master's slots.
    let pc = a.start().await;
    let mut socket = a.socket(&pc).await;
    assert_eq!(socket.next_json().await["status"], "pending");
    b.log_in(&pc, "late", "13900139000").await;
    assert_eq!(socket.until_status("confirmed").await["status"], "confirmed");
}

/// Confirms `scan` as `user` through `relay`, as the mini-program would: once more, with a
/// fresh phone code, after a `503` (the relay finding the new master).
async fn confirm_until_stored(relay: &TestApp, scan: &Scan, user: &str) {
    for _ in 0..50 {
        let phone_code = relay.phone_code(user, "13800138000").await;
        let (status, body) = relay.confirm(scan, &phone_code).await;
        match status {
            StatusCode::OK => return,
            StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            other => panic!("confirm after the failover: {other} {body}"),
        }
    }
    panic!("the relay never stored the confirmation after the failover");
}
