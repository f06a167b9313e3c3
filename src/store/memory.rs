//! The in-process store: a map under a mutex (compare-and-set is a version check while the
//! lock is held) and a broadcast channel for events.

use super::{FeedItem, StoreError, Versioned};
use crate::session::{LoginSession, SceneId, unix_now};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

const EVENT_BUFFER: usize = 4096;
const SWEEP_EVERY_SECS: u64 = 10;

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Versioned>,
    linger_secs: u64,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SceneId, (Versioned, u64)>,
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
        self.sessions.retain(|_, (_, keep_until)| *keep_until > now);
        self.values.retain(|_, (_, keep_until)| *keep_until > now);
        self.counters.retain(|_, (_, until)| *until > now);
    }
}

impl MemoryStore {
    pub fn new(linger_secs: u64) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                events,
                linger_secs,
            }),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.inner
            .state
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))
    }

    pub async fn insert(&self, session: &LoginSession) -> Result<(), StoreError> {
        let now = unix_now();
        let mut state = self.state()?;
        state.sweep(now);
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError("session id already exists".into()));
        }
        let versioned = Versioned {
            version: 0,
            session: session.clone(),
        };
        state.sessions.insert(
            session.id.clone(),
            (versioned, session.keep_until(self.inner.linger_secs)),
        );
        Ok(())
    }

    pub async fn load(&self, id: &SceneId) -> Result<Option<Versioned>, StoreError> {
        let now = unix_now();
        let state = self.state()?;
        Ok(state
            .sessions
            .get(id)
            .filter(|(_, keep)| *keep > now)
            .map(|(v, _)| v.clone()))
    }

    pub async fn compare_and_set(
        &self,
        expected: u64,
        session: &LoginSession,
    ) -> Result<Option<Versioned>, StoreError> {
        let mut state = self.state()?;
        let Some((current, keep_until)) = state.sessions.get_mut(&session.id) else {
            return Ok(None);
        };
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
        self.state()?
            .values
            .insert(key.to_owned(), (value.to_vec(), now + ttl_secs));
        Ok(())
    }

    pub async fn put_new_value(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let mut state = self.state()?;
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
            .state()?
            .values
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone()))
    }

    pub async fn take_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = unix_now();
        Ok(self
            .state()?
            .values
            .remove(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v))
    }

    pub async fn delete_value(&self, key: &str) -> Result<(), StoreError> {
        self.state()?.values.remove(key);
        Ok(())
    }

    pub async fn push_queue(&self, key: &str, items: &[Vec<u8>], _ttl_secs: u64) -> Result<(), StoreError> {
        self.state()?
            .queues
            .entry(key.to_owned())
            .or_default()
            .extend(items.iter().cloned());
        Ok(())
    }

    pub async fn pop_queue(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state()?.queues.get_mut(key).and_then(VecDeque::pop_front))
    }

    pub async fn queue_len(&self, key: &str) -> Result<usize, StoreError> {
        Ok(self.state()?.queues.get(key).map_or(0, VecDeque::len))
    }

    pub async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        let now = unix_now();
        let mut state = self.state()?;
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
        let mut state = self.state()?;
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
