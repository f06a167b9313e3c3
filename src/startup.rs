//! Builds the runnable server from settings and a bound listener (port 0 works, for tests).

use crate::config::{ConfigError, Settings};
use crate::connections::Registry;
use crate::error;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::pool::CodePool;
use crate::push::Hub;
use crate::routes::{self, AppState};
use crate::sandbox::{self, Simulator};
use crate::shutdown;
use crate::signing::KeyRing;
use crate::store::{EventFeed, FeedItem, SessionStore, StoreError};
use crate::upgrade;
use crate::wechat::WeChatClient;
use actix_http::HttpService;
use actix_server::Server;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, HttpServer, web};
use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;

/// Request bodies above this are refused (413): every body we accept is a small JSON object.
const BODY_LIMIT: usize = 16 * 1024;
/// How long a client may take to send a request's head.
const HEAD_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the pool refiller may take to finish the code it is making once the server stopped.
const REFILLER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub enum StartupError {
    Config(ConfigError),
    Store(StoreError),
    Io(std::io::Error),
    WeChat(String),
    Keys(crate::signing::KeyError),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Config(e) => write!(f, "{e}"),
            StartupError::Store(e) => write!(f, "{e}"),
            StartupError::Io(e) => write!(f, "{e}"),
            StartupError::WeChat(e) => write!(f, "{e}"),
            StartupError::Keys(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<std::io::Error> for StartupError {
    fn from(e: std::io::Error) -> Self {
        StartupError::Io(e)
    }
}

pub struct Application {
    public_base_url: String,
    server: Server,
    shutdown: shutdown::Trigger,
    /// The pool refiller: it stops between codes once the shutdown starts.
    pooling: tokio::task::JoinHandle<()>,
    /// The event feed: it stops with the server.
    feed: tokio::task::JoinHandle<()>,
    /// WebSockets served off the server's connections: a stop waits for them to close.
    sockets: Arc<upgrade::OpenSockets>,
    shutdown_grace: std::time::Duration,
}

/// Error handlers shared by the relay and the standalone simulator: every extractor failure
/// and unknown route answers with the JSON error body.
pub fn json_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(BODY_LIMIT)
            .error_handler(|e, _| error::json_error(e).into()),
    )
    .app_data(web::PayloadConfig::default().limit(BODY_LIMIT))
    .app_data(web::QueryConfig::default().error_handler(|e, _| error::query_error(e).into()))
    .app_data(web::PathConfig::default().error_handler(|e, _| error::path_error(e).into()));
}

