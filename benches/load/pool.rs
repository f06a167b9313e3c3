//! `pool`: the code pool under a sustained start rate, `getwxacodeunlimit` delayed like WeChat's.

use crate::parts::*;
use std::time::{Duration, Instant};

pub async fn run(args: &[String]) {
    let (rate, seconds, latency) = (
        flag(args, "--rate", 60),
        flag(args, "--seconds", 20),
        flag(args, "--latency-ms", 200),
    );
    let http = reqwest::Client::new();
    let (_simulator, wechat) = simulator(&http).await;
    http.post(format!("{wechat}/_sim/delay"))
        .json(&serde_json::json!({ "api": "getwxacodeunlimit", "millis": latency }))
        .send()
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    let (_relay, relay) = relay(&http, &dir, &wechat, "", "").await;
    // The pool fills before the run, as it would on a relay that has been up a while.
    until_pooled(&http, std::slice::from_ref(&relay), 32).await;

    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut starts = Vec::new();
    let started = Instant::now();
    for _ in 0..total {
        tick.tick().await;
        let request = http
            .post(format!("{relay}/v1/login-sessions"))
            .json(&serde_json::json!({}))
            .send();
        starts.push(tokio::spawn(async move {
            let at = Instant::now();
            let status = request.await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, at.elapsed())
        }));
    }
    let mut answers = Vec::new();
    for start in starts {
        answers.push(start.await.unwrap());
    }
    let took = started.elapsed();
    let metrics = metrics_text(&http, &relay).await;
    let (hits, misses) = (
        metric(&metrics, "qrlogin_code_pool_hits_total"),
        metric(&metrics, "qrlogin_code_pool_misses_total"),
    );
    let mut times: Vec<Duration> = answers.iter().map(|(_, t)| *t).collect();
    times.sort();
    let ok = answers.iter().filter(|(s, _)| *s == 201).count();
    println!("| scenario | pool: {rate} starts/s for {seconds} s, getwxacodeunlimit {latency} ms |");
    println!("|---|---|");
    println!(
        "| sessions started | {ok} of {total} in {:.1} s ({:.1}/s) |",
        took.as_secs_f64(),
        ok as f64 / took.as_secs_f64()
    );
    println!("| errors | {} |", total as usize - ok);
    println!(
        "| pool hits / misses | {hits} / {misses} ({:.1} % from the pool) |",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
    println!(
        "| start latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[(times.len() - 1) * 99 / 100].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "| codes minted | {} |",
        metric(&metrics, "qrlogin_code_pool_refilled_total")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
