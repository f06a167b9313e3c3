//! The codes a PC page shows: branded sun codes, link QR codes, and the pool that keeps sun
//! codes ready so a session starts without a WeChat call.

use crate::both_stores;
use crate::helpers::{
    Backend, PATIENCE, TestApp, fetch_json, settings, spawn_app, spawn_app_with, spawn_simulator,
};
use qrlogin_relay::codes::{DEFAULT_DISC_RATIO, centre_disc};
use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_APPID};
use reqwest::StatusCode;
use serde_json::json;

both_stores!(
    a_session_starts_from_a_pooled_code_without_calling_wechat,
    link_codes_decode_to_the_link_and_need_no_wechat_call,
);

async fn code_bytes(app: &TestApp, url: &str) -> (StatusCode, String, Vec<u8>) {
    let response = app.http.get(url).send().await.unwrap();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status(), kind, response.bytes().await.unwrap().to_vec())
}

async fn until_metric(app: &TestApp, name: &str, at_least: u64) {
    tokio::time::timeout(PATIENCE, async {
        while app.metric(name).await < at_least {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never reached {at_least}"));
}

async fn a_session_starts_from_a_pooled_code_without_calling_wechat(backend: Backend) {
    let mut settings = settings(backend);
    settings.connections[0].pool_size = 4;
    settings.connections[0].pool_low_water = 2;
    let app = spawn_app_with(settings).await;
    until_metric(&app, "qrlogin_code_pool_refilled_total", 4).await;

    let fetched = app.sim_calls("getwxacodeunlimit").await;
    let pc = app.start().await;
    assert_eq!(app.metric("qrlogin_code_pool_hits_total").await, 1);
    assert_eq!(app.metric("qrlogin_code_pool_misses_total").await, 0);
    assert_eq!(
        app.sim_calls("getwxacodeunlimit").await,
        fetched,
        "no WeChat call on the request path"
    );
    let (status, kind, png) = code_bytes(&app, pc.body["code_url"].as_str().unwrap()).await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "image/png"));
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 430);

    // The pooled id is the session's own: the login completes as usual.
    app.log_in(&pc, "pia", "13800138000").await;
    assert_eq!(app.get_session(&pc, "").await.1["status"], "confirmed");

    // Taking the pool below its low-water mark refills it.
    app.start().await;
    app.start().await;
    until_metric(&app, "qrlogin_code_pool_refilled_total", 7).await;
}

