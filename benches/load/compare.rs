//! `compare`: status reads and warm-pool starts against the relay, beside a bare actix-web
//! handler doing one Redis GET (this tool re-run as `bare-server`), with the ratio.

use crate::parts::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The baseline: actix-web answering every request with one Redis GET.
pub async fn bare_server(args: &[String]) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let listen = args
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1].clone())
        .unwrap();
    let redis_url = args
        .windows(2)
        .find(|w| w[0] == "--redis")
        .map(|w| w[1].clone())
        .unwrap();
    let client = redis::Client::open(redis_url).unwrap();
    let conn = client.get_connection_manager().await.unwrap();
    let handler = |conn: web::Data<redis::aio::ConnectionManager>| async move {
        let mut conn = conn.get_ref().clone();
        let value: Option<String> = redis::cmd("GET")
            .arg("bare")
            .query_async(&mut conn)
            .await
            .unwrap();
        HttpResponse::Ok().json(serde_json::json!({ "status": "pending", "value": value }))
    };
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(conn.clone()))
            .route("/read", web::get().to(handler))
            .route("/start", web::post().to(handler))
    })
    .bind(listen)
    .unwrap()
    .run()
    .await
    .unwrap();
}

/// Requests/s that `clients` concurrent clients get from `request`, for `seconds` or until
/// `most` requests were sent, whichever comes first.
async fn throughput(
    clients: usize,
    seconds: u64,
    most: usize,
    request: impl Fn() -> reqwest::RequestBuilder + Clone + Send + 'static,
) -> (f64, usize) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (request, sent) = (request.clone(), sent.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                while Instant::now() < until && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < most
                {
                    match request().send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok += 1;
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.await.unwrap();
        ok += o;
        failed += f;
    }
    (ok as f64 / started.elapsed().as_secs_f64(), failed)
}

pub async fn run(args: &[String]) {
    let (seconds, clients) = (flag(args, "--seconds", 10), flag(args, "--clients", 32) as usize);
    let http = reqwest::Client::new();
    let (_redis, redis_url) = own_redis().await;
    let (_simulator, wechat) = simulator(&http).await;
    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    let settings = format!("redis_url = \"{redis_url}\"\nlong_polls_per_ip = 0");
    // A pool big enough for the whole start run, filled before it. During the run WeChat is
    // made slow, so refills wait instead of competing for the CPU: the starts are measured,
    // not the making of codes (the CPU figure of `sockets` includes that).
    let pool = 6_000;
    let (_relay, relay) = relay(
        &http,
        &dir,
        &wechat,
        &format!("{settings}\ncode_calls_per_appid_per_minute = 0"),
        &format!("pool_size = {pool}\npool_low_water = {pool}"),
    )
    .await;
    let bare_addr = free_addr();
    let _bare = Process(
        Command::new(std::env::current_exe().unwrap())
            .args(["bare-server", "--listen", &bare_addr, "--redis", &redis_url])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bare = format!("http://{bare_addr}");
    until_up(&http, &format!("{bare}/read")).await;
    until_pooled(&http, std::slice::from_ref(&relay), pool).await;
    http.post(format!("{wechat}/_sim/delay"))
        .json(&serde_json::json!({ "api": "getwxacodeunlimit", "millis": 60_000 }))
        .send()
        .await
        .unwrap();

    let session = start_session(&http, &relay).await;
    let (id, secret) = (
        session["id"].as_str().unwrap().to_owned(),
        session["secret"].as_str().unwrap().to_owned(),
    );
    let read_url = format!("{relay}/v1/login-sessions/{id}");
    let client = http.clone();
    let relay_read = move || client.get(&read_url).bearer_auth(&secret);
    let (client, url) = (http.clone(), format!("{bare}/read"));
    let bare_read = move || client.get(&url);
    // Reads alternate second by second between the relay and the bare handler, so a drift in
    // the machine's speed (its neighbours, its clock) falls on both alike; the ratio is the
    // median of the one-second pairs.
    let (mut relay_reads, mut bare_reads, mut relay_read_errors) = (0.0, 0.0, 0);
    let mut ratios = Vec::new();
    for _ in 0..seconds {
        let (relay_rate, errors) = throughput(clients, 1, usize::MAX, relay_read.clone()).await;
        let (bare_rate, _) = throughput(clients, 1, usize::MAX, bare_read.clone()).await;
        relay_reads += relay_rate / seconds as f64;
        bare_reads += bare_rate / seconds as f64;
        relay_read_errors += errors;
        ratios.push(relay_rate / bare_rate);
    }
    ratios.sort_by(f64::total_cmp);
    let read_ratio = ratios[ratios.len() / 2];
    let (client, url) = (http.clone(), format!("{relay}/v1/login-sessions"));
    // Starts until 5 000 are made (or the time is up): the pool (6 000) must not run dry.
    let starts = (pool - 1000) as usize;
    let (relay_starts, relay_start_errors) = throughput(clients, seconds, starts, move || {
        client.post(&url).json(&serde_json::json!({}))
    })
    .await;
    let (client, url) = (http.clone(), format!("{bare}/start"));
    let (bare_starts, _) = throughput(clients, seconds, starts, move || {
        client.post(&url).json(&serde_json::json!({}))
    })
    .await;
    let metrics = metrics_text(&http, &relay).await;
    println!(
        "| scenario | compare: {clients} clients, reads for {seconds} s, {starts} starts, relay and bare handler on one Redis |"
    );
    println!("|---|---|");
    println!(
        "| status reads/s: relay / bare / ratio (median of {seconds} alternating one-second pairs) | {relay_reads:.0} / {bare_reads:.0} / {read_ratio:.2}× ({relay_read_errors} errors) |"
    );
    println!(
        "| session starts/s (warm pool): relay / bare / ratio | {relay_starts:.0} / {bare_starts:.0} / {:.2}× ({relay_start_errors} errors) |",
        relay_starts / bare_starts
    );
    println!(
        "| pool hits / misses during the run | {} / {} |",
        metric(&metrics, "qrlogin_code_pool_hits_total"),
        metric(&metrics, "qrlogin_code_pool_misses_total")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
