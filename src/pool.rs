//! Making codes, and keeping sun codes ready. WeChat's `getwxacodeunlimit` takes 100–300 ms
//! and allows 5000 calls a minute per AppID, so each sun-code connection keeps a pool of codes
//! fetched and branded ahead of time for pre-minted scene ids, each image stored under the code
//! key of the session it was made for. The pool is a queue of those ids in the session store,
//! so every instance draws from (and refills) the same one; a session normally starts with one
//! pop and a change of its code's lifetime, no WeChat call and no image work. An empty pool
//! falls back to a live fetch.

use crate::codes::{BrandedCode, CodeError};
use crate::config::{CodeSettings, Connection};
use crate::connections::Registry;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::session::{LoginSession, SceneId};
use crate::shutdown::Shutdown;
use crate::store::{SessionStore, StoreError};
use crate::wechat::{CodeRequest, WeChatClient, WeChatError};
use actix_web::http::StatusCode;
use futures_util::StreamExt;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Pooled codes are good forever (unlimited codes never expire); a pool left alone this long
/// (its connection removed or changed) is dropped by the store.
const POOL_TTL_SECS: u64 = 7 * 24 * 3600;
const REFILL_LOCK_MS: u64 = 60_000;
/// Codes fetched at once by a refill: between these, by how many are missing, so a drained
/// pool is refilled many at a time (WeChat takes 100–300 ms per code).
const MIN_REFILL_CONCURRENCY: usize = 4;
const MAX_REFILL_CONCURRENCY: usize = 32;
/// Pools are checked this often even when nobody here took a code (other instances do).
const CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum CodeFailure {
    WeChat(WeChatError),
    Image(CodeError),
    Store(StoreError),
}

impl fmt::Display for CodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeFailure::WeChat(e) => write!(f, "{e}"),
            CodeFailure::Image(e) => write!(f, "{e}"),
            CodeFailure::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<CodeFailure> for ApiError {
    fn from(e: CodeFailure) -> Self {
        match e {
            CodeFailure::WeChat(e) => e.into(),
            CodeFailure::Store(e) => e.into(),
            CodeFailure::Image(e) => {
                tracing::error!(error = %e, "cannot make a code");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "code_unavailable",
                    "The login code could not be made; retry.",
                )
            }
        }
    }
}

/// Makes the code for `id`: a sun code from WeChat with the logo pasted in (image work off the
/// async workers), or a link QR code drawn here.
pub async fn make_code(
    wechat: &WeChatClient,
    connection: &Connection,
    id: &SceneId,
) -> Result<BrandedCode, CodeFailure> {
    match &connection.code {
        CodeSettings::QrConnect { .. } => Err(CodeFailure::Image(CodeError(
            "a website connection shows WeChat's own code".into(),
        ))),
        CodeSettings::Link { prefix } => {
            BrandedCode::link(&format!("{prefix}{id}"), &connection.logo).map_err(CodeFailure::Image)
        }
        CodeSettings::Sun { disc_ratio, .. } => {
            let request = CodeRequest {
                scene: id.as_str(),
                page: connection.page.as_deref(),
                check_path: connection.check_path,
                env_version: &connection.env_version,
                width: connection.code_width,
            };
            let sun_code = wechat
                .unlimited_code(&connection.app, &request)
                .await
                .map_err(CodeFailure::WeChat)?;
            let (logo, ratio) = (connection.logo.clone(), *disc_ratio);
            tokio::task::spawn_blocking(move || BrandedCode::sun_code(&sun_code, &logo, ratio))
                .await
                .map_err(|e| CodeFailure::Image(CodeError(e.to_string())))?
                .map_err(CodeFailure::Image)
        }
    }
}

pub struct CodePool {
    store: SessionStore,
    wechat: WeChatClient,
    metrics: Arc<Metrics>,
    wake: Notify,
    /// `getwxacodeunlimit` calls one AppID's refills may make per minute, all instances
    /// together (counted in the store); 0: no budget.
    budget_per_minute: u64,
}

