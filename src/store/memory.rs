//! The in-process store: maps split into shards, each under its own mutex (compare-and-set is
//! a version check while the shard's lock is held), and a broadcast channel for events.
//!
//! Sharding is what keeps the relay responsive with hundreds of thousands of sessions: a lock
//! is held only for one shard's work, and a shard's map doubles at 1/1024 of the size the whole
//! map would (and moves boxes, not records). Expiry never walks a map: each shard keeps its
//! records' keep-until times in order, and each call on the shard drops at most a few dozen of
//! those that have fallen due, so no call waits on how many records the store holds.

use super::{FeedItem, StoreError, Versioned};
use crate::session::{LoginSession, SceneId, unix_now};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

const EVENT_BUFFER: usize = 4096;
/// Records one call on a shard may drop: enough to keep up with any start rate (a shard sees
/// several calls per record it holds), few enough that no call waits long.
const SWEEP_BATCH: usize = 32;
const SHARDS: usize = 1024;

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
    /// Keep-until second → the records due then. A record whose time moved later is listed
    /// again under its new second; at the old one it is found alive and left.
    expiry: BTreeMap<u64, Vec<Expiring>>,
}

/// A record in the expiry index.
enum Expiring {
    Session(SceneId),
    Value(String),
    Counter(String),
}

impl State {
    fn expire_at(&mut self, until: u64, record: Expiring) {
        self.expiry.entry(until).or_default().push(record);
    }

    /// Drops up to `SWEEP_BATCH` records that were due by `now`, the earliest first.
    fn sweep(&mut self, now: u64) {
        let State {
            sessions,
            values,
            counters,
            expiry,
            ..
        } = self;
        let mut budget = SWEEP_BATCH;
        while budget > 0 {
            let Some(mut due) = expiry.first_entry() else {
                return;
            };
            if *due.key() > now {
                return;
            }
            let listed = due.get_mut();
            while budget > 0 {
                let Some(record) = listed.pop() else {
                    break;
                };
                budget -= 1;
                match record {
                    Expiring::Session(id) => remove_if_due(sessions, &id, now, |record| record.1),
                    Expiring::Value(key) => remove_if_due(values, &key, now, |(_, until)| *until),
                    Expiring::Counter(key) => remove_if_due(counters, &key, now, |(_, until)| *until),
                }
            }
            if listed.is_empty() {
                due.remove();
            }
        }
    }

    fn put_value(&mut self, key: &str, value: &[u8], until: u64) {
        self.values.insert(key.to_owned(), (value.to_vec(), until));
        self.expire_at(until, Expiring::Value(key.to_owned()));
    }
}

/// Removes `key` from `map` if its record's keep-until time (`until`) has come: a record given
/// more time since it was listed stays.
fn remove_if_due<K: Hash + Eq, V>(map: &mut HashMap<K, V>, key: &K, now: u64, until: impl Fn(&V) -> u64) {
    if map.get(key).is_some_and(|record| until(record) <= now) {
        map.remove(key);
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

    /// The shard holding `key`, locked, once it has dropped a batch of its due records.
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
        let keep_until = session.keep_until(self.inner.linger_secs);
        state
            .sessions
            .insert(session.id.clone(), Box::new((versioned, keep_until)));
        state.expire_at(keep_until, Expiring::Session(session.id.clone()));
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
        let (was, stored) = (*keep_until, current.clone());
        *keep_until = session.keep_until(self.inner.linger_secs);
        if *keep_until != was {
            let until = *keep_until;
            state.expire_at(until, Expiring::Session(session.id.clone()));
        }
        drop(state);
        // No receiver (nobody waiting anywhere) is not an error.
        let _ = self.inner.events.send(Versioned {
            version: stored.version,
            session: stored.session.for_event(),
        });
        Ok(Some(stored))
    }

    pub async fn put_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        self.state(key)?.put_value(key, value, unix_now() + ttl_secs);
        Ok(())
    }

    pub async fn put_new_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let mut state = self.state(key)?;
        if state.values.get(key).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        state.put_value(key, value, now + ttl_secs);
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
        let until = match state.values.get_mut(key) {
            Some((_, until)) if *until > now => {
                *until = now + ttl_secs.max(1);
                *until
            }
            _ => return Ok(false),
        };
        state.expire_at(until, Expiring::Value(key.to_owned()));
        Ok(true)
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
        let (count, until) = state.counters.entry(key.to_owned()).or_insert((0, 0));
        if *until > now {
            *count += 1;
            return Ok(*count);
        }
        // A new window.
        (*count, *until) = (1, now + window_secs);
        state.expire_at(now + window_secs, Expiring::Counter(key.to_owned()));
        Ok(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_records_go_a_batch_per_call_and_records_given_more_time_stay() {
        let mut state = State::default();
        for n in 0..100 {
            state.put_value(&format!("code:{n}"), b"png", 10);
        }
        state.put_value("later", b"png", 20);
        // "code:0" is given more time after it was listed under second 10.
        state.put_value("code:0", b"png", 30);

        state.sweep(9);
        assert_eq!(state.values.len(), 101, "nothing is due before its second");
        state.sweep(10);
        assert_eq!(state.values.len(), 101 - SWEEP_BATCH, "one batch a call");
        for _ in 0..10 {
            state.sweep(10);
        }
        let mut left: Vec<&str> = state.values.keys().map(String::as_str).collect();
        left.sort();
        assert_eq!(left, ["code:0", "later"]);
        assert!(
            state.expiry.keys().all(|&second| second > 10),
            "the index let go of second 10"
        );

        state.sweep(30);
        state.sweep(30);
        assert!(state.values.is_empty() && state.expiry.is_empty());
    }
}
