//! The Redis store, for many relay instances, on one server or a Redis Cluster (`link`). A
//! session is a hash `{prefix}session:{<id>}` holding its version `v` and JSON `d`; changes are
//! a Lua compare-and-set that also publishes the new record (`feed`: on one channel for one
//! server, on the session's own shard channel on a cluster). Keys other than a session's carry
//! no hash tag, so pools, locks and limit counters spread over a cluster's slots by name.

mod feed;
mod link;

pub use link::redact_url;

use super::{FeedItem, STORE_TIMEOUT, StoreError, Versioned};
use crate::metrics::Metrics;
use crate::session::{LoginSession, SceneId, unix_now};
use feed::{ClusterFeed, ServerFeed};
use link::{Link, Subscriber};
use redis::{AsyncCommands, Script};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', '0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// INSERT, if the value at KEYS[2] (in the session's slot) is still there: it gets ARGV[3]
/// more seconds. 2: the value is gone, nothing stored.
const INSERT_KEEPING: &str = r"
if redis.call('EXPIRE', KEYS[2], ARGV[3]) == 0 then return 2 end
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

const PUSH_QUEUE: &str = r"
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1";

/// ARGV[7] is `PUBLISH` (one server) or `SPUBLISH` (a cluster: the channel is in the
/// session's slot, so the script touches one slot only).
const COMPARE_AND_SET: &str = r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call(ARGV[7], ARGV[5], ARGV[6])
return 1";

