//! `cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]`: the
//! code pool under a sustained start rate. The WeChat simulator runs in its own process with
//! `getwxacodeunlimit` delayed like WeChat's (100–300 ms), the relay in another (`serve`,
//! memory store, defaults but for the per-IP session limit); PC sessions are started at a
//! steady rate and the table shows how many were served from the pool.
//!
//! (The first scenario of issue 12's load tool; waiting sockets, logins, push latency and the
//! bare-handler comparison are still to come.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn spawn(args: &[&str]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn until_up(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never answered");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) != Some("pool") {
        println!("usage: cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]");
        return;
    }
    let (rate, seconds, latency) = (
        flag(&args, "--rate", 60),
        flag(&args, "--seconds", 20),
        flag(&args, "--latency-ms", 200),
    );
    let http = reqwest::Client::new();
    let sim_addr = free_addr();
    let _simulator = spawn(&["wechat-sim", "--listen", &sim_addr]);
    let wechat = format!("http://{sim_addr}");
    until_up(&http, &format!("{wechat}/_sim/stats")).await;
    http.post(format!("{wechat}/_sim/delay"))
        .json(&serde_json::json!({ "api": "getwxacodeunlimit", "millis": latency }))
        .send()
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("master.key"),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let relay_addr = free_addr();
    let config = format!(
        "listen = \"{relay_addr}\"\nwechat_api_base = \"{wechat}\"\nmaster_key_file = \"{}\"\n\
         sessions_per_ip_per_minute = 0\n\n[[connections]]\nidentifier = \"load\"\ndisplay_name = \"Load\"\n\
         appid = \"{}\"\napp_secret = \"{}\"\nbackend_secret = \"load\"\n",
        dir.join("master.key").display(),
        qrlogin_relay::sandbox::SANDBOX_APPID,
        qrlogin_relay::sandbox::SANDBOX_APP_SECRET,
    );
    std::fs::write(dir.join("relay.toml"), config).unwrap();
    let _relay = spawn(&["serve", "--config", dir.join("relay.toml").to_str().unwrap()]);
    let relay = format!("http://{relay_addr}");
    until_up(&http, &format!("{relay}/readyz")).await;
    // The pool fills before the run, as it would on a relay that has been up a while.
    let filled = Instant::now();
    while metric(
        &http
            .get(format!("{relay}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "qrlogin_code_pool_refilled_total",
    ) < 32
    {
        assert!(
            filled.elapsed() < Duration::from_secs(60),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    let metrics = http
        .get(format!("{relay}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
