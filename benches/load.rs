//! The load tool: the WeChat simulator and the relay each in their own process, driven over
//! real HTTP and WebSockets from here.
//!
//! `cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]`: the code
//! pool under a sustained start rate (`getwxacodeunlimit` delayed like WeChat's 100–300 ms):
//! how many starts were served from the pool.
//!
//! `cargo bench --bench load -- sockets [--sockets 5000] [--logins 200]`: N browsers wait on
//! WebSockets (relay on its own `redis-server`), then M of them are logged in (scan, confirm,
//! redeem) while all stay connected: relay RSS per idle socket, push latency (confirm answered
//! → `confirmed` frame read), relay CPU per login (from `/proc`). Raise `ulimit -n` first for
//! more than a few thousand sockets.
//!
//! `cargo bench --bench load -- compare [--seconds 5] [--clients 32]`: status reads and
//! warm-pool session starts against the relay on Redis, beside the same requests against a bare
//! actix-web handler doing one Redis GET (this tool, re-run as `bare-server` in its own
//! process), with the ratio.
//!
//! (Still to come from issue 12: several instances, Redis Cluster.)
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

/// A PC page's session start: the relay's answer.
async fn start_session(http: &reqwest::Client, relay: &str) -> serde_json::Value {
    let response = http
        .post(format!("{relay}/v1/login-sessions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

async fn metrics_text(http: &reqwest::Client, relay: &str) -> String {
    let response = http.get(format!("{relay}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// Waits until the relay has pooled `codes` codes (a pool filled before a run, as on a relay
/// that has been up a while).
async fn until_pool_filled(http: &reqwest::Client, relay: &str, codes: u64) {
    let started = Instant::now();
    while metric(
        &metrics_text(http, relay).await,
        "qrlogin_code_pool_refilled_total",
    ) < codes
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    match args.first().map(String::as_str) {
        Some("pool") => pool(&args).await,
        Some("sockets") => sockets(&args).await,
        Some("compare") => compare(&args).await,
        Some("bare-server") => bare_server(&args).await,
        _ => println!(
            "usage: cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]\n       \
             cargo bench --bench load -- sockets [--sockets 5000] [--logins 200]\n       \
             cargo bench --bench load -- compare [--seconds 5] [--clients 32]"
        ),
    }
}

/// A WeChat simulator in its own process; its base URL.
async fn simulator(http: &reqwest::Client) -> (Process, String) {
    let sim_addr = free_addr();
    let process = spawn(&["wechat-sim", "--listen", &sim_addr]);
    let wechat = format!("http://{sim_addr}");
    until_up(http, &format!("{wechat}/_sim/stats")).await;
    (process, wechat)
}

/// A relay (`serve`) in its own process with `settings` on top and `connection`'s lines in its
/// one connection; the process and its base URL.
async fn relay(
    http: &reqwest::Client,
    dir: &std::path::Path,
    wechat: &str,
    settings: &str,
    connection: &str,
) -> (Process, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("master.key"),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let relay_addr = free_addr();
    let config = format!(
        "listen = \"{relay_addr}\"\nwechat_api_base = \"{wechat}\"\nmaster_key_file = \"{}\"\n\
         sessions_per_ip_per_minute = 0\n{settings}\n\n[[connections]]\nidentifier = \"load\"\ndisplay_name = \"Load\"\n\
         appid = \"{}\"\napp_secret = \"{}\"\nbackend_secret = \"load\"\n{connection}\n",
        dir.join("master.key").display(),
        qrlogin_relay::sandbox::SANDBOX_APPID,
        qrlogin_relay::sandbox::SANDBOX_APP_SECRET,
    );
    std::fs::write(dir.join("relay.toml"), config).unwrap();
    let process = spawn(&["serve", "--config", dir.join("relay.toml").to_str().unwrap()]);
    let relay = format!("http://{relay_addr}");
    until_up(http, &format!("{relay}/readyz")).await;
    (process, relay)
}

/// Resident memory of `pid`, in KB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time `pid` has used, user and system, from `/proc/{pid}/stat`.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

async fn pool(args: &[String]) {
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
    until_pool_filled(&http, &relay, 32).await;

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

async fn sockets(args: &[String]) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (count, logins) = (
        flag(args, "--sockets", 5000) as usize,
        flag(args, "--logins", 200) as usize,
    );
    let http = reqwest::Client::new();
    let (_simulator, wechat) = simulator(&http).await;
    let (_redis, redis_url) = own_redis().await;
    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    let settings = format!(
        "redis_url = \"{redis_url}\"\nwebsockets_per_ip = 0\nmini_program_calls_per_ip_per_minute = 0\n\
         calls_per_openid_per_minute = 0\nmax_open_sockets = {}",
        count + 1000
    );
    let (relay_process, relay) = relay(&http, &dir, &wechat, &settings, "").await;
    let pid = relay_process.0.id();
    let ws_base = relay.replacen("http", "ws", 1);
    let baseline = rss_kb(pid);

    // N browsers: start a session, open its socket, authenticate, read the first frame; each
    // socket's reader reports when `confirmed` arrives.
    let (confirmed_tx, mut confirmed_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let opened = Instant::now();
    let open_one = |_| {
        let (http, relay, ws_base, tx) = (http.clone(), relay.clone(), ws_base.clone(), confirmed_tx.clone());
        async move {
            let created = start_session(&http, &relay).await;
            let id = created["id"].as_str().unwrap().to_owned();
            let secret = created["secret"].as_str().unwrap().to_owned();
            let (mut socket, _) =
                tokio_tungstenite::connect_async(format!("{ws_base}/v1/login-sessions/{id}/ws"))
                    .await
                    .unwrap();
            socket
                .send(Message::Text(
                    serde_json::json!({ "type": "auth", "secret": secret })
                        .to_string()
                        .into(),
                ))
                .await
                .unwrap();
            let first = socket.next().await.unwrap().unwrap();
            assert!(first.to_text().unwrap().contains("pending"));
            let id_for_reader = id.clone();
            let reader = tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message
                        && text.contains("\"confirmed\"")
                    {
                        let _ = tx.send((id_for_reader.clone(), Instant::now()));
                    }
                }
            });
            (id, reader)
        }
    };
    // Sixteen browsers arrive at a time.
    let (sessions, readers): (Vec<String>, Vec<_>) = futures_util::stream::iter(0..count)
        .map(open_one)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .unzip();
    let open_took = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // let the relay's allocator settle
    let loaded = rss_kb(pid);

    // M logins on sockets spread over the N, one after another, all others still connected.
    let cpu_before = cpu(pid);
    let mut latencies = Vec::new();
    let mut errors = 0;
    let step = (count / logins.max(1)).max(1);
    let started = Instant::now();
    for (n, id) in sessions.iter().step_by(step).take(logins).enumerate() {
        let user = format!("load-{n}");
        let mint = |kind: &str, body: serde_json::Value| {
            let request = http.post(format!("{wechat}/_sim/{kind}")).json(&body).send();
            async move {
                request.await.unwrap().json::<serde_json::Value>().await.unwrap()["code"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
        let login_code = mint("login-code", serde_json::json!({ "user": user })).await;
        let scan: serde_json::Value = http
            .post(format!("{relay}/v1/mp/scan"))
            .json(&serde_json::json!({ "scene": id, "login_code": login_code, "launch_scene": 1047 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let Some(scan_token) = scan["scan_token"].as_str() else {
            errors += 1;
            continue;
        };
        let phone_code = mint(
            "phone-code",
            serde_json::json!({ "user": user, "phone": "13800138000" }),
        )
        .await;
        let answer = http
            .post(format!("{relay}/v1/mp/confirm"))
            .json(&serde_json::json!({ "scene": id, "scan_token": scan_token, "phone_code": phone_code }))
            .send()
            .await
            .unwrap();
        let accepted = Instant::now();
        if !answer.status().is_success() {
            errors += 1;
            continue;
        }
        // The frame may have been read before the confirm's answer: then the latency is 0.
        let (pushed_id, read_at) = tokio::time::timeout(Duration::from_secs(10), confirmed_rx.recv())
            .await
            .expect("no confirmed frame")
            .unwrap();
        assert_eq!(&pushed_id, id);
        latencies.push(read_at.saturating_duration_since(accepted));
    }
    let logins_took = started.elapsed();
    let cpu_used = cpu(pid).saturating_sub(cpu_before);
    latencies.sort();
    println!("| scenario | sockets: {count} waiting browsers, {logins} logins, relay on Redis |");
    println!("|---|---|");
    println!(
        "| sockets opened | {count} in {:.1} s ({:.0}/s) |",
        open_took.as_secs_f64(),
        count as f64 / open_took.as_secs_f64()
    );
    println!(
        "| relay RSS before / with the sockets | {:.1} MB / {:.1} MB |",
        baseline as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
    println!(
        "| relay memory per idle socket | {:.1} KB |",
        loaded.saturating_sub(baseline) as f64 / count as f64
    );
    println!(
        "| push latency p50 / p99 / max (confirm answered → frame read) | {:.3} / {:.3} / {:.3} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "| logins | {} in {:.1} s, {errors} errors |",
        latencies.len(),
        logins_took.as_secs_f64()
    );
    println!(
        "| relay CPU per login (scan + confirm + push) | {:.2} ms |",
        cpu_used.as_secs_f64() * 1e3 / latencies.len().max(1) as f64
    );
    // Every browser leaves; a minute later, how much memory has the relay given back?
    for reader in readers {
        reader.abort();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = rss_kb(pid);
    let metrics = metrics_text(&http, &relay).await;
    println!(
        "| relay RSS a minute after all sockets closed | {:.1} MB ({:+.0} % of the {:.1} MB baseline; {} sockets still open) |",
        after as f64 / 1024.0,
        100.0 * (after as f64 - baseline as f64) / baseline as f64,
        baseline as f64 / 1024.0,
        metric(&metrics, "qrlogin_open_websockets")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `redis-server` of the tool's own on a free port; the process and its URL.
async fn own_redis() -> (Process, String) {
    let port = free_addr().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let process = Process(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed"),
    );
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (process, format!("redis://127.0.0.1:{port}/"))
}

/// The baseline: actix-web answering every request with one Redis GET.
async fn bare_server(args: &[String]) {
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

/// Requests/s that `clients` concurrent clients get from `request` in `seconds`.
async fn throughput(
    clients: usize,
    seconds: u64,
    request: impl Fn() -> reqwest::RequestBuilder + Clone + Send + 'static,
) -> (f64, usize) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                while Instant::now() < until {
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
    (ok as f64 / seconds as f64, failed)
}

async fn compare(args: &[String]) {
    let (seconds, clients) = (flag(args, "--seconds", 5), flag(args, "--clients", 32) as usize);
    let http = reqwest::Client::new();
    let (_redis, redis_url) = own_redis().await;
    let (_simulator, wechat) = simulator(&http).await;
    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    let settings = format!("redis_url = \"{redis_url}\"\nlong_polls_per_ip = 0");
    // A pool big enough for the whole start run, filled before it.
    let pool = 6000;
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
    until_pool_filled(&http, &relay, pool).await;

    let session = start_session(&http, &relay).await;
    let (id, secret) = (
        session["id"].as_str().unwrap().to_owned(),
        session["secret"].as_str().unwrap().to_owned(),
    );
    let read_url = format!("{relay}/v1/login-sessions/{id}");
    let client = http.clone();
    let (relay_reads, relay_read_errors) = throughput(clients, seconds, move || {
        client.get(&read_url).bearer_auth(&secret)
    })
    .await;
    let (client, url) = (http.clone(), format!("{bare}/read"));
    let (bare_reads, _) = throughput(clients, seconds, move || client.get(&url)).await;
    let (client, url) = (http.clone(), format!("{relay}/v1/login-sessions"));
    let (relay_starts, relay_start_errors) = throughput(clients, seconds, move || {
        client.post(&url).json(&serde_json::json!({}))
    })
    .await;
    let (client, url) = (http.clone(), format!("{bare}/start"));
    let (bare_starts, _) = throughput(clients, seconds, move || {
        client.post(&url).json(&serde_json::json!({}))
    })
    .await;
    let metrics = metrics_text(&http, &relay).await;
    println!(
        "| scenario | compare: {clients} clients, {seconds} s each, relay and bare handler on one Redis |"
    );
    println!("|---|---|");
    println!(
        "| status reads/s: relay / bare / ratio | {relay_reads:.0} / {bare_reads:.0} / {:.2}× ({relay_read_errors} errors) |",
        relay_reads / bare_reads
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