impl CodePool {
    pub fn new(
        store: SessionStore,
        wechat: WeChatClient,
        metrics: Arc<Metrics>,
        budget_per_minute: u64,
    ) -> Self {
        Self {
            store,
            wechat,
            metrics,
            wake: Notify::new(),
            budget_per_minute,
        }
    }

    /// Takes one call from the AppID's budget for this minute; `false` once it is spent.
    async fn spend_budget(&self, appid: &str) -> Result<bool, StoreError> {
        if self.budget_per_minute == 0 {
            return Ok(true);
        }
        let minute = crate::session::unix_now() / 60;
        let spent = self
            .store
            .count(&format!("code-budget:{appid}:{minute}"), 60)
            .await?;
        Ok(spent <= self.budget_per_minute)
    }

    /// The pool of a connection, named by everything that shapes its codes: a changed logo,
    /// page or size starts a new pool instead of serving stale codes.
    fn key(connection: &Connection) -> String {
        let shape = format!(
            "{}|{:?}|{}|{}|{}|{:?}|{}",
            connection.app.appid,
            connection.page,
            connection.env_version,
            connection.check_path,
            connection.code_width,
            connection.code,
            connection.logo.fingerprint
        );
        format!(
            "code-pool:{}:{}",
            connection.identifier,
            &crate::token::hash(shape)[..12]
        )
    }

    fn limits(connection: &Connection) -> Option<(usize, usize)> {
        match connection.code {
            CodeSettings::Sun {
                pool_size,
                pool_low_water,
                ..
            } if pool_size > 0 => Some((pool_size, pool_low_water)),
            _ => None,
        }
    }

    /// Starts and stores a session (`start` makes it for an id, with the browser's secret):
    /// with a pooled code when there is one (the session is stored and the code given the
    /// session's `ttl_secs` in one step; the image stays where the refill put it), else with a
    /// code made now; a website connection's has no code of ours (WeChat's page shows one).
    /// `store`: the caller's (its worker's link); the pool's own is the refiller's.
    pub async fn start_session(
        &self,
        store: &SessionStore,
        connection: &Connection,
        ttl_secs: u64,
        start: impl Fn(SceneId) -> (LoginSession, String),
    ) -> Result<(LoginSession, String), CodeFailure> {
        if connection.is_website() {
            let (session, secret) = start(SceneId::random());
            store.insert(&session).await.map_err(CodeFailure::Store)?;
            return Ok((session, secret));
        }
        if let Some((_, low_water)) = Self::limits(connection) {
            let key = Self::key(connection);
            loop {
                let (taken, left) = store.pop_queue(&key).await.map_err(CodeFailure::Store)?;
                // Below its low-water mark, the pool is refilled (the refiller checks again).
                if left < low_water.max(1) {
                    self.wake.notify_one();
                }
                let Some(raw) = taken else { break };
                let Some(id) = std::str::from_utf8(&raw).ok().and_then(SceneId::parse) else {
                    continue;
                };
                let (session, secret) = start(id);
                if store
                    .insert_with_pooled_code(&session, ttl_secs)
                    .await
                    .map_err(CodeFailure::Store)?
                {
                    self.metrics.pool_hits.inc();
                    return Ok((session, secret));
                }
            }
            self.metrics.pool_misses.inc();
        }
        let id = SceneId::random();
        let code = make_code(&self.wechat, connection, &id).await?;
        store
            .put_code(&id, &code.png, ttl_secs)
            .await
            .map_err(CodeFailure::Store)?;
        let (session, secret) = start(id);
        store.insert(&session).await.map_err(CodeFailure::Store)?;
        Ok((session, secret))
    }

