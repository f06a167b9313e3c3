//! The Redis store, for many relay instances. A session is a hash `{prefix}session:{<id>}`
//! holding its version `v` and JSON `d`; changes are a Lua compare-and-set that also publishes
//! the new record on `{prefix}events`. Each instance holds one subscription to that channel,
//! pinged every few seconds so a link that went silent (a half-open TCP connection) is noticed,
//! reopened and followed by a resync. `rediss://` speaks TLS (rustls).

use super::{FeedItem, STORE_TIMEOUT, StoreError, Versioned};
use crate::metrics::Metrics;
use crate::session::{LoginSession, SceneId, unix_now};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::io::tcp::TcpSettings;
use redis::{AsyncCommands, IntoConnectionInfo, Script};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the event subscription proves it is alive with a PING round trip.
const FEED_CHECK_EVERY: Duration = Duration::from_secs(3);

const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', '0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n";

const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const COMPARE_AND_SET: &str = r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1";

#[derive(Clone)]
pub struct RedisStore {
    /// Shared: a client with TLS settings is large, and only the subscription uses it.
    client: Arc<redis::Client>,
    conn: ConnectionManager,
    prefix: Arc<str>,
    linger_secs: u64,
    scripts: Arc<Scripts>,
    /// Whether this instance's event subscription is open and answering.
    feed_up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// The Lua scripts, loaded once per store.
struct Scripts {
    insert: Script,
    compare_and_set: Script,
    count: Script,
    delete_if: Script,
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Every call is bounded: a slow Redis is an error, not a hung request.
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(STORE_TIMEOUT, call).await {
        Ok(result) => result.map_err(store_error),
        Err(_) => Err(StoreError("redis did not answer in time".into())),
    }
}

impl RedisStore {
    /// `ca_pem`: the roots a `rediss://` server's certificate must chain to (the system's when
    /// `None`).
    pub async fn connect(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        prefix: &str,
        linger_secs: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let client = open_client(url, ca_pem).map_err(|e| StoreError(format!("bad redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(STORE_TIMEOUT, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| StoreError(format!("redis at {} did not answer in time", redact_url(url))))?
            .map_err(|e| StoreError(format!("cannot connect to redis at {}: {e}", redact_url(url))))?;
        let store = Self {
            client: Arc::new(client),
            conn,
            prefix: prefix.into(),
            linger_secs,
            scripts: Arc::new(Scripts {
                insert: Script::new(INSERT),
                compare_and_set: Script::new(COMPARE_AND_SET),
                count: Script::new(COUNT),
                delete_if: Script::new(DELETE_IF),
            }),
            feed_up: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        store.ping().await?;
        Ok(store)
    }

    /// A bounded call, timed under `op` in `qrlogin_store_call_seconds`.
    async fn timed<T>(
        &self,
        op: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = bounded(call).await;
        self.metrics.store_latency.observe(&[op], started.elapsed());
        result
    }

    fn session_key(&self, id: &SceneId) -> String {
        // The hash tag keeps every key of one session on one Redis Cluster slot.
        format!("{}session:{{{id}}}", self.prefix)
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn ttl_ms(&self, session: &LoginSession) -> u64 {
        session
            .keep_until(self.linger_secs)
            .saturating_sub(unix_now())
            .max(1)
            * 1000
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed("ping", redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }

    /// Ready to serve: Redis answers and the event subscription is up.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.ping().await?;
        if self.feed_up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(StoreError("the event subscription is down; reconnecting".into()))
        }
    }

    pub async fn insert(&self, session: &LoginSession) -> Result<(), StoreError> {
        let json = serde_json::to_string(session).map_err(store_error)?;
        let mut conn = self.conn.clone();
        let mut call = self.scripts.insert.key(self.session_key(&session.id));
        call.arg(json).arg(self.ttl_ms(session));
        let inserted: i64 = self.timed("insert", call.invoke_async(&mut conn)).await?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError("session id already exists".into()))
        }
    }

    pub async fn load(&self, id: &SceneId) -> Result<Option<Versioned>, StoreError> {
        let mut conn = self.conn.clone();
        let (version, json): (Option<u64>, Option<String>) = self
            .timed(
                "load",
                redis::cmd("HMGET")
                    .arg(self.session_key(id))
                    .arg("v")
                    .arg("d")
                    .query_async(&mut conn),
            )
            .await?;
        match (version, json) {
            (Some(version), Some(json)) => {
                let session = serde_json::from_str(&json).map_err(store_error)?;
                Ok(Some(Versioned { version, session }))
            }
            _ => Ok(None),
        }
    }

    pub async fn compare_and_set(
        &self,
        expected: u64,
        session: &LoginSession,
    ) -> Result<Option<Versioned>, StoreError> {
        let stored = Versioned {
            version: expected + 1,
            session: session.clone(),
        };
        let json = serde_json::to_string(session).map_err(store_error)?;
        let event = serde_json::to_string(&Versioned {
            version: stored.version,
            session: session.for_event(),
        })
        .map_err(store_error)?;
        let mut conn = self.conn.clone();
        let mut call = self.scripts.compare_and_set.key(self.session_key(&session.id));
        call.arg(expected)
            .arg(stored.version)
            .arg(json)
            .arg(self.ttl_ms(session))
            .arg(self.channel())
            .arg(event);
        let written: i64 = self
            .timed("compare_and_set", call.invoke_async(&mut conn))
            .await?;
        Ok((written == 1).then_some(stored))
    }

    pub async fn put_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed(
            "put_value",
            conn.set_ex::<_, _, ()>(self.value_key(key), value, ttl_secs.max(1)),
        )
        .await
    }

    pub async fn put_new_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = self
            .timed(
                "put_new_value",
                redis::cmd("SET")
                    .arg(self.value_key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl_secs.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        self.timed("get_value", conn.get(self.value_key(key))).await
    }

    pub async fn take_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        self.timed(
            "take_value",
            redis::cmd("GETDEL")
                .arg(self.value_key(key))
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed("delete_value", conn.del::<_, ()>(self.value_key(key)))
            .await
    }

    pub async fn push_queue(&self, key: &str, items: &[Vec<u8>], ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.value_key(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(&key, items)
            .ignore()
            .expire(&key, ttl_secs.max(1) as i64)
            .ignore();
        self.timed("push_queue", pipe.query_async::<()>(&mut conn)).await
    }

    pub async fn pop_queue(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        self.timed("pop_queue", conn.lpop(self.value_key(key), None))
            .await
    }

    pub async fn queue_len(&self, key: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        self.timed("queue_len", conn.llen(self.value_key(key))).await
    }

    pub async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.count.key(self.value_key(key));
        call.arg(window_secs.max(1));
        self.timed("count", call.invoke_async(&mut conn)).await
    }

    pub async fn delete_value_if(&self, key: &str, expected: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.delete_if.key(self.value_key(key));
        call.arg(expected);
        self.timed("delete_value_if", call.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    pub async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed("publish", conn.publish::<_, _, ()>(self.channel(), payload))
            .await
    }

    pub async fn subscribe(&self) -> Result<RedisFeed, StoreError> {
        let link = open_subscription(&self.client, &self.channel()).await?;
        self.feed_up.store(true, Ordering::Relaxed);
        Ok(RedisFeed {
            client: self.client.clone(),
            channel: self.channel(),
            link: Some(link),
            up: self.feed_up.clone(),
            check: tokio::time::interval_at(tokio::time::Instant::now() + FEED_CHECK_EVERY, FEED_CHECK_EVERY),
        })
    }
}

/// A client for `url`; TCP keepalive on, so a peer that vanished is noticed by the kernel too.
fn open_client(url: &str, ca_pem: Option<Vec<u8>>) -> redis::RedisResult<redis::Client> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let tcp = TcpSettings::default().set_nodelay(true).set_keepalive(keepalive);
    let info = url.into_connection_info()?.set_tcp_settings(tcp);
    match ca_pem {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(info),
    }
}

async fn open_subscription(
    client: &redis::Client,
    channel: &str,
) -> Result<(PubSubSink, PubSubStream), StoreError> {
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(channel)).await?;
    Ok(pubsub.split())
}

/// This instance's one subscription. When the connection drops, or stops answering its PING,
/// it reconnects and yields `Resync`, since events published meanwhile are lost.
pub struct RedisFeed {
    client: Arc<redis::Client>,
    channel: String,
    link: Option<(PubSubSink, PubSubStream)>,
    up: Arc<AtomicBool>,
    check: tokio::time::Interval,
}

impl RedisFeed {
    pub async fn next(&mut self) -> FeedItem {
        loop {
            let Some((sink, stream)) = self.link.as_mut() else {
                match open_subscription(&self.client, &self.channel).await {
                    Ok(link) => {
                        self.link = Some(link);
                        self.up.store(true, Ordering::Relaxed);
                        self.check.reset();
                        tracing::info!("redis event subscription reopened; resynchronising");
                        return FeedItem::Resync;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis event subscription failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            };
            let alive = tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        if let Some(item) = feed_item(&message) {
                            return item;
                        }
                        true
                    }
                    None => {
                        tracing::warn!("redis event subscription closed; reconnecting");
                        false
                    }
                },
                _ = self.check.tick() => match bounded(sink.ping::<redis::Value>()).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "redis event subscription stopped answering; reconnecting");
                        false
                    }
                },
            };
            if !alive {
                self.link = None;
                self.up.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// What one published message means (`None`: unreadable, ignored).
fn feed_item(message: &redis::Msg) -> Option<FeedItem> {
    let payload = message.get_payload::<String>().unwrap_or_default();
    if payload == super::CONNECTIONS_CHANGED {
        return Some(FeedItem::ConnectionsChanged);
    }
    match serde_json::from_str::<Versioned>(&payload) {
        Ok(event) => Some(FeedItem::Changed(Box::new(event))),
        Err(_) => {
            tracing::warn!("ignoring an unreadable session event");
            None
        }
    }
}

/// A Redis URL for messages: any password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://[redacted]{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}