#[derive(Clone)]
pub struct RedisStore {
    /// Commands: this worker's own link (see `for_worker`), or the instance's.
    conn: Link,
    /// The instance's link, which on a cluster carries the sharded subscriptions.
    events: Link,
    /// Where the Redis is, to open a worker's link.
    url: Arc<str>,
    ca_pem: Option<Arc<[u8]>>,
    /// Taken by the one `subscribe` call.
    subscriber: Arc<Mutex<Option<Subscriber>>>,
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
    insert_keeping: Script,
    compare_and_set: Script,
    count: Script,
    delete_if: Script,
    push_queue: Script,
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// An insert script's answer: 1 stored, 2 not stored (what it depended on is gone), 0 the id
/// is taken.
fn inserted_or_taken(answer: i64) -> Result<bool, StoreError> {
    match answer {
        0 => Err(StoreError("session id already exists".into())),
        answer => Ok(answer == 1),
    }
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
        let (conn, subscriber) = link::open(url, ca_pem.clone()).await?;
        let store = Self {
            events: conn.clone(),
            conn,
            url: url.into(),
            ca_pem: ca_pem.map(Into::into),
            subscriber: Arc::new(Mutex::new(Some(subscriber))),
            prefix: prefix.into(),
            linger_secs,
            scripts: Arc::new(Scripts {
                insert: Script::new(INSERT),
                insert_keeping: Script::new(INSERT_KEEPING),
                compare_and_set: Script::new(COMPARE_AND_SET),
                count: Script::new(COUNT),
                delete_if: Script::new(DELETE_IF),
                push_queue: Script::new(PUSH_QUEUE),
            }),
            feed_up: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        store.ping().await?;
        Ok(store)
    }

    /// The same store with commands on a link of their own, opened on the calling thread: the
    /// connection's task then runs where the requests do (an actix worker), and a Redis call is
    /// not two wake-ups of another thread. If it cannot be opened now, the shared link serves.
    pub async fn for_worker(&self) -> Self {
        match link::open_commands(&self.url, self.ca_pem.as_deref().map(<[u8]>::to_vec)).await {
            Ok(conn) => Self { conn, ..self.clone() },
            Err(e) => {
                tracing::warn!(error = %e, "a worker's own redis link cannot be opened; it shares the instance's");
                self.clone()
            }
        }
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

    fn on_cluster(&self) -> bool {
        matches!(self.events, Link::Cluster(_))
    }

    /// Where a session's changes are published: one channel for everything on one server; on
    /// a cluster, the session's own shard channel, in its slot.
    fn events_channel(&self, id: &SceneId) -> String {
        if self.on_cluster() {
            format!("{}events:{{{id}}}", self.prefix)
        } else {
            self.server_channel()
        }
    }

    /// Sharded on a cluster, so only the channel's shard carries a message.
    fn publish_command(&self) -> &'static str {
        if self.on_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// One server's channel for every event.
    fn server_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// A cluster's shard channel for "the connections changed" (rare: admin changes).
    fn connections_channel(&self) -> String {
        format!("{}connections", self.prefix)
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
        inserted_or_taken(inserted).map(|_| ())
    }

    /// [`insert`](Self::insert) if value `key` (whose key carries the session's hash tag) is
    /// still stored, giving it `ttl_secs` more; `false` when it is gone.
    pub async fn insert_keeping(
        &self,
        session: &LoginSession,
        key: &str,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(session).map_err(store_error)?;
        let mut conn = self.conn.clone();
        let mut call = self.scripts.insert_keeping.key(self.session_key(&session.id));
        call.key(self.value_key(key))
            .arg(json)
            .arg(self.ttl_ms(session))
            .arg(ttl_secs.max(1));
        let inserted: i64 = self.timed("insert", call.invoke_async(&mut conn)).await?;
        inserted_or_taken(inserted)
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
            .arg(self.events_channel(&session.id))
            .arg(event)
            .arg(self.publish_command());
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
        if items.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.push_queue.key(self.value_key(key));
        call.arg(ttl_secs.max(1)).arg(items);
        self.timed("push_queue", call.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    pub async fn pop_queue(&self, key: &str) -> Result<(Option<Vec<u8>>, usize), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.value_key(key);
        let mut pipe = redis::pipe();
        pipe.lpop(&key, None).llen(&key);
        self.timed("pop_queue", pipe.query_async(&mut conn)).await
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

    /// Tells every instance that the connections changed.
    pub async fn announce_connections_changed(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let channel = if self.on_cluster() {
            self.connections_channel()
        } else {
            self.server_channel()
        };
        let mut publish = redis::cmd(self.publish_command());
        publish.arg(channel).arg(super::CONNECTIONS_CHANGED);
        self.timed("publish", publish.query_async::<()>(&mut conn)).await
    }

    /// Starts carrying `id`'s events to this instance. On a cluster that is a sharded
    /// subscription to the session's channel (confirmed before this returns, so nothing
    /// committed afterwards is missed); one server's channel already carries everything.
    pub async fn listen(&self, id: &SceneId) -> Result<(), StoreError> {
        match self.events.clone() {
            Link::Cluster(mut conn) => {
                self.timed("listen", conn.ssubscribe(self.events_channel(id)))
                    .await
            }
            Link::Single(_) => Ok(()),
        }
    }

    /// Stops carrying `id`'s events here (the last browser waiting for it left).
    pub async fn stop_listening(&self, id: &SceneId) -> Result<(), StoreError> {
        match self.events.clone() {
            Link::Cluster(mut conn) => {
                self.timed("stop_listening", conn.sunsubscribe(self.events_channel(id)))
                    .await
            }
            Link::Single(_) => Ok(()),
        }
    }

    /// Whether browsers must `listen` for their sessions' events (a cluster).
    pub fn listens_per_session(&self) -> bool {
        self.on_cluster()
    }

    /// This instance's event feed; the first call only.
    pub async fn subscribe(&self) -> Result<EventFeed, StoreError> {
        let subscriber = self
            .subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| StoreError("this store's events are already followed".into()))?;
        let up = self.feed_up.clone();
        match subscriber {
            Subscriber::Single(client) => {
                let channel = self.server_channel();
                let link = feed::open_subscription(&client, &channel).await?;
                Ok(EventFeed::Server(ServerFeed::new(client, channel, link, up)))
            }
            Subscriber::Cluster(pushes, mut conn) => {
                self.timed("listen", conn.ssubscribe(self.connections_channel()))
                    .await?;
                Ok(EventFeed::Cluster(ClusterFeed::new(pushes, up)))
            }
        }
    }
}

/// This instance's events from Redis.
pub enum EventFeed {
    Server(ServerFeed),
    Cluster(ClusterFeed),
}

impl EventFeed {
    pub async fn next(&mut self) -> FeedItem {
        match self {
            EventFeed::Server(feed) => feed.next().await,
            EventFeed::Cluster(feed) => feed.next().await,
        }
    }
}