impl Application {
    pub async fn build(settings: Settings, listener: TcpListener) -> Result<Self, StartupError> {
        let local = listener.local_addr()?;
        let public_base_url = settings
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_owned();
        // Every connection, logo and secret file is checked before anything else starts.
        let from_config = settings
            .connections(&public_base_url)
            .map_err(StartupError::Config)?;
        let master_keys = Arc::new(settings.master_keys().map_err(StartupError::Config)?);
        let admin_token = settings.admin_token().map_err(StartupError::Config)?;
        let metrics = Arc::new(Metrics::default());
        let store = match &settings.redis_url {
            Some(url) => {
                let ca_pem = settings.redis_ca().map_err(StartupError::Config)?;
                SessionStore::redis(
                    url,
                    ca_pem,
                    &settings.key_prefix,
                    settings.linger_secs,
                    metrics.clone(),
                )
                .await
                .map_err(StartupError::Store)?
            }
            None => SessionStore::memory(settings.linger_secs),
        };
        let wechat_base = if settings.mount_simulator {
            format!("http://{local}/sandbox/wechat")
        } else {
            settings.wechat_api_base.clone()
        };
        let wechat_open_base = if settings.mount_simulator {
            format!("{public_base_url}/sandbox/wechat")
        } else {
            settings.wechat_open_base.trim_end_matches('/').to_owned()
        };
        let wechat = WeChatClient::new(&wechat_base, store.clone(), metrics.clone())
            .map_err(|e| StartupError::WeChat(e.to_string()))?;

        // Subscribe before serving (and before reading the connections): every change committed
        // from now on reaches the hub or the registry.
        let hub = Arc::new(Hub::new(store.clone()));
        let feed = store.subscribe().await.map_err(StartupError::Store)?;
        let connections = Arc::new(
            Registry::start(
                &settings,
                from_config,
                store.clone(),
                master_keys.clone(),
                &public_base_url,
            )
            .await
            .map_err(StartupError::Config)?,
        );
        let feed = tokio::spawn({
            let (hub, connections) = (hub.clone(), connections.clone());
            async move {
                tokio::join!(
                    follow_store(feed, hub.clone(), connections),
                    hub.release_unwatched()
                );
            }
        });

        let keys = Arc::new(KeyRing::new(store.clone(), master_keys.clone()));
        // Made (or read) now, so the first login does not wait and a bad master key stops the start.
        keys.current().await.map_err(StartupError::Keys)?;
        let (trigger, stopping) = shutdown::channel();
        let open_files = crate::limits::raise_open_file_limit();
        let max_open_sockets = settings
            .max_open_sockets
            .unwrap_or_else(|| open_files.saturating_sub(crate::limits::RESERVED_FILES) as usize);
        if max_open_sockets < 20_000 {
            tracing::warn!(
                open_files,
                max_open_sockets,
                "the open-file limit allows few waiting browsers; raise it (ulimit -n, LimitNOFILE=)"
            );
        }
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        // Accepting pauses before the descriptors run out, rather than failing accepts. Upgraded
        // WebSockets leave the server's count (see `upgrade`) and are bounded by
        // `max_open_sockets`; other connections get what that leaves, less 256 for Redis,
        // WeChat and logs.
        let connections_per_worker =
            ((open_files.saturating_sub(256) as usize).saturating_sub(max_open_sockets) / workers).max(64);
        let sockets = Arc::new(upgrade::OpenSockets::default());
        let pool = Arc::new(CodePool::new(
            store.clone(),
            wechat.clone(),
            metrics.clone(),
            settings.code_calls_per_appid_per_minute,
        ));
        let pooling = tokio::spawn(pool.clone().run(connections.clone(), stopping.clone()));
        // The instance's own thread (events, refills); each worker starts its own below.
        tokio::spawn(crate::allocator::empty_thread_cache_regularly(stopping.clone()));

        let state = Arc::new(AppState {
            connections,
            store,
            wechat,
            hub,
            public_base_url: public_base_url.clone(),
            wechat_open_base,
            ticket_ttl_secs: settings.ticket_ttl_secs,
            metrics,
            pool,
            limits: RateLimits {
                sessions_per_ip: settings.sessions_per_ip_per_minute,
                calls_per_openid: settings.calls_per_openid_per_minute,
                mini_program_calls_per_ip: settings.mini_program_calls_per_ip_per_minute,
                scans_per_session: settings.scans_per_session_per_minute,
            },
            caps: crate::limits::OpenCaps::new(
                settings.websockets_per_ip,
                settings.websockets_per_session,
                settings.long_polls_per_ip,
                max_open_sockets,
            ),
            trusted_proxies: settings.trusted_proxies.clone(),
            keys,
            master: master_keys,
            admin_token,
            shutdown: stopping,
            body_read_timeout: std::time::Duration::from_secs(settings.body_read_timeout_secs.max(1)),
        });
        let simulator = settings
            .mount_simulator
            .then(|| web::Data::new(Simulator::default()));
        let app = move || {
            let mut app = App::new()
                .wrap(actix_web::middleware::from_fn(routes::cors::middleware))
                .wrap(actix_web::middleware::from_fn(routes::uniform::middleware))
                .wrap(actix_web::middleware::from_fn(crate::audit::admin_changes))
                .wrap(actix_web::middleware::from_fn(routes::slow_clients::middleware))
                // Unless a response says how it may be cached (codes, logos, widget files,
                // connection details), it is not: secrets, tickets, tokens and identities
                // never land in a cache.
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((actix_web::http::header::CACHE_CONTROL, "no-store"))
                        .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((actix_web::http::header::REFERRER_POLICY, "no-referrer")),
                )
                // Each worker's own copy (built on its thread, so its connections live there).
                .data_factory({
                    let state = state.clone();
                    move || {
                        let state = state.clone();
                        async move {
                            tokio::spawn(crate::allocator::empty_thread_cache_regularly(
                                state.shutdown.clone(),
                            ));
                            Ok::<_, std::convert::Infallible>(state.for_worker().await)
                        }
                    }
                })
                .configure(json_errors)
                .configure(routes::configure);
            if let Some(simulator) = &simulator {
                app = app.configure(sandbox::demo::configure).service(
                    web::scope("/sandbox/wechat")
                        .app_data(simulator.clone())
                        .configure(sandbox::configure),
                );
            }
            app.default_service(web::to(error::not_found))
        };
        // Signals are ours (see `run_until_stopped`): browsers are told before the server stops.
        let mut builder = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(connections_per_worker)
            .disable_signals()
            .shutdown_timeout(settings.shutdown_grace_secs);
        let stopping_connections = builder.graceful_shutdown_signal();
        let counted = sockets.clone();
        builder = builder.listen("qrlogin-relay", listener, move || {
            let stopping = stopping_connections.clone();
            let (app, sockets) = (app.clone(), counted.clone());
            HttpService::build()
                // A request head must arrive within this (then 408 and the connection closes);
                // bodies are bounded by `body_read_timeout_secs` (routes::slow_clients).
                .client_request_timeout(HEAD_READ_TIMEOUT)
                // Frames go out when written: with Nagle's algorithm a `confirmed` frame right
                // after `scanned` waited for the browser's delayed ACK (~40 ms).
                .tcp_nodelay(true)
                .local_addr(local)
                // Idle keep-alive connections close when the server stops.
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                // WebSockets are served off the HTTP/1 dispatcher (see `upgrade`).
                .upgrade(upgrade::service(app.clone(), sockets))
                .finish(map_config(
                    app().into_factory().map_err(|e| e.error_response()),
                    |_| AppConfig::default(),
                ))
                .tcp()
        })?;
        let server = builder.run();
        Ok(Self {
            public_base_url,
            server,
            shutdown: trigger,
            pooling,
            feed,
            sockets,
            shutdown_grace: std::time::Duration::from_secs(settings.shutdown_grace_secs),
        })
    }

    pub fn public_base_url(&self) -> &str {
        &self.public_base_url
    }

    /// Serves until SIGTERM or Ctrl-C. Then: every waiting browser is told to reconnect (to
    /// another instance, through the load balancer) and its socket's close is awaited; no new
    /// connections; requests in flight get the grace period; the pool refiller finishes its
    /// code and releases its lock.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let (trigger, sockets, grace) = (self.shutdown, self.sockets, self.shutdown_grace);
        let stopper = tokio::spawn(async move {
            shutdown::signal().await;
            tracing::info!("shutting down: waiting browsers are told to reconnect");
            trigger.start();
            // The workers stop once every socket has sent its close (or the grace is over).
            if tokio::time::timeout(grace, sockets.all_closed()).await.is_err() {
                tracing::warn!("some WebSockets did not close within the grace period");
            }
            handle.stop(true).await;
        });
        let result = self.server.await;
        stopper.abort();
        if tokio::time::timeout(REFILLER_GRACE, self.pooling).await.is_err() {
            tracing::warn!("the code pool refiller did not stop in time");
        }
        self.feed.abort();
        result
    }
}

/// Feeds the store's events to their readers until the task is dropped: session changes to the
/// hub, connection changes to the registry; after a lost feed, both re-read; a subscription the
/// store ended is renewed.
async fn follow_store(mut feed: EventFeed, hub: Arc<Hub>, connections: Arc<Registry>) {
    loop {
        let reload = match feed.next().await {
            FeedItem::Unsubscribed(id) => {
                hub.subscription_ended(id);
                false
            }
            FeedItem::Changed(event) => {
                hub.publish(*event);
                false
            }
            FeedItem::Resync => {
                hub.events_lost();
                true
            }
            FeedItem::ConnectionsChanged => true,
        };
        if reload && let Err(e) = connections.reload().await {
            tracing::warn!(error = %e, "cannot re-read the connections");
        }
    }
}

/// The WeChat simulator alone, on its own listener.
pub fn simulator_server(listener: TcpListener) -> std::io::Result<Server> {
    let simulator = web::Data::new(Simulator::default());
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(simulator.clone())
            .configure(json_errors)
            .configure(sandbox::configure)
            .default_service(web::to(error::not_found))
    })
    .listen(listener)?
    .run())
}