    /// Fills the pool back to its size once it is below its low-water mark, in waves of up to
    /// 32 fetches, until it is full (or the AppID's budget is spent). One instance at a time
    /// refills a pool (a store lock); returns how many codes it added.
    pub async fn refill(&self, connection: &Connection, shutdown: &Shutdown) -> Result<usize, CodeFailure> {
        let Some((size, low_water)) = Self::limits(connection) else {
            return Ok(0);
        };
        let key = Self::key(connection);
        let have = self.store.queue_len(&key).await.map_err(CodeFailure::Store)?;
        if have >= low_water.max(1) {
            return Ok(0);
        }
        let Some(lock) = self
            .store
            .try_lock(&format!("{key}:refill"), REFILL_LOCK_MS)
            .await
            .map_err(CodeFailure::Store)?
        else {
            return Ok(0);
        };
        // Waves until the pool is full: codes taken while a wave runs are made up by the next,
        // so a steady stream of starts keeps fetches in flight rather than draining the pool.
        let (mut added, mut failure, mut budget_spent) = (0, None, false);
        let mut have = have;
        // Within half the lock's lifetime, so the lock never lapses under a running refill.
        let until = tokio::time::Instant::now() + Duration::from_millis(REFILL_LOCK_MS / 2);
        while have < size
            && failure.is_none()
            && !budget_spent
            && !shutdown.has_started()
            && tokio::time::Instant::now() < until
        {
            let missing = size - have;
            let concurrency = missing.clamp(MIN_REFILL_CONCURRENCY, MAX_REFILL_CONCURRENCY);
            let mut fetches = futures_util::stream::iter(0..missing)
                .map(|_| self.add_one(connection, &key))
                .buffer_unordered(concurrency);
            while let Some(result) = fetches.next().await {
                match result {
                    Ok(true) => added += 1,
                    // Fetches already under way finish; later ones find the budget spent too.
                    Ok(false) => budget_spent = true,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if shutdown.has_started() {
                    break;
                }
            }
            // Fetches still in flight are dropped here: their codes are not pooled.
            drop(fetches);
            match self.store.queue_len(&key).await {
                Ok(now_have) => have = now_have,
                Err(e) => failure = Some(CodeFailure::Store(e)),
            }
        }
        if budget_spent {
            self.metrics.pool_budget_spent.inc();
            tracing::info!(connection = %connection.identifier, added, "this minute's code budget is spent; the pool waits");
        }
        self.store.unlock(lock).await.map_err(CodeFailure::Store)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(added),
        }
    }

    /// Fetches, brands and pools one code; `false` (and no WeChat call) once the AppID's
    /// budget for this minute is spent.
    async fn add_one(&self, connection: &Connection, key: &str) -> Result<bool, CodeFailure> {
        if !self
            .spend_budget(&connection.app.appid)
            .await
            .map_err(CodeFailure::Store)?
        {
            return Ok(false);
        }
        let id = SceneId::random();
        let code = make_code(&self.wechat, connection, &id).await?;
        // The image waits under the code key of the session it was made for; the queue holds
        // ids, so a start moves an id, not an image.
        self.store
            .put_code(&id, &code.png, POOL_TTL_SECS)
            .await
            .map_err(CodeFailure::Store)?;
        self.store
            .push_queue(key, &[id.as_str().as_bytes().to_vec()], POOL_TTL_SECS)
            .await
            .map_err(CodeFailure::Store)?;
        self.metrics.pool_refilled.inc();
        Ok(true)
    }

    /// Keeps every pooling connection's pool filled until the shutdown starts; connections
    /// added or changed at run time are picked up at the next round.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, mut shutdown: Shutdown) {
        while !shutdown.has_started() {
            let snapshot = registry.snapshot();
            for connection in snapshot.all().filter(|c| Self::limits(c).is_some()) {
                if let Err(e) = self.refill(connection, &shutdown).await {
                    self.metrics.pool_refill_errors.inc();
                    tracing::warn!(connection = %connection.identifier, error = %e, "code pool refill failed");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = shutdown.started() => {}
            }
        }
    }
}
