//! The reference mini-program (`miniprogram-contract/`) as a phone runs it: its real page code in
//! Node under a `wx` stand-in (`tests/miniprogram/wx.mjs`) against this sandbox relay over HTTP,
//! with the PC waiting on a real WebSocket (`tests/miniprogram/login_page.test.mjs`).

use crate::helpers::{Backend, run_node_tests, settings, spawn_app_with};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_mini_program_logs_people_in() {
    let mut settings = settings(Backend::Memory);
    // A connection whose codes expire fast, to watch the countdown end.
    let mut short = settings.connections[0].clone();
    short.identifier = "short".into();
    short.session_ttl_secs = 3;
    short.companion = None;
    settings.connections.push(short);
    let relay = spawn_app_with(settings).await.base;
    run_node_tests(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/miniprogram/login_page.test.mjs"),
        &[
            ("RELAY", relay.clone()),
            ("WECHAT", format!("{relay}/sandbox/wechat")),
        ],
    )
    .await;
}
