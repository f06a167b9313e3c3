//! Concurrent duplicates: exactly one wins, the others lose cleanly.

use crate::both_stores;
use crate::helpers::{Backend, spawn_app};
use futures_util::future::join_all;
use reqwest::StatusCode;

both_stores!(
    two_confirms_race_and_one_wins,
    redeems_race_and_one_wins,
    scans_by_two_people_race_and_one_wins
);

async fn two_confirms_race_and_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let scan = app.scan(&pc, "judy").await;
    let first = app.phone_code("judy", "13800138001").await;
    let second = app.phone_code("judy", "13800138002").await;
    let results = join_all([app.confirm(&scan, &first), app.confirm(&scan, &second)]).await;
    let won: Vec<_> = results.iter().filter(|(s, _)| *s == StatusCode::OK).collect();
    let lost: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{results:?}");
    assert_eq!(lost[0].1["error"], "already_confirmed");

    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = app.redeem(&ticket, "sandbox").await.1;
    let phone = user["user"]["phone_number"].as_str().unwrap();
    assert!(phone == "13800138001" || phone == "13800138002");
}

async fn redeems_race_and_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    app.log_in(&pc, "ken", "13800138000").await;
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = join_all((0..6).map(|_| app.redeem(&ticket, "sandbox"))).await;
    let statuses: Vec<_> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        5,
        "{statuses:?}"
    );
}

async fn scans_by_two_people_race_and_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let pc = app.start().await;
    let results = join_all([app.scan_as(&pc.id, "leo"), app.scan_as(&pc.id, "mia")]).await;
    let statuses: Vec<_> = results.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT),
        "{results:?}"
    );
}

/// The sharded memory store while its maps grow: inserts from many tasks at once all land,
/// and concurrent changes to one session are each applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_loses_nothing_to_concurrent_inserts_and_changes() {
    use qrlogin_relay::session::{ClientInfo, LoginSession, SceneId, unix_now};
    use qrlogin_relay::store::SessionStore;
    let store = SessionStore::memory(300);
    let start = |id: SceneId| {
        let client = ClientInfo {
            ip: "203.0.113.9".into(),
            user_agent: "test".into(),
        };
        LoginSession::start(id, "default", client, unix_now(), 600).0
    };
    let writers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..20_000 {
                let session = start(SceneId::random());
                store.insert(&session).await.unwrap();
                ids.push(session.id);
            }
            ids
        })
    });
    let ids: Vec<SceneId> = join_all(writers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert_eq!(ids.len(), 160_000);
    for id in &ids {
        assert_eq!(
            store.get(id).await.unwrap().map(|v| v.version),
            Some(0),
            "{id:?} was lost"
        );
    }

    // 8 tasks × 50 changes to one session: 400 versions, none lost to a race.
    let target = ids[0].clone();
    let changers = (0..8).map(|_| {
        let (store, target) = (store.clone(), target.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .update(&target, |s| {
                        s.created_at += 1;
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
        })
    });
    join_all(changers).await;
    let changed = store.get(&target).await.unwrap().unwrap();
    assert_eq!(changed.version, 400);
}
