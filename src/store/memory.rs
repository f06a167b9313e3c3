//! The in-process store: maps split into shards, each under its own mutex (compare-and-set is
//! a version check while the shard's lock is held), and a broadcast channel for events.
//!
//! Sharding is what keeps the relay responsive with hundreds of thousands of sessions: a lock
//! is held only for one shard's work, a shard's map doubles at 1/64 of the size the whole map
//! would (and moves boxes, not records), and expiry is swept shard by shard as each is used,
//! never across everything at once.

use super::{FeedItem, StoreError, Versioned};
use crate::session::{LoginSession, SceneId, unix_now};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

const EVENT_BUFFER: usize = 4096;
const SWEEP_EVERY_SECS: u64 = 10;
const SHARDS: usize = 64;

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Mutex<State>>,
    events: broadcast::Sender<Versioned>,
    linger_secs: u64,
}

/// One shard: the records whose key hashes to it.
#[derive(Default)]
struct State {
    /// Boxed, so growing the map moves pointers rather than whole records.
    sessions: HashMap<SceneId, Box<(Versioned, u64)>>,
    values: HashMap<String, (Vec<u8>, u64)>,
    queues: HashMap<String, VecDeque<Vec<u8>>>,
    /// Rate-limit counters: count and the end of their window.
    counters: HashMap<String, (u64, u64)>,
    last_sweep: u64,
}

impl State {
    /// Drops records past their keep-until time, at most every few seconds.
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep + SWEEP_EVERY_SECS {
            return;
        }
        self.last_sweep = now;
        self.sessions.retain(|_, record| record.1 > now);
        self.values.retain(|_, (_, keep_until)| *keep_until > now);
        self.counters.retain(|_, (_, until)| *until > now);
    }
}

impl MemoryStore {
    pub fn new(linger_secs: u64) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                events,
                linger_secs,
            }),
        }
    }

    /// The shard holding `key`, locked, swept first when its sweep is due.
    fn state(&self, key: &str) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.inner.shards[hasher.finish() as usize % SHARDS];
        let mut state = shard
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        state.sweep(unix_now());
        Ok(state)
    }

    pub async fn insert(&self, session: &LoginSession) -> Result<(), StoreError> {
        let mut state = self.state(session.id.as_str())?;
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError("session id already exists".into()));
        }
        let versioned = Versioned {
            version: 0,
            session: session.clone(),
        };
        state.sessions.insert(
            session.id.clone(),
            Box::new((versioned, session.keep_until(self.inner.linger_secs))),
        );
        Ok(())
    }

    pub async fn load(&self, id: &SceneId) -> Result<Option<Versioned>, StoreError> {
        let now = unix_now();
        let state = self.state(id.as_str())?;
        Ok(state
            .sessions
            .get(id)
            .filter(|record| record.1 > now)
            .map(|record| record.0.clone()))
    }

    pub async fn compare_and_set(
        &self,
        expected: u64,
        session: &LoginSession,
    ) -> Result<Option<Versioned>, StoreError> {
        let mut state = self.state(session.id.as_str())?;
        let Some(record) = state.sessions.get_mut(&session.id) else {
            return Ok(None);
        };
        let (current, keep_until) = &mut **record;
        if current.version != expected {
            return Ok(None);
        }
        *current = Versioned {
            version: expected + 1,
            session: session.clone(),
        };
        *keep_until = session.keep_until(self.inner.linger_secs);
        let stored = current.clone();
        drop(state);
        // No receiver (nobody waiting anywhere) is not an error.
        let _ = self.inner.events.send(Versioned {
            version: stored.version,
            session: stored.session.for_event(),
        });
        Ok(Some(stored))
    }

    pub async fn put_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let now = unix_now();
        self.state(key)?
            .values
            .insert(key.to_owned(), (value.to_vec(), now + ttl_secs));
        Ok(())
    }

    pub async fn put_new_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let mut state = self.state(key)?;
        if state.values.get(key).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        state
            .values
            .insert(key.to_owned(), (value.to_vec(), now + ttl_secs));
        Ok(true)
    }

    pub async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = unix_now();
        Ok(self
            .state(key)?
            .values
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone()))
    }

    pub async fn keep_value(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let mut state = self.state(key)?;
        Ok(match state.values.get_mut(key) {
            Some((_, until)) if *until > now => {
                *until = now + ttl_secs.max(1);
                true
            }
            _ => false,
        })
    }

    pub async fn take_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = unix_now();
        Ok(self
            .state(key)?
            .values
            .remove(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v))
    }

    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        self.state(key)?.values.remove(key);
        Ok(())
    }

    pub async fn push_queue(&self, key: &str, items: &[Vec<u8>], _ttl_secs: u64) -> Result<(), StoreError> {
        self.state(key)?
            .queues
            .entry(key.to_owned())
            .or_default()
            .extend(items.iter().cloned());
        Ok(())
    }

    pub async fn pop_queue(&self, key: &str) -> Result<(Option<Vec<u8>>, usize), StoreError> {
        Ok(match self.state(key)?.queues.get_mut(key) {
            Some(queue) => (queue.pop_front(), queue.len()),
            None => (None, 0),
        })
    }

    pub async fn queue_len(&self, key: &str) -> Result<usize, StoreError> {
        Ok(self.state(key)?.queues.get(key).map_or(0, VecDeque::len))
    }

    pub async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        let now = unix_now();
        let mut state = self.state(key)?;
        let (count, until) = state
            .counters
            .entry(key.to_owned())
            .or_insert((0, now + window_secs));
        if *until <= now {
            (*count, *until) = (0, now + window_secs);
        }
        *count += 1;
        Ok(*count)
    }

    pub async fn delete_value_if(&self, key: &str, expected: &[u8]) -> Result<(), StoreError> {
        let mut state = self.state(key)?;
        if state.values.get(key).is_some_and(|(value, _)| value == expected) {
            state.values.remove(key);
        }
        Ok(())
    }

    pub fn subscribe(&self) -> MemoryFeed {
        MemoryFeed {
            events: self.inner.events.subscribe(),
        }
    }
}

pub struct MemoryFeed {
    events: broadcast::Receiver<Versioned>,
}

impl MemoryFeed {
    pub async fn next(&mut self) -> FeedItem {
        match self.events.recv().await {
            Ok(event) => FeedItem::Changed(Box::new(event)),
            Err(broadcast::error::RecvError::Lagged(_)) => FeedItem::Resync,
            // The sender lives as long as the store, which outlives the feed's reader; should it
            // ever close, wait forever rather than spin.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
