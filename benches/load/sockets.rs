//! `sockets`: N browsers wait on WebSockets spread over k relay instances, held by child
//! processes of this tool (`browsers`; a process may hold only so many files); then M complete
//! logins one after another while all stay connected — start on one instance, code, socket,
//! scan, confirm and redeem on the next — and every browser leaves.

use crate::parts::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Sockets held by one `browsers` process.
const PER_PROCESS: usize = 9000;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a page's socket for `created` (a session start's answer) and authenticates; `None`
/// (and the reason counted) when the relay refused.
async fn open_socket(created: &serde_json::Value) -> Result<Socket, &'static str> {
    let url = created["ws_url"].as_str().ok_or("start refused")?;
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|_| "socket refused")?;
    let auth = serde_json::json!({ "type": "auth", "secret": created["secret"] });
    socket
        .send(Message::Text(auth.to_string().into()))
        .await
        .map_err(|_| "socket closed")?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.contains("pending") => Ok(socket),
        _ => Err("no pending frame"),
    }
}

/// `browsers --relays URL,URL --count N`: opens N waiting browsers round-robin over the relays,
/// prints `open <errors>`, holds them (answering pings) until stdin closes.
pub async fn browsers(args: &[String]) {
    qrlogin_relay::limits::raise_open_file_limit();
    let relays: Vec<String> = args
        .windows(2)
        .find(|w| w[0] == "--relays")
        .map(|w| w[1].split(',').map(str::to_owned).collect())
        .unwrap();
    let count = flag(args, "--count", 1000) as usize;
    let http = reqwest::Client::new();
    let opened: Vec<Result<Socket, &str>> = futures_util::stream::iter(0..count)
        .map(|n| {
            let (http, relay) = (http.clone(), relays[n % relays.len()].clone());
            async move { open_socket(&start_session(&http, &relay).await).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let errors = opened.iter().filter(|s| s.is_err()).count();
    for socket in opened.into_iter().flatten() {
        tokio::spawn(socket.for_each(|_| async {}));
    }
    println!("open {errors}");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count())
        .await
        .unwrap();
}

/// A code from the simulator's minting controls (`login-code`, `phone-code`).
async fn mint(http: &reqwest::Client, wechat: &str, kind: &str, body: serde_json::Value) -> Option<String> {
    let answer: serde_json::Value = http
        .post(format!("{wechat}/_sim/{kind}"))
        .json(&body)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer["code"].as_str().map(str::to_owned)
}

/// One complete login: start and code on `page`, the phone's scan and confirm and the
/// backend's redemption on `phone`. The push latency: confirm answered → `confirmed` frame
/// read (0 when the frame came first).
async fn log_in(
    http: &reqwest::Client,
    wechat: &str,
    page: &str,
    phone: &str,
    user: &str,
) -> Result<Duration, &'static str> {
    let created = start_session(http, page).await;
    let code = http
        .get(created["code_url"].as_str().ok_or("start refused")?)
        .send()
        .await
        .map_err(|_| "code failed")?;
    if !code.status().is_success() || code.bytes().await.is_err() {
        return Err("code failed");
    }
    let mut socket = open_socket(&created).await?;
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(Message::Text(text))) = socket.next().await {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let _ = frames_tx.send((frame, Instant::now()));
        }
    });
    let id = created["id"].as_str().ok_or("start refused")?;
    let login_code = mint(http, wechat, "login-code", serde_json::json!({ "user": user }))
        .await
        .ok_or("simulator failed")?;
    let scan: serde_json::Value = http
        .post(format!("{phone}/v1/mp/scan"))
        .json(&serde_json::json!({ "scene": id, "login_code": login_code, "launch_scene": 1047 }))
        .send()
        .await
        .map_err(|_| "scan failed")?
        .json()
        .await
        .map_err(|_| "scan failed")?;
    let scan_token = scan["scan_token"].as_str().ok_or("scan refused")?;
    let phone_code = mint(
        http,
        wechat,
        "phone-code",
        serde_json::json!({ "user": user, "phone": "13800138000" }),
    )
    .await
    .ok_or("simulator failed")?;
    let confirm = http
        .post(format!("{phone}/v1/mp/confirm"))
        .json(&serde_json::json!({ "scene": id, "scan_token": scan_token, "phone_code": phone_code }))
        .send()
        .await
        .map_err(|_| "confirm failed")?;
    let accepted = Instant::now();
    if !confirm.status().is_success() {
        return Err("confirm refused");
    }
    let (confirmed, read_at) = loop {
        let (frame, at) = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .map_err(|_| "no confirmed frame")?
            .ok_or("socket closed")?;
        if frame["status"] == "confirmed" {
            break (frame, at);
        }
    };
    reader.abort();
    let redeemed = http
        .post(format!("{phone}/v1/tickets/redeem"))
        .bearer_auth("load")
        .json(&serde_json::json!({ "ticket": confirmed["ticket"] }))
        .send()
        .await
        .map_err(|_| "redeem failed")?;
    if !redeemed.status().is_success() {
        return Err("redeem refused");
    }
    Ok(read_at.saturating_duration_since(accepted))
}

/// Resident memory once the allocators have given back what was freed (jemalloc purges freed
/// pages over ~10 s): sampled every second until a second brings it down by less than 0.5 %.
async fn settled(rss: impl Fn() -> u64) -> u64 {
    let mut last = rss();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss();
        if now + last / 200 >= last {
            return now;
        }
        last = now;
    }
    last
}

