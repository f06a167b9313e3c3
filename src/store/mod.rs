//! Where login sessions live: one `SessionStore` over two back ends with the same behaviour —
//! `memory` for one process, `redis` for many instances. Every change is a compare-and-set on
//! the record's version and publishes one event, which `push` fans out to waiting browsers.

pub mod memory;
pub mod redis;

use crate::session::{LoginSession, SceneId, TransitionError, unix_now};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Every store call gives up after this long.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A session with the version its record is at; each committed change adds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub session: LoginSession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    NotFound,
    Refused(TransitionError),
    Store(StoreError),
}

impl From<StoreError> for UpdateError {
    fn from(e: StoreError) -> Self {
        UpdateError::Store(e)
    }
}

/// A held store lock: its key and the random value that proves who holds it.
#[derive(Debug)]
pub struct Lock {
    key: String,
    holder: String,
}

/// What the event feed yields: a changed session, or "events may have been missed, re-read".
#[derive(Debug)]
pub enum FeedItem {
    Changed(Box<Versioned>),
    Resync,
    /// The connections (tenants) changed on some instance: re-read them.
    ConnectionsChanged,
    /// The store ended this instance's subscription to one session's events (a Redis Cluster
    /// moving its slot, or failing its node over): listen again if a browser here waits for it.
    Unsubscribed(SceneId),
}

/// What is published when the connections change (on the sessions' channel).
const CONNECTIONS_CHANGED: &str = r#"{"connections_changed":true}"#;

pub enum EventFeed {
    Memory(memory::MemoryFeed),
    Redis(redis::EventFeed),
}

impl EventFeed {
    pub async fn next(&mut self) -> FeedItem {
        match self {
            EventFeed::Memory(feed) => feed.next().await,
            EventFeed::Redis(feed) => feed.next().await,
        }
    }
}

#[derive(Clone)]
pub enum SessionStore {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            SessionStore::Memory($store) => $call,
            SessionStore::Redis($store) => $call,
        }
    };
}

impl SessionStore {
    /// The in-process store; `linger_secs` keeps finished records readable a while.
    pub fn memory(linger_secs: u64) -> Self {
        SessionStore::Memory(memory::MemoryStore::new(linger_secs))
    }

