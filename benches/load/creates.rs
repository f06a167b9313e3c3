//! `creates`: a sustained run of session starts at a steady rate against one relay (memory
//! store unless `--store` says otherwise) until it holds N sessions, while a probe asks
//! `/healthz` every 10 ms on a connection of its own: the longest any request waited while the
//! store grew (the probe on a thread of its own). The rate is kept below what the relay can
//! take, so waits are stalls, not a queue of requests the box cannot serve.

use crate::parts::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub async fn run(args: &[String]) {
    let store = Store::from_args(args, Store::Memory);
    let (sessions, clients, rate) = (
        flag(args, "--sessions", 500_000) as usize,
        flag(args, "--clients", 32) as usize,
        flag(args, "--rate", 3000).max(1) as f64,
    );
    let http = reqwest::Client::new();
    let (_simulator, wechat) = simulator(&http).await;
    let (_store, redis_line) = store.start().await;
    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    // Link codes are drawn by the relay, so the run measures the relay, not the simulator.
    let (relay_process, relay) = relay(
        &http,
        &dir,
        &wechat,
        &redis_line,
        "code_type = \"link\"\nlink_prefix = \"/q/\"\nsession_ttl_secs = 3600",
    )
    .await;
    let baseline = rss_kb(relay_process.0.id());

    let done = Arc::new(AtomicBool::new(false));
    // The probe has a thread and a runtime of its own, so its waits are the relay's, not
    // those of the clients' tasks queued beside it in the tool's runtime.
    let begun = Instant::now();
    let probe = {
        let done = done.clone();
        let url = format!("{relay}/healthz");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let probe = reqwest::Client::new();
                let mut waits = Vec::new();
                let mut every = tokio::time::interval(Duration::from_millis(10));
                while !done.load(Ordering::Relaxed) {
                    every.tick().await;
                    let asked = Instant::now();
                    let answered = probe
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    waits.push((asked - begun, asked.elapsed(), answered));
                }
                waits
            })
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, next) = (http.clone(), format!("{relay}/v1/login-sessions"), next.clone());
            tokio::spawn(async move {
                let mut errors: BTreeMap<u16, usize> = BTreeMap::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= sessions {
                        break;
                    }
                    tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into())
                        .await;
                    let status = http
                        .post(&url)
                        .json(&serde_json::json!({}))
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    if status != 201 {
                        *errors.entry(status).or_default() += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors: BTreeMap<u16, usize> = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap() {
            *errors.entry(status).or_default() += n;
        }
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let waits = probe.join().unwrap();
    let failed_probes = waits.iter().filter(|(_, _, ok)| !ok).count();
    let mut longest: Vec<(Duration, Duration)> = waits.iter().map(|&(at, wait, _)| (wait, at)).collect();
    longest.sort_by_key(|&entry| std::cmp::Reverse(entry));
    let mut waits: Vec<Duration> = waits.into_iter().map(|(_, wait, _)| wait).collect();
    waits.sort();
    let loaded = rss_kb(relay_process.0.id());

    println!(
        "| scenario | creates: {sessions} session starts at {rate}/s by {clients} clients, relay on {}, link codes |",
        store.name()
    );
    println!("|---|---|");
    println!(
        "| sessions started | {} in {:.1} s ({:.0}/s); errors by status {errors:?} |",
        sessions - errors.values().sum::<usize>(),
        took.as_secs_f64(),
        sessions as f64 / took.as_secs_f64()
    );
    println!(
        "| /healthz during the run: {} probes, p50 / p99 / longest | {:.2} / {:.2} / {:.2} ms ({failed_probes} failed) |",
        waits.len(),
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        percentile(&waits, 1.0)
    );
    let longest: Vec<String> = longest
        .iter()
        .take(5)
        .map(|(wait, at)| format!("{:.1} ms at {:.1} s", wait.as_secs_f64() * 1e3, at.as_secs_f64()))
        .collect();
    println!("| the five longest, and when | {} |", longest.join(", "));
    println!(
        "| relay RSS before / after | {:.1} MB / {:.1} MB |",
        baseline as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