pub async fn run(args: &[String]) {
    let store = Store::from_args(args, Store::Redis);
    let (count, logins, in_flight) = (
        flag(args, "--sockets", 5000) as usize,
        flag(args, "--logins", 200) as usize,
        flag(args, "--in-flight", 1).max(1) as usize,
    );
    let instances = if store == Store::Memory {
        1
    } else {
        flag(args, "--instances", 2) as usize
    };
    let http = reqwest::Client::new();
    let (_simulator, wechat) = simulator(&http).await;
    let (_store, redis_line) = store.start().await;
    let dir = std::env::temp_dir().join(format!("qrlogin-load-{}", std::process::id()));
    let settings = format!(
        "{redis_line}\nwebsockets_per_ip = 0\nmini_program_calls_per_ip_per_minute = 0\n\
         calls_per_openid_per_minute = 0\nmax_open_sockets = {}",
        count / instances + 1000
    );
    let mut relays = Vec::new();
    for n in 0..instances {
        relays.push(
            relay(
                &http,
                &dir.join(format!("relay{n}")),
                &wechat,
                &settings,
                "session_ttl_secs = 3600",
            )
            .await,
        );
    }
    let urls: Vec<String> = relays.iter().map(|(_, url)| url.clone()).collect();
    let pids: Vec<u32> = relays.iter().map(|(process, _)| process.0.id()).collect();
    let rss = || pids.iter().map(|&pid| rss_kb(pid)).sum::<u64>();
    let cpu_all = || pids.iter().map(|&pid| cpu(pid)).sum::<Duration>();
    until_pooled(&http, &urls, 32).await;
    let baseline = settled(rss).await;

    // N browsers, in processes of up to PER_PROCESS sockets each.
    let opened = Instant::now();
    let mut holders = Vec::new();
    for first in (0..count).step_by(PER_PROCESS) {
        let n = PER_PROCESS.min(count - first);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["browsers", "--relays", &urls.join(","), "--count", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        holders.push(Process(child));
    }
    let mut open_errors = 0;
    for holder in &mut holders {
        let stdout = holder.0.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            std::io::BufReader::new(stdout).lines().next().unwrap().unwrap()
        })
        .await
        .unwrap();
        open_errors += line.trim_start_matches("open ").parse::<usize>().unwrap();
    }
    let open_took = opened.elapsed();
    // The starts drained the pool: it refills before the logins, so each login costs what it
    // does on a relay that keeps up (one code made, by the refiller). The relay refills its
    // 32 codes once fewer than 8 are left; fewer starts than that leave it as they found it.
    until_pooled(&http, &urls, if count > 24 { 32 } else { 32 - count as u64 }).await;
    let loaded = settled(rss).await;

    // M complete logins, `--in-flight` at a time (one after another by default), every other
    // browser still waiting.
    let cpu_before = cpu_all();
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    let outcomes: Vec<_> = futures_util::stream::iter(0..logins)
        .map(|n| {
            let (http, wechat, urls) = (&http, &wechat, &urls);
            async move {
                let (page, phone) = (&urls[n % instances], &urls[(n + 1) % instances]);
                log_in(http, wechat, page, phone, &format!("load-{n}")).await
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            Ok(latency) => latencies.push(latency),
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    let logins_took = started.elapsed();
    let cpu_used = cpu_all().saturating_sub(cpu_before);
    latencies.sort();
    let (mut hits, mut misses) = (0, 0);
    for url in &urls {
        let metrics = metrics_text(&http, url).await;
        hits += metric(&metrics, "qrlogin_code_pool_hits_total");
        misses += metric(&metrics, "qrlogin_code_pool_misses_total");
    }

    println!(
        "| scenario | sockets: {count} waiting browsers on {instances} instance(s) on {}, {logins} complete logins, {in_flight} at a time |",
        store.name()
    );
    println!("|---|---|");
    println!(
        "| sessions started, sockets opened | {count} in {:.1} s ({:.0}/s), {open_errors} errors |",
        open_took.as_secs_f64(),
        count as f64 / open_took.as_secs_f64()
    );
    println!(
        "| relay RSS before / with the sockets (all instances) | {:.1} MB / {:.1} MB |",
        baseline as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
    println!(
        "| relay memory per idle socket | {:.1} KB |",
        loaded.saturating_sub(baseline) as f64 / count as f64
    );
    println!(
        "| logins (start, code, socket, scan, confirm, redeem) | {} in {:.1} s ({:.0}/s) |",
        latencies.len(),
        logins_took.as_secs_f64(),
        latencies.len() as f64 / logins_took.as_secs_f64()
    );
    println!("| login errors by kind | {errors:?} |");
    if !latencies.is_empty() {
        println!(
            "| push latency p50 / p99 / max (confirm answered → frame read) | {:.3} / {:.3} / {:.3} ms |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
    }
    println!(
        "| relay CPU per complete login (all instances) | {:.2} ms |",
        cpu_used.as_secs_f64() * 1e3 / latencies.len().max(1) as f64
    );
    println!("| pool hits / misses | {hits} / {misses} |");

    // Every browser leaves; a minute later, how much memory have the relays given back?
    drop(holders);
    for url in &urls {
        let started = Instant::now();
        while metric(&metrics_text(&http, url).await, "qrlogin_open_websockets") > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sockets never closed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = rss();
    println!(
        "| relay RSS a minute after every browser left | {:.1} MB ({:+.0} % of the {:.1} MB baseline) |",
        after as f64 / 1024.0,
        100.0 * (after as f64 - baseline as f64) / baseline as f64,
        baseline as f64 / 1024.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