    /// Connects to Redis (failing now, with the reason, if it cannot be reached); `ca_pem`
    /// holds the roots a `rediss://` server must chain to (the system's when `None`); every
    /// call is timed in `metrics`.
    pub async fn redis(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        prefix: &str,
        linger_secs: u64,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, StoreError> {
        Ok(SessionStore::Redis(
            redis::RedisStore::connect(url, ca_pem, prefix, linger_secs, metrics).await?,
        ))
    }

    /// This store for one actix worker: on Redis, with a link of the worker's own (see
    /// [`redis::RedisStore::for_worker`]); the memory store is the same one.
    pub async fn for_worker(&self) -> Self {
        match self {
            SessionStore::Memory(_) => self.clone(),
            SessionStore::Redis(store) => SessionStore::Redis(store.for_worker().await),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SessionStore::Memory(_) => "memory",
            SessionStore::Redis(_) => "redis",
        }
    }

    /// Adds a new session; its id must not exist yet.
    pub async fn insert(&self, session: &LoginSession) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert(session).await)
    }

    /// Inserts a new session that takes over the pooled code stored under its id, giving the
    /// code `code_ttl_secs` more, in one step; `false` (nothing stored) when that code is gone.
    pub async fn insert_with_pooled_code(
        &self,
        session: &LoginSession,
        code_ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let code = code_key(&session.id);
        match self {
            SessionStore::Memory(s) => {
                if !s.keep_value(&code, code_ttl_secs).await? {
                    return Ok(false);
                }
                s.insert(session).await.map(|()| true)
            }
            SessionStore::Redis(s) => s.insert_keeping(session, &code, code_ttl_secs).await,
        }
    }

    /// The session, with a due expiry applied (and published) first.
    pub async fn get(&self, id: &SceneId) -> Result<Option<Versioned>, StoreError> {
        loop {
            let Some(mut current) = self.load(id).await? else {
                return Ok(None);
            };
            if !current.session.expire_if_due(unix_now()) {
                return Ok(Some(current));
            }
            if let Some(stored) = self.compare_and_set(current.version, &current.session).await? {
                return Ok(Some(stored));
            }
        }
    }

    /// Applies `change` atomically: read, change, compare-and-set, re-read on a lost race.
    /// `change` must leave the session untouched when it refuses. A due expiry is applied and
    /// stored first, so every change sees (and the world is told of) an expired session.
    pub async fn update<T>(
        &self,
        id: &SceneId,
        change: impl FnMut(&mut LoginSession) -> Result<T, TransitionError>,
    ) -> Result<(Versioned, T), UpdateError> {
        self.change(id, None, change).await
    }

    /// [`update`](Self::update) starting from a record the caller has just read (one read
    /// fewer; if another change came in between, the compare-and-set says so and it re-reads).
    pub async fn update_from<T>(
        &self,
        read: Versioned,
        change: impl FnMut(&mut LoginSession) -> Result<T, TransitionError>,
    ) -> Result<(Versioned, T), UpdateError> {
        let id = read.session.id.clone();
        self.change(&id, Some(read), change).await
    }

    async fn change<T>(
        &self,
        id: &SceneId,
        mut read: Option<Versioned>,
        mut change: impl FnMut(&mut LoginSession) -> Result<T, TransitionError>,
    ) -> Result<(Versioned, T), UpdateError> {
        loop {
            let mut current = match read.take() {
                Some(current) => current,
                None => self.load(id).await?.ok_or(UpdateError::NotFound)?,
            };
            let expired = current.session.expire_if_due(unix_now());
            let outcome = change(&mut current.session);
            if let (Err(refusal), false) = (&outcome, expired) {
                return Err(UpdateError::Refused(*refusal));
            }
            if let Some(stored) = self.compare_and_set(current.version, &current.session).await? {
                return outcome.map(|t| (stored, t)).map_err(UpdateError::Refused);
            }
        }
    }

    async fn load(&self, id: &SceneId) -> Result<Option<Versioned>, StoreError> {
        dispatch!(self, s => s.load(id).await)
    }

    /// Writes `session` if the record is still at `expected`; `None` when another change won.
    async fn compare_and_set(
        &self,
        expected: u64,
        session: &LoginSession,
    ) -> Result<Option<Versioned>, StoreError> {
        let mut session = session.clone();
        session.changed_at_us = Some(crate::metrics::unix_micros());
        dispatch!(self, s => s.compare_and_set(expected, &session).await)
    }

    /// Keeps a session's code image until the session's deadline.
    pub async fn put_code(&self, id: &SceneId, png: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_value(&code_key(id), png, ttl_secs).await)
    }

    pub async fn get_code(&self, id: &SceneId) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.get_value(&code_key(id)).await)
    }

    /// Keeps the JPEG variant of a session's code, made once, until the session's deadline.
    pub async fn put_code_jpeg(&self, id: &SceneId, jpeg: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_value(&code_jpeg_key(id), jpeg, ttl_secs).await)
    }

    pub async fn get_code_jpeg(&self, id: &SceneId) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.get_value(&code_jpeg_key(id)).await)
    }

    /// A shared value with a lifetime (WeChat access tokens).
    pub async fn put_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_value(key, value, ttl_secs).await)
    }

    /// Stores a value only if the key holds none; returns whether it did (of concurrent
    /// callers, one does).
    pub async fn put_new_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.put_new_value(key, value, ttl_secs).await)
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.get_value(key).await)
    }

    /// Reads and deletes a value in one step: of concurrent callers, one gets it.
    pub async fn take_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.take_value(key).await)
    }

    /// A record (JSON) with a lifetime.
    pub async fn put_record<T: serde::Serialize>(
        &self,
        key: &str,
        record: &T,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(record).map_err(|e| StoreError(format!("cannot encode a record: {e}")))?;
        self.put_value(key, &bytes, ttl_secs).await
    }

    /// A record, if the key holds one that reads as `T`.
    pub async fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .get_value(key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    /// [`Self::take_value`] for a record: of concurrent callers, one gets it.
    pub async fn take_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .take_value(key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_value(key).await)
    }

    /// Appends to a shared queue (the code pools); the queue lives `ttl_secs` past its last push.
    pub async fn push_queue(&self, key: &str, items: &[Vec<u8>], ttl_secs: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.push_queue(key, items, ttl_secs).await)
    }

    /// Takes the oldest item of a shared queue (each item goes to exactly one caller), with how
    /// many items were left just after (in the same round trip; others may have taken more since).
    pub async fn pop_queue(&self, key: &str) -> Result<(Option<Vec<u8>>, usize), StoreError> {
        dispatch!(self, s => s.pop_queue(key).await)
    }

    pub async fn queue_len(&self, key: &str) -> Result<usize, StoreError> {
        dispatch!(self, s => s.queue_len(key).await)
    }

    /// Counts one more event under `key` in a window of `window_secs` (fixed windows shared by
    /// every instance); returns the count so far in this window.
    pub async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count(key, window_secs).await)
    }

    /// Takes a lock shared by every instance for `ttl_ms` unless someone holds it. Only the
    /// holder can release it early (`unlock`); otherwise it lapses.
    pub async fn try_lock(&self, key: &str, ttl_ms: u64) -> Result<Option<Lock>, StoreError> {
        let holder = crate::token::random_base62(22);
        let taken =
            dispatch!(self, s => s.put_new_value(key, holder.as_bytes(), ttl_ms.div_ceil(1000)).await)?;
        Ok(taken.then(|| Lock {
            key: key.to_owned(),
            holder,
        }))
    }

    /// Releases a lock if this holder still has it (compare-and-delete): a lock that lapsed and
    /// was taken by someone else is left to them.
    pub async fn unlock(&self, lock: Lock) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_value_if(&lock.key, lock.holder.as_bytes()).await)
    }

    /// The stream of committed changes. Subscribes before returning, so nothing committed after
    /// this call returns is missed.
    pub async fn subscribe(&self) -> Result<EventFeed, StoreError> {
        Ok(match self {
            SessionStore::Memory(s) => EventFeed::Memory(s.subscribe()),
            SessionStore::Redis(s) => EventFeed::Redis(s.subscribe().await?),
        })
    }

    /// Tells every instance that the connections changed. One process needs no telling.
    pub async fn announce_connections_changed(&self) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(_) => Ok(()),
            SessionStore::Redis(s) => s.announce_connections_changed().await,
        }
    }

    /// Starts carrying `id`'s events to this instance's hub. Call it when a browser starts
    /// waiting, before reading the session, so nothing committed in between is missed. Only a
    /// cluster has anything to do: it subscribes per session.
    pub async fn listen(&self, id: &SceneId) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(_) => Ok(()),
            SessionStore::Redis(s) => s.listen(id).await,
        }
    }

    /// The last browser waiting here for `id` left.
    pub async fn stop_listening(&self, id: &SceneId) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(_) => Ok(()),
            SessionStore::Redis(s) => s.stop_listening(id).await,
        }
    }

    /// Whether `listen` subscribes per session (so the hub must also stop listening).
    pub fn listens_per_session(&self) -> bool {
        match self {
            SessionStore::Memory(_) => false,
            SessionStore::Redis(s) => s.listens_per_session(),
        }
    }

    /// Ready to serve: the store answers and this instance hears its events.
    pub async fn ready(&self) -> Result<(), StoreError> {
        match self {
            SessionStore::Memory(_) => Ok(()),
            SessionStore::Redis(s) => s.ready().await,
        }
    }
}

fn code_key(id: &SceneId) -> String {
    format!("code:{{{id}}}")
}

fn code_jpeg_key(id: &SceneId) -> String {
    format!("{}:jpeg", code_key(id))
}