async fn link_codes_decode_to_the_link_and_need_no_wechat_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.create_session(json!({ "connection": "link" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let (_, kind, png) = code_bytes(&app, body["code_url"].as_str().unwrap()).await;
    assert_eq!(kind, "image/png");
    let image = image::load_from_memory(&png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        image.width() as usize,
        image.height() as usize,
        |x, y| image.get_pixel(x as u32, y as u32)[0],
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    let link = grids[0].decode().unwrap().1;
    assert_eq!(link, format!("{}/q/{id}", app.base));
    assert_eq!(app.sim_calls("getwxacodeunlimit").await, 0);

    // A camera that is not WeChat lands on a page that says to use WeChat.
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Scan this code with WeChat"));

    // The mini-program reads the id from the link and logs in as with a sun code.
    let pc = crate::helpers::PcSession {
        id: id.to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
        body,
    };
    app.log_in(&pc, "quin", "13800138000").await;
    let ticket = app.get_session(&pc, "").await.1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.redeem(&ticket, "sandbox").await.1["user"]["connection"],
        "link"
    );
}

#[tokio::test]
async fn the_logo_sits_inside_the_centre_disc_and_the_rays_are_untouched() {
    let app = spawn_app(Backend::Memory).await;
    let pc = app.start().await;
    let (_, _, branded) = code_bytes(&app, pc.body["code_url"].as_str().unwrap()).await;
    let branded = image::load_from_memory(&branded).unwrap().to_rgb8();

    // The very same sun code, straight from the simulator.
    let token = fetch_json(
        app.http
            .post(format!("{}/cgi-bin/stable_token", app.wechat))
            .json(&json!({
                "grant_type": "client_credential", "appid": SANDBOX_APPID, "secret": SANDBOX_APP_SECRET
            })),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = app
        .http
        .post(format!(
            "{}/wxa/getwxacodeunlimit?access_token={token}",
            app.wechat
        ))
        .json(&json!({ "scene": pc.id, "page": "pages/login/login", "width": 430 }))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let raw = image::load_from_memory(&raw).unwrap().to_luma8();

    let (left, _, diameter) = centre_disc(430, DEFAULT_DISC_RATIO);
    let (centre, radius) = (215.0, diameter as f32 / 2.0);
    let (mut logo_pixels, mut ray_pixels) = (0, 0);
    for (x, y, px) in branded.enumerate_pixels() {
        let r = ((x as f32 + 0.5 - centre).powi(2) + (y as f32 + 0.5 - centre).powi(2)).sqrt();
        let grey = px[0] == px[1] && px[1] == px[2];
        if r > radius + 1.0 {
            let expected = raw.get_pixel(x, y)[0] as i32;
            assert!(
                grey && (px[0] as i32 - expected).abs() <= 9,
                "({x},{y}) outside the disc was changed"
            );
            ray_pixels += usize::from(expected < 128);
        } else if !grey {
            logo_pixels += 1;
        }
    }
    assert!(ray_pixels > 5_000, "the rays are there");
    assert!(
        logo_pixels > 10_000,
        "the blue logo fills the disc ({logo_pixels} coloured pixels)"
    );
    assert_eq!(
        *branded.get_pixel(left + 1, 215),
        image::Rgb([255, 255, 255]),
        "white ring at the edge"
    );
}

#[tokio::test]
async fn codes_come_as_png_or_jpeg_and_bad_formats_are_refused() {
    let app = spawn_app(Backend::Memory).await;
    let pc = app.start().await;
    let url = pc.body["code_url"].as_str().unwrap();
    let (status, kind, jpeg) = code_bytes(&app, &format!("{url}?format=jpeg")).await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "image/jpeg"));
    assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
    // Made once per session: asked again, the same bytes come from the store.
    let (_, _, again) = code_bytes(&app, &format!("{url}?format=jpg")).await;
    assert_eq!(again, jpeg);
    assert_eq!(app.metric("qrlogin_code_jpeg_conversions_total").await, 1);
    let (status, _, body) = code_bytes(&app, &format!("{url}?format=gif")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("invalid_format"));
    let (status, _, _) = code_bytes(&app, &app.url("/v1/login-sessions/AAAAAAAAAAAAAAAAAAAAAA/code")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_empty_pool_falls_back_to_a_live_fetch_and_refill_errors_are_counted() {
    let simulator = spawn_simulator();
    let http = reqwest::Client::new();
    let inject = |times: u64| {
        http.post(format!("{simulator}/_sim/fail-next"))
            .json(&json!({ "api": "getwxacodeunlimit", "errcode": -1, "times": times }))
            .send()
    };
    inject(1_000_000).await.unwrap();
    let mut settings = settings(Backend::Memory);
    settings.mount_simulator = false;
    settings.wechat_api_base = simulator.clone();
    settings.connections[0].pool_size = 4;
    let app = spawn_app_with(settings).await;
    until_metric(&app, "qrlogin_code_pool_refill_errors_total", 1).await;

    let (status, body) = app.create_session(json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("wechat_busy"))
    );
    inject(0).await.unwrap();
    let pc = app.start().await;
    assert_eq!(app.metric("qrlogin_code_pool_misses_total").await, 2);
    let (status, _, _) = code_bytes(&app, pc.body["code_url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

/// Two instances on one Redis, each refilling the pool of its own connection on the same
/// AppID: together they make no more `getwxacodeunlimit` calls than the AppID's budget.
#[tokio::test]
async fn the_code_budget_of_an_appid_is_shared_by_every_instance_and_pool() {
    let simulator = spawn_simulator();
    let mut shared = settings(Backend::Redis);
    shared.mount_simulator = false;
    shared.wechat_api_base = simulator.clone();
    shared.code_calls_per_appid_per_minute = 10;
    let minute = || qrlogin_relay::session::unix_now() / 60;
    let started_in = minute();
    let instance = |identifier: &str| {
        let mut s = shared.clone();
        s.connections[0].identifier = identifier.into();
        s.connections[0].companion = None;
        s.connections[0].pool_size = 50;
        s.connections[0].pool_low_water = 50;
        s.connections.truncate(1);
        s.default_connection = Some(identifier.into());
        s
    };
    let a = spawn_app_with(instance("shop-a")).await;
    let b = spawn_app_with(instance("shop-b")).await;
    until_metric(&a, "qrlogin_code_pool_budget_spent_total", 1).await;
    until_metric(&b, "qrlogin_code_pool_budget_spent_total", 1).await;
    let refilled = a.metric("qrlogin_code_pool_refilled_total").await
        + b.metric("qrlogin_code_pool_refilled_total").await;
    let calls = a.sim_calls("getwxacodeunlimit").await;
    // A minute boundary during the test opens a second budget.
    let budgets = if minute() == started_in { 1 } else { 2 };
    assert!(calls <= 10 * budgets, "{calls} calls for a budget of 10 a minute");
    assert_eq!(refilled, calls, "every call's code was pooled");
    assert!(calls >= 10, "the budget was used: {calls}");
}

#[tokio::test]
async fn a_pooled_code_lives_as_long_as_its_session_and_one_whose_image_is_gone_is_skipped() {
    let mut settings = settings(Backend::Redis);
    settings.connections[0].pool_size = 3;
    settings.connections[0].pool_low_water = 1;
    let prefix = settings.key_prefix.clone();
    let app = spawn_app_with(settings).await;
    until_metric(&app, "qrlogin_code_pool_refilled_total", 3).await;
    let redis = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();

    // A pooled start: the image made for the id is now the session's, for the session's life
    // (not the pool's week).
    let pc = app.start().await;
    assert_eq!(app.metric("qrlogin_code_pool_hits_total").await, 1);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}code:{{{}}}", pc.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=120).contains(&ttl), "the code lives {ttl} s");

    // The images of the two ids still pooled are lost (evicted, say): a start skips both and
    // makes its code now.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}code:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let pooled: Vec<&String> = keys.iter().filter(|k| !k.contains(&pc.id)).collect();
    assert_eq!(pooled.len(), 2);
    let _: () = redis::cmd("DEL")
        .arg(&pooled)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fetched = app.sim_calls("getwxacodeunlimit").await;
    let late = app.start().await;
    assert_eq!(app.metric("qrlogin_code_pool_hits_total").await, 1);
    assert_eq!(app.metric("qrlogin_code_pool_misses_total").await, 1);
    assert!(app.sim_calls("getwxacodeunlimit").await > fetched);
    let (status, kind, png) = code_bytes(&app, late.body["code_url"].as_str().unwrap()).await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "image/png"));
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 430);
}
