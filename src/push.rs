//! The hub: browsers waiting on this instance, keyed by session id, fed by the store's event
//! feed (one subscription per instance; on a Redis Cluster, one sharded subscription per session
//! waited for here). Each waiter holds a `watch` receiver — bounded by nature, it keeps only the
//! newest state — and deregisters itself when dropped.

use crate::session::SceneId;
use crate::store::{SessionStore, StoreError, Versioned};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// What a waiter is told: the newest committed record, or `None` after a resync (re-read it).
/// Shared, not copied, by the session's waiters (and small in each waiting session's channel).
type Latest = Option<Arc<Versioned>>;

/// How often the sessions nobody waits for any more stop being listened for.
const RELEASE_EVERY: Duration = Duration::from_secs(5);
/// A failed renewal of a subscription the store ended is tried again after this.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Subscription changes in flight at once during a release or a renewal.
const SUBSCRIPTION_CHANGES_AT_ONCE: usize = 32;

pub struct Hub {
    /// Where the waiters' sessions live, and whose feed fills the hub.
    store: SessionStore,
    waiters: Mutex<HashMap<SceneId, watch::Sender<Latest>>>,
    /// Sessions whose last waiter left, still listened for until the next release.
    released: Mutex<Vec<SceneId>>,
    /// Whether a `listen_again_all` round is under way.
    relistening: AtomicBool,
}

impl Hub {
    pub fn new(store: SessionStore) -> Self {
        Self {
            store,
            waiters: Mutex::default(),
            released: Mutex::default(),
            relistening: AtomicBool::new(false),
        }
    }

    /// Registers interest in `id` and has the store carry its events here. Watch before
    /// reading the current state, so a change committed in between is not missed.
    pub async fn watch(self: &Arc<Self>, id: &SceneId) -> Result<Waiter, StoreError> {
        let waiter = self.register(id);
        // On failure the waiter is dropped, and deregisters.
        self.store.listen(id).await?;
        Ok(waiter)
    }

