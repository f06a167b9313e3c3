//! The parts every scenario uses: processes (the simulator, relays, Redis, a Redis Cluster),
//! requests, and readings from `/proc` and `/metrics`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

pub fn spawn(args: &[&str]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub async fn until_up(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never answered");
}

/// A PC page's session start: the relay's answer.
pub async fn start_session(http: &reqwest::Client, relay: &str) -> serde_json::Value {
    let response = http
        .post(format!("{relay}/v1/login-sessions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

pub async fn metrics_text(http: &reqwest::Client, relay: &str) -> String {
    let response = http.get(format!("{relay}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// Waits until the pool the relays share holds `codes` codes (all instances' refills less
/// their hits): filled before a run, as on relays that have been up a while.
pub async fn until_pooled(http: &reqwest::Client, urls: &[String], codes: u64) {
    let started = Instant::now();
    loop {
        let (mut refilled, mut taken) = (0, 0);
        for url in urls {
            let metrics = metrics_text(http, url).await;
            refilled += metric(&metrics, "qrlogin_code_pool_refilled_total");
            taken += metric(&metrics, "qrlogin_code_pool_hits_total");
        }
        if refilled >= taken + codes {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the pool never refilled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

pub fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// A WeChat simulator in its own process; its base URL.
pub async fn simulator(http: &reqwest::Client) -> (Process, String) {
    let sim_addr = free_addr();
    let process = spawn(&["wechat-sim", "--listen", &sim_addr]);
    let wechat = format!("http://{sim_addr}");
    until_up(http, &format!("{wechat}/_sim/stats")).await;
    (process, wechat)
}

/// A relay (`serve`) in its own process with `settings` on top and `connection`'s lines in its
/// one connection; the process and its base URL.
pub async fn relay(
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
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time `pid` has used, user and system, from `/proc/{pid}/stat`.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

/// A `redis-server` of the tool's own on a free port; the process and its URL.
pub async fn own_redis() -> (Process, String) {
    let port = port_of(&free_addr());
    let process = redis_node(port, &[]);
    until_listening(port).await;
    (process, format!("redis://127.0.0.1:{port}/"))
}

/// Where the relays keep sessions: `--store memory|redis|cluster` (memory: one instance only).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    Redis,
    Cluster,
}

impl Store {
    pub fn from_args(args: &[String], default: Store) -> Store {
        match args.windows(2).find(|w| w[0] == "--store").map(|w| w[1].as_str()) {
            Some("memory") => Store::Memory,
            Some("redis") => Store::Redis,
            Some("cluster") => Store::Cluster,
            Some(other) => panic!("--store {other}: memory, redis or cluster"),
            None => default,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis => "Redis",
            Store::Cluster => "a Redis Cluster (3 masters + 3 replicas)",
        }
    }

    /// Starts the store the tool owns; its processes and the relays' `redis_url` line.
    pub async fn start(self) -> (Vec<Process>, String) {
        match self {
            Store::Memory => (Vec::new(), String::new()),
            Store::Redis => {
                let (process, url) = own_redis().await;
                (vec![process], format!("redis_url = \"{url}\""))
            }
            Store::Cluster => {
                let (processes, url) = own_cluster().await;
                (processes, format!("redis_url = \"{url}\""))
            }
        }
    }
}

fn redis_node(port: u16, args: &[&str]) -> Process {
    Process(
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
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed"),
    )
}

async fn until_listening(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server on port {port} never listened");
}

/// A Redis Cluster of the tool's own: six nodes, three masters with a replica each; the
/// processes and the `redis+cluster://` URL.
pub async fn own_cluster() -> (Vec<Process>, String) {
    let dir = std::env::temp_dir().join(format!("qrlogin-load-cluster-{}", std::process::id()));
    let mut processes = Vec::new();
    let mut nodes = Vec::new();
    // Client and bus ports for six nodes, held together while chosen so none comes twice.
    let held: Vec<TcpListener> = (0..12)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held.iter().map(|l| l.local_addr().unwrap().port()).collect();
    drop(held);
    for pair in ports.chunks(2) {
        let (port, bus_port) = (pair[0], pair[1]);
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let config = node_dir.join("nodes.conf");
        processes.push(redis_node(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config.to_str().unwrap(),
                // A replica's full sync writes an RDB file in the node's directory.
                "--dir",
                node_dir.to_str().unwrap(),
                // The bus port is the client port + 10 000 unless given: past 65 535 for half
                // the ephemeral range.
                "--cluster-port",
                &bus_port.to_string(),
            ],
        ));
        nodes.push(format!("127.0.0.1:{port}"));
    }
    for node in &nodes {
        until_listening(port_of(node)).await;
    }
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli is not installed");
    assert!(
        created.status.success(),
        "redis-cli could not create the cluster: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    for node in &nodes {
        let client = redis::Client::open(format!("redis://{node}/")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let started = Instant::now();
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster never formed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (processes, format!("redis+cluster://{}", nodes.join(",")))
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}
