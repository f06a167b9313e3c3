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