    fn register(self: &Arc<Self>, id: &SceneId) -> Waiter {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = match waiters.get(id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(None);
                waiters.insert(id.clone(), sender);
                receiver
            }
        };
        Waiter {
            hub: self.clone(),
            id: id.clone(),
            receiver,
        }
    }

    /// Hands a committed change to whoever waits for that session here.
    pub fn publish(&self, event: Versioned) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = waiters.get(&event.session.id) {
            sender.send_if_modified(|latest| {
                let newer = latest.as_ref().is_none_or(|l| l.version < event.version);
                if newer {
                    *latest = Some(Arc::new(event));
                }
                newer
            });
        }
    }

    /// Events may have been lost (the feed broke): every waiter re-reads its session. Where
    /// the store subscribes per session, the subscriptions broke too: each is renewed first,
    /// and its waiters re-read once it is (a read before would miss what came in between).
    pub fn events_lost(self: &Arc<Self>) {
        if self.store.listens_per_session() {
            let hub = self.clone();
            tokio::spawn(async move { hub.listen_again_all().await });
            return;
        }
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for sender in waiters.values() {
            sender.send_replace(None);
        }
    }

    /// The store ended this instance's subscription to `id`'s events (a cluster moved its
    /// slot): renewed while a browser here waits for it.
    pub fn subscription_ended(self: &Arc<Self>, id: SceneId) {
        let hub = self.clone();
        tokio::spawn(async move { hub.listen_again(&id).await });
    }

    pub fn waiting(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every few seconds, stops listening for the sessions nobody here waits for any more.
    /// Runs until dropped; only a store that listens per session needs it.
    pub async fn release_unwatched(self: Arc<Self>) {
        if !self.store.listens_per_session() {
            return std::future::pending().await;
        }
        let mut every = tokio::time::interval(RELEASE_EVERY);
        loop {
            every.tick().await;
            let released = std::mem::take(&mut *self.released.lock().unwrap_or_else(|p| p.into_inner()));
            futures_util::stream::iter(released)
                .for_each_concurrent(SUBSCRIPTION_CHANGES_AT_ONCE, |id| self.release(id))
                .await;
        }
    }

    /// Stops listening for `id` unless someone waits for it again. A browser that started
    /// waiting while the unsubscription was on its way may have lost its subscription to it: it
    /// is listened for again and told to re-read.
    async fn release(&self, id: SceneId) {
        if self.is_watched(&id) {
            return;
        }
        if let Err(e) = self.store.stop_listening(&id).await {
            tracing::warn!(error = %e, "cannot stop listening for a session; trying again later");
            self.released.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            return;
        }
        self.listen_again(&id).await;
    }

    /// Listens again for every session waited for here, each until it succeeds, and has its
    /// waiters re-read. One round at a time.
    async fn listen_again_all(&self) {
        if self.relistening.swap(true, Ordering::AcqRel) {
            return;
        }
        let watched: Vec<SceneId> = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        futures_util::stream::iter(watched)
            .for_each_concurrent(SUBSCRIPTION_CHANGES_AT_ONCE, |id| async move {
                self.listen_again(&id).await
            })
            .await;
        self.relistening.store(false, Ordering::Release);
    }

    /// While a browser here still waits for `id`, listens again (the cluster may still be
    /// electing the slot's new master), then has the waiters re-read what they may have missed.
    async fn listen_again(&self, id: &SceneId) {
        while self.is_watched(id) {
            match self.store.listen(id).await {
                Ok(()) => {
                    let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(sender) = waiters.get(id) {
                        sender.send_replace(None);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen again for a session; retrying");
                    tokio::time::sleep(LISTEN_AGAIN_AFTER).await;
                }
            }
        }
    }

    fn is_watched(&self, id: &SceneId) -> bool {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }
}

/// One browser's wait for one session.
pub struct Waiter {
    hub: Arc<Hub>,
    id: SceneId,
    receiver: watch::Receiver<Latest>,
}

impl Waiter {
    /// The next committed state after `current`: a change made anywhere, or, once the
    /// session's deadline passes, its expiry (stored and published here if nobody did first).
    pub async fn next_update(
        &mut self,
        store: &SessionStore,
        current: &Versioned,
    ) -> Result<Option<Versioned>, StoreError> {
        let seen = current.version;
        if current.session.ensure_waiting().is_err() {
            return self.next_change(store, seen).await;
        }
        let deadline = tokio::time::sleep(until(current.session.expires_at));
        tokio::select! {
            change = self.next_change(store, seen) => return change,
            () = deadline => {}
        }
        self.read(store).await
    }

    /// The session as stored now. Boxed: tens of thousands of browsers wait on a `Waiter`, and
    /// each waiting future would otherwise carry room for a store call it is not making.
    pub fn read<'a>(
        &'a self,
        store: &'a SessionStore,
    ) -> Pin<Box<impl Future<Output = Result<Option<Versioned>, StoreError>> + 'a>> {
        Box::pin(store.get(&self.id))
    }

    /// The session's state once it is newer than `seen` (a version), reading the store when the
    /// hub only knows "something changed". `None` once the session is gone.
    pub async fn next_change(
        &mut self,
        store: &SessionStore,
        seen: u64,
    ) -> Result<Option<Versioned>, StoreError> {
        loop {
            if self.receiver.changed().await.is_err() {
                // The hub never drops a sender while a waiter holds its id.
                return self.read(store).await;
            }
            // Only the shared record is held across the store read, not a copy of it.
            let latest = self.receiver.borrow_and_update().clone();
            let current = match latest {
                Some(event) => Some(event),
                None => self.read(store).await?.map(Arc::new),
            };
            match current {
                Some(current) if current.version <= seen => continue,
                other => return Ok(other.map(Arc::unwrap_or_clone)),
            }
        }
    }
}

/// How long until the wall clock passes `unix_secs` (plus a little, so the second has turned).
fn until(unix_secs: u64) -> Duration {
    let target = Duration::from_secs(unix_secs) + Duration::from_millis(20);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    target.saturating_sub(now)
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.hub.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Our own receiver still counts here: remove the sender when we are the last one.
        if waiters.get(&self.id).is_some_and(|s| s.receiver_count() <= 1) {
            waiters.remove(&self.id);
            crate::maps::shrink_if_sparse(&mut waiters);
            if self.hub.store.listens_per_session() {
                self.hub
                    .released
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(self.id.clone());
            }
        }
    }
}
