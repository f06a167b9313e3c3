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
/// After a cluster node's connection drops, the resync waits this long, so the drops of one
/// failover (every connection to the node) make one resync.
const RESYNC_AFTER_DROP: Duration = Duration::from_secs(1);

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

/// A cluster's sharded messages, and the resync after one of its nodes dropped (the hub then
/// subscribes again to every session waited for, as the dropped node's subscriptions must move
/// to whichever node serves their slots once the cluster has settled).
pub struct ClusterFeed {
    pushes: UnboundedReceiver<PushInfo>,
    up: Arc<AtomicBool>,
    resync_at: Option<Instant>,
}

impl ClusterFeed {
    pub fn new(pushes: UnboundedReceiver<PushInfo>, up: Arc<AtomicBool>) -> Self {
        up.store(true, Ordering::Relaxed);
        Self {
            pushes,
            up,
            resync_at: None,
        }
    }

    pub async fn next(&mut self) -> FeedItem {
        loop {
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
                () = sleep_until_some(self.resync_at) => {
                    self.resync_at = None;
                    self.up.store(true, Ordering::Relaxed);
                    tracing::info!("a redis cluster node dropped; subscribing again and resynchronising");
                    return FeedItem::Resync;
                }
            }
        }
    }

    fn heard(&mut self, push: PushInfo) -> Option<FeedItem> {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let payload = push
                    .data
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())?;
                feed_item(&payload)
            }
            PushKind::Disconnection => {
                tracing::warn!("a redis cluster node's connection dropped");
                self.up.store(false, Ordering::Relaxed);
                self.resync_at.get_or_insert(Instant::now() + RESYNC_AFTER_DROP);
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
