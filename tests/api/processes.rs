//! Real processes the fault tests break on purpose: a `redis-server` of a test's own (stopped
//! and restarted, or speaking TLS), a TCP proxy that can go silent, and the relay binary
//! started with a config file (so it can be sent SIGTERM).

use crate::helpers::PATIENCE;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports (held together while chosen, so none comes twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "qrlogin-{name}-{}-{}",
        std::process::id(),
        qrlogin_relay::token::random_base62(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `check` holds, polling (a condition, never a fixed sleep); panics after PATIENCE.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` owned by one test: its own port and directory, killed when dropped. It
/// appends every write to disk before answering, so a kill and restart loses nothing.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("redis");
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .map(String::from)
            .to_vec();
        Self::launch(port, dir, args)
    }

    /// A server speaking TLS only, with a certificate for `localhost` from a private CA;
    /// returns it and the CA's PEM file.
    pub fn start_tls() -> (Self, PathBuf) {
        let port = free_port();
        let dir = temp_dir("redis-tls");
        let made = Command::new("sh")
            .arg("-c")
            .arg(
                "set -e; ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; \
                 openssl req -x509 $ec -keyout ca.key -out ca.crt -subj /CN=test-ca -days 2; \
                 openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost; \
                 printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext; \
                 openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                   -out server.crt -days 2 -extfile san.ext",
            )
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is not installed: apt-get install openssl");
        assert!(made.success(), "openssl could not make the test certificates");
        let file = |name: &str| dir.join(name).display().to_string();
        let args = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let ca = dir.join("ca.crt");
        (Self::launch(port, dir, args), ca)
    }

    fn launch(port: u16, dir: PathBuf, mut args: Vec<String>) -> Self {
        args.extend(
            [
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ]
            .map(String::from),
        );
        args.push(dir.display().to_string());
        let mut server = Self {
            port,
            dir,
            args,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once, as a crash or a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port and data, and waits until it listens.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server");
        self.child = Some(child);
        let listening = (0..500).any(|_| {
            let up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(20));
            }
            up
        });
        assert!(listening, "redis-server on port {} did not start", self.port);
    }
}

/// A Redis Cluster of a test's own on loopback: three masters, each with one replica, that
/// fails a dead master over to its replica within a few seconds.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let ports = free_ports(12);
        let nodes: Vec<RedisServer> = ports
            .chunks(2)
            .map(|pair| {
                let (port, bus_port) = (pair[0], pair[1]);
                let args = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // The bus port is the client port + 10 000 unless given: past 65 535
                    // for half the ephemeral range.
                    "--cluster-port",
                    &bus_port.to_string(),
                ]
                .map(String::from)
                .to_vec();
                RedisServer::launch(port, temp_dir("redis-cluster"), args)
            })
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is not installed: apt-get install redis-tools");
        assert!(created.success(), "redis-cli could not create the cluster");
        let cluster = Self { nodes };
        until(
            "the cluster is formed: every node ok, every replica in sync",
            || {
                let formed = cluster.formed();
                async move { formed }
            },
        )
        .await;
        cluster
    }

    /// `redis+cluster://` naming the nodes (all of them, so the relay finds the cluster even
    /// with some down).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    fn query(&self, node: usize, cmd: &redis::Cmd) -> Option<redis::Value> {
        let client = redis::Client::open(self.nodes[node].url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        cmd.query(&mut conn).ok()
    }

    fn info(&self, node: usize, cmd: &redis::Cmd) -> String {
        self.query(node, cmd)
            .and_then(|v| redis::from_redis_value::<String>(v).ok())
            .unwrap_or_default()
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&n| self.nodes[n].child.is_some())
    }

    /// Every live node reports the cluster ok, and every live replica is linked to a master and
    /// holds everything it was sent.
    fn formed(&self) -> bool {
        self.alive().all(|n| {
            let ok = self
                .info(n, redis::cmd("CLUSTER").arg("INFO"))
                .contains("cluster_state:ok");
            let replication = self.info(n, redis::cmd("INFO").arg("replication"));
            let replica_in_sync = !replication.contains("role:slave")
                || replication.contains("master_link_status:up")
                    && !replication.contains("master_sync_in_progress:1");
            ok && replica_in_sync
        })
    }

    /// The live master serving `key`'s slot (an index into `nodes`).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let slot: i64 = redis::from_redis_value(self.query(
            self.alive().next()?,
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )?)
        .ok()?;
        self.alive().find(|&n| {
            let nodes = self.info(n, redis::cmd("CLUSTER").arg("NODES"));
            nodes.lines().any(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.get(2).is_some_and(|flags| flags.contains("myself") && flags.contains("master"))
                    && fields.iter().skip(8).any(|range| {
                        let (from, to) = range.split_once('-').unwrap_or((range, range));
                        matches!((from.parse::<i64>(), to.parse::<i64>()), (Ok(from), Ok(to)) if (from..=to).contains(&slot))
                    })
            })
        })
    }

    /// Waits until the replicas of `master` hold every write it made (replication is
    /// asynchronous: a master that dies before that takes its last writes with it).
    async fn until_replicated(&self, master: usize) {
        until("the replica has every write of its master", || {
            let replication = self.info(master, redis::cmd("INFO").arg("replication"));
            let offset = |text: &str, field: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let master_offset = offset(&replication, "master_repl_offset:");
            let replicas_offset = replication
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
                .filter_map(|v| v.parse::<u64>().ok())
                .min();
            let done = master_offset.is_some() && master_offset == replicas_offset;
            async move { done }
        })
        .await;
    }

    /// Kills the master serving `key`'s slot (a crash), once its replica holds everything it
    /// wrote; returns when the replica has taken over the slot.
    pub async fn fail_over_master_of(&mut self, key: &str) {
        let master = self.master_of(key).expect("a master serves the key");
        self.until_replicated(master).await;
        self.nodes[master].kill();
        until("a replica took over the dead master's slots", || {
            let taken_over = self.master_of(key).is_some_and(|n| n != master) && self.formed();
            async move { taken_over }
        })
        .await;
    }

    /// How many subscribers the live master of `channel`'s slot has on that shard channel.
    pub fn shard_subscribers(&self, channel: &str) -> i64 {
        let Some(master) = self.master_of(channel) else {
            return -1;
        };
        let answer = self.query(master, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel));
        answer
            .and_then(|v| redis::from_redis_value::<(String, i64)>(v).ok())
            .map_or(-1, |(_, count)| count)
    }

    /// Classic (cluster-wide) subscribers of `channel`, on any node.
    pub fn classic_subscribers(&self, channel: &str) -> i64 {
        self.alive()
            .filter_map(|n| self.query(n, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)))
            .filter_map(|v| redis::from_redis_value::<(String, i64)>(v).ok())
            .map(|(_, count)| count)
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One proxied connection: whether it carries a subscription, and whether it went silent.
#[derive(Default)]
struct Link {
    subscriber: AtomicBool,
    silent: AtomicBool,
}

