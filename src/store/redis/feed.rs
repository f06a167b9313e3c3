//! How an instance hears committed changes from Redis.
//!
//! - One server: one subscription connection to the `{prefix}events` channel, proving it is
//!   alive with a PING round trip every few seconds, so a half-open link is noticed, reopened
//!   and followed by a resync.
//! - A cluster: sharded pub/sub. Each session's events go to its own shard channel, in the
//!   session's slot, so only the shard holding the session carries them, and only instances
//!   with a browser waiting for that session subscribe (see `RedisStore::listen`). The cluster
//!   link resubscribes by itself after a disconnection or a failover; the feed then tells every
//!   waiter to re-read, since events published meanwhile are lost.

use super::super::{CONNECTIONS_CHANGED, FeedItem, StoreError, Versioned};
use super::bounded;
use crate::session::SceneId;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{PushInfo, PushKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// How often the one-server subscription proves it is alive with a PING round trip.
const FEED_CHECK_EVERY: Duration = Duration::from_secs(3);
/// After a cluster node's connection drops: the first resync, whether or not the link has
/// resubscribed by then.
const FIRST_RESYNC_AFTER: Duration = Duration::from_secs(1);
/// Then, until the link confirms its resubscriptions, a resync this often…
const RESYNC_EVERY: Duration = Duration::from_secs(2);
/// …for at most this long (a node that held none of our channels confirms nothing).
const RECOVERY_AT_MOST: Duration = Duration::from_secs(30);
/// Resubscriptions come one per channel: the resync waits for this much quiet after the last.
const RESUBSCRIBED_QUIET: Duration = Duration::from_millis(100);

/// What one published message means (`None`: unreadable, ignored).
fn feed_item(payload: &str) -> Option<FeedItem> {
    if payload == CONNECTIONS_CHANGED {
        return Some(FeedItem::ConnectionsChanged);
    }
    match serde_json::from_str::<Versioned>(payload) {
        Ok(event) => Some(FeedItem::Changed(Box::new(event))),
        Err(_) => {
            tracing::warn!("ignoring an unreadable session event");
            None
        }
    }
}

pub async fn open_subscription(
    client: &redis::Client,
    channel: &str,
) -> Result<(PubSubSink, PubSubStream), StoreError> {
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(channel)).await?;
    Ok(pubsub.split())
}

/// One server's subscription. When the connection drops, or stops answering its PING, it
/// reconnects and yields `Resync`.
pub struct ServerFeed {
    client: Arc<redis::Client>,
    channel: String,
    link: Option<(PubSubSink, PubSubStream)>,
    up: Arc<AtomicBool>,
    check: tokio::time::Interval,
}

impl ServerFeed {
    pub fn new(
        client: Arc<redis::Client>,
        channel: String,
        link: (PubSubSink, PubSubStream),
        up: Arc<AtomicBool>,
    ) -> Self {
        up.store(true, Ordering::Relaxed);
        Self {
            client,
            channel,
            link: Some(link),
            up,
            check: tokio::time::interval_at(Instant::now() + FEED_CHECK_EVERY, FEED_CHECK_EVERY),
        }
    }

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
                        let payload = message.get_payload::<String>().unwrap_or_default();
                        if let Some(item) = feed_item(&payload) {
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

/// A cluster's sharded messages, and the recovery after one of its nodes dropped.
pub struct ClusterFeed {
    pushes: UnboundedReceiver<PushInfo>,
    up: Arc<AtomicBool>,
    recovery: Option<Recovery>,
}

/// Since a node's connection dropped: when the next resync is due, and whether the link has
/// resubscribed since.
struct Recovery {
    since: Instant,
    resync_at: Instant,
    resubscribed: bool,
}

impl ClusterFeed {
    pub fn new(pushes: UnboundedReceiver<PushInfo>, up: Arc<AtomicBool>) -> Self {
        up.store(true, Ordering::Relaxed);
        Self {
            pushes,
            up,
            recovery: None,
        }
    }

    pub async fn next(&mut self) -> FeedItem {
        loop {
            let resync_at = self.recovery.as_ref().map(|r| r.resync_at);
            tokio::select! {
                push = self.pushes.recv() => {
                    let Some(push) = push else {
                        // The link's task ended: only when the store itself is dropped.
                        return std::future::pending().await;
                    };
                    if let Some(item) = self.heard(push) {
                        return item;
                    }
                }
                () = sleep_until_some(resync_at) => {
                    if let Some(recovery) = self.recovery.as_mut() {
                        let now = Instant::now();
                        if recovery.resubscribed || now - recovery.since > RECOVERY_AT_MOST {
                            self.recovery = None;
                        } else {
                            recovery.resync_at = now + RESYNC_EVERY;
                        }
                    }
                    self.up.store(true, Ordering::Relaxed);
                    tracing::info!("redis cluster link recovering; resynchronising");
                    return FeedItem::Resync;
                }
            }
        }
    }

    fn heard(&mut self, push: PushInfo) -> Option<FeedItem> {
        let now = Instant::now();
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let payload = push
                    .data
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())?;
                feed_item(&payload)
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    "a redis cluster node's connection dropped; waiting for the link to resubscribe"
                );
                self.up.store(false, Ordering::Relaxed);
                let since = self.recovery.as_ref().map_or(now, |r| r.since);
                self.recovery = Some(Recovery {
                    since,
                    resync_at: now + FIRST_RESYNC_AFTER,
                    resubscribed: false,
                });
                None
            }
            // The cluster ended a subscription (the session's slot moved, or its node became a
            // replica in a failover): whoever waits for it here must listen again.
            PushKind::SUnsubscribe => {
                let channel = push
                    .data
                    .first()
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())?;
                let id = channel.rsplit_once('{')?.1.strip_suffix('}')?;
                SceneId::parse(id).map(FeedItem::Unsubscribed)
            }
            PushKind::SSubscribe | PushKind::Subscribe => {
                if let Some(recovery) = self.recovery.as_mut() {
                    recovery.resubscribed = true;
                    recovery.resync_at = now + RESUBSCRIBED_QUIET;
                }
                None
            }
            _ => None,
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