/// A TCP proxy on loopback. New connections go to the first backend that accepts (so a
/// stopped instance's traffic moves to the next one, as behind a load balancer); Redis
/// subscriber connections can be made to go silent (a half-open link: nothing arrives,
/// nothing is closed), the open ones and any opened while the silence lasts.
pub struct TcpProxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    silence: Arc<AtomicBool>,
}

impl TcpProxy {
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let silence = Arc::new(AtomicBool::new(false));
        let registry = links.clone();
        let silencing = silence.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut upstream = None;
                for backend in &backends {
                    if let Ok(stream) = tokio::net::TcpStream::connect(backend).await {
                        upstream = Some(stream);
                        break;
                    }
                }
                let Some(upstream) = upstream else { continue };
                let link = Arc::new(Link::default());
                registry.lock().unwrap().push(link.clone());
                let (client_read, client_write) = client.into_split();
                let (upstream_read, upstream_write) = upstream.into_split();
                tokio::spawn(pump(
                    client_read,
                    upstream_write,
                    link.clone(),
                    Some(silencing.clone()),
                ));
                tokio::spawn(pump(upstream_read, client_write, link, None));
            }
        });
        Self { addr, links, silence }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/", self.addr)
    }

    /// Every open subscriber connection, and every one opened until `end_silence`, stops
    /// carrying bytes, both ways, without closing; returns how many were open.
    pub fn silence_subscribers(&self) -> usize {
        self.silence.store(true, Ordering::SeqCst);
        let links = self.links.lock().unwrap();
        links
            .iter()
            .filter(|link| link.subscriber.load(Ordering::SeqCst))
            .inspect(|link| link.silent.store(true, Ordering::SeqCst))
            .count()
    }

    /// New subscriber connections work again (the silenced ones stay silent).
    pub fn end_silence(&self) {
        self.silence.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction of a link; a silent link swallows what it reads. `silence` is given
/// for the client's direction, where subscriptions are recognised.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    silence: Option<Arc<AtomicBool>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let bytes = &buffer[..read];
        if let Some(silence) = &silence
            && bytes.windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            link.subscriber.store(true, Ordering::SeqCst);
            if silence.load(Ordering::SeqCst) {
                link.silent.store(true, Ordering::SeqCst);
            }
        }
        if link.silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(bytes).await.is_err() {
            break;
        }
    }
    if !link.silent.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    }
}

/// A `serve` config on the sandbox mini-program: a master key written into `dir`, `settings`
/// at the top, and one connection with `connection`'s lines (its identifier, name, …) added.
pub fn serve_config(dir: &Path, settings: &str, connection: &str) -> String {
    use qrlogin_relay::sandbox::{SANDBOX_APP_SECRET, SANDBOX_APPID};
    let master_key = dir.join("master.key");
    std::fs::write(&master_key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    format!(
        "master_key_file = \"{}\"\n{settings}\n\n[[connections]]\nappid = \"{SANDBOX_APPID}\"\n\
         app_secret = \"{SANDBOX_APP_SECRET}\"\nbackend_secret = \"sandbox\"\n{connection}\n",
        master_key.display()
    )
}

/// The relay binary, `serve --config FILE`, on a port of its own; its log (JSON lines) goes
/// to `log`.
pub struct RelayProcess {
    child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    pub async fn start(config: &str, dir: &Path, name: &str, port: u16) -> Self {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, format!("listen = \"127.0.0.1:{port}\"\n{config}")).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
            .args(["serve", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("QRLOGIN_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let http = reqwest::Client::new();
        until(&format!("relay {name} answers /readyz"), || {
            let request = http.get(format!("http://{addr}/readyz")).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "the relay did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
