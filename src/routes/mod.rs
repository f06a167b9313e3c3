//! HTTP handlers, grouped by caller. Each parses, calls the domain, store or WeChat client, and
//! maps errors; the work lives elsewhere.

pub mod admin;
pub mod cors;
pub mod hosted;
pub mod miniprogram;
pub mod oidc;
pub mod ops;
pub mod pc;
pub mod phone_page;
pub mod slow_clients;
pub mod tickets;
pub mod uniform;
pub mod website;
pub mod ws;

use crate::account_hook::{self, Verdict};
use crate::config::{Connection, Secret};
use crate::connections::Registry;
use crate::crypto::MasterKeys;
use crate::error::ApiError;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::pool::CodePool;
use crate::push::Hub;
use crate::session::{ClientInfo, Identity, LoginSession, SceneId, Sealed};
use crate::signing::KeyRing;
use crate::store::{SessionStore, Versioned};
use crate::wechat::WeChatClient;
use actix_web::{HttpRequest, web};
use std::sync::Arc;

/// Everything a handler may use, built once at start; each actix worker serves with a copy
/// whose store and WeChat client are its own ([`AppState::for_worker`]), the rest shared.
#[derive(Clone)]
pub struct AppState {
    /// The live registry of connections, shared by all instances through the store.
    pub connections: Arc<Registry>,
    pub store: SessionStore,
    pub wechat: WeChatClient,
    pub hub: Arc<Hub>,
    /// Where browsers and phones reach this relay, without a trailing `/`.
    pub public_base_url: String,
    /// Where browsers find WeChat's website-login page.
    pub wechat_open_base: String,
    pub ticket_ttl_secs: u64,
    pub metrics: Arc<Metrics>,
    pub limits: RateLimits,
    pub caps: crate::limits::OpenCaps,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    pub pool: Arc<CodePool>,
    /// The ID-token signing keys and the ticket key, shared by all instances.
    pub keys: Arc<KeyRing>,
    /// Seals what the store keeps but must not show (identities).
    pub master: Arc<MasterKeys>,
    /// The operator's token for `/v1/admin/…`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// How long a request body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Started on SIGTERM: waiting browsers are sent elsewhere.
    pub shutdown: crate::shutdown::Shutdown,
}

impl AppState {
    /// This state for the actix worker calling it: Redis and WeChat connections of its own,
    /// so a request's calls are written and answered on its thread, not handed to another.
    pub async fn for_worker(&self) -> Self {
        let store = self.store.for_worker().await;
        let wechat = match self.wechat.for_worker(store.clone()) {
            Ok(wechat) => wechat,
            Err(e) => {
                tracing::warn!(error = %e, "a worker's own WeChat client cannot be built; it shares the instance's");
                self.wechat.clone()
            }
        };
        Self {
            store,
            wechat,
            ..self.clone()
        }
    }

    /// A session reached its current status through this instance: counted and audited.
    pub fn record(&self, session: &LoginSession) {
        self.metrics.transition(&session.connection, session.status);
        crate::audit::session_changed(session);
    }

    /// The connection a PC page names, or the default one.
    pub fn connection(&self, identifier: Option<&str>) -> Result<Arc<Connection>, ApiError> {
        let found = match identifier {
            Some(id) => self.connections.get(id),
            None => self.connections.default_connection(),
        };
        found.ok_or_else(|| ApiError::not_found("unknown_connection", "No connection has this identifier."))
    }

    /// The connection a stored session belongs to.
    /// The requesting client as the confirm screen shows it and limits count it
    /// (`client_ip`: the peer, or the rightmost untrusted `X-Forwarded-For` hop).
    pub fn client_info(&self, req: &HttpRequest) -> ClientInfo {
        let lines = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        let ip = req
            .peer_addr()
            .map(|a| self.trusted_proxies.client(a.ip(), lines));
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect();
        ClientInfo {
            ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent,
        }
    }

    pub fn connection_of(&self, session: &LoginSession) -> Result<Arc<Connection>, ApiError> {
        self.connections.get(&session.connection).ok_or_else(|| {
            ApiError::gone(
                "connection_removed",
                "The connection of this login session is no longer configured.",
            )
        })
    }

    /// Reads a session by the id a client gave.
    pub async fn session(&self, id: &SceneId) -> Result<Versioned, ApiError> {
        self.store.get(id).await?.ok_or_else(ApiError::session_not_found)
    }

    /// Seals a person for the session record.
    pub fn seal_identity(&self, identity: &Identity) -> Result<Sealed, ApiError> {
        let plain = serde_json::to_vec(identity).map_err(|_| ApiError::internal())?;
        self.master.seal(IDENTITY, &plain).map(Sealed).map_err(|e| {
            tracing::error!(error = %e, "cannot seal an identity");
            ApiError::internal()
        })
    }

    pub fn open_identity(&self, sealed: &Sealed) -> Result<Identity, ApiError> {
        self.master
            .open(IDENTITY, &sealed.0)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| {
                tracing::error!(
                    "a sealed identity does not open: is the master key that sealed it configured?"
                );
                ApiError::internal()
            })
    }

    /// Asks the connection's account hook, if it has one, whether `identity` may log in; an
    /// allowed person carries the tenant's user id. A hook that gives no usable answer is
    /// `503 account_hook_unavailable` (the session is left as it was, so the phone may retry).
    pub async fn vet(&self, connection: &Connection, identity: Identity) -> Result<Vetted, ApiError> {
        let Some(hook) = &connection.account_hook else {
            return Ok(Vetted::Allowed(identity));
        };
        match account_hook::ask(self.wechat.http(), connection, hook, &identity).await {
            Ok(Verdict::Allow { user_id }) => Ok(Vetted::Allowed(Identity { user_id, ..identity })),
            Ok(Verdict::Deny { reason }) => Ok(Vetted::Denied(reason)),
            Err(e) => {
                tracing::warn!(connection = %connection.identifier, reason = %e.0, "account hook unavailable");
                Err(ApiError::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "account_hook_unavailable",
                    "The website's account service did not answer; try again.",
                ))
            }
        }
    }

    /// The session a web page asks about: refused (403) to pages of origins its connection does
    /// not allow, and the response's CORS headers follow that connection.
    pub async fn page_session(&self, req: &HttpRequest, id: &SceneId) -> Result<Versioned, ApiError> {
        let current = self.session(id).await?;
        cors::check_origin(self, req, &self.connection_of(&current.session)?)?;
        Ok(current)
    }

    /// The same, for the browser that started it: it presents the secret as a bearer token.
    /// An unknown id answers like a wrong secret, so a caller without the secret cannot tell
    /// whether a session exists.
    pub async fn browser_session(&self, req: &HttpRequest, id: &SceneId) -> Result<Versioned, ApiError> {
        let secret = bearer(req)?;
        let current = match self.page_session(req, id).await {
            Err(e) if e.code == "session_not_found" => return Err(wrong_secret()),
            other => other?,
        };
        authorize_browser(&current.session, secret)?;
        Ok(current)
    }
}

/// What the account hook decided about a person.
pub enum Vetted {
    Allowed(Identity),
    Denied(String),
}

/// The sealing context of identities in session records.
const IDENTITY: &str = "identity";

pub fn configure(cfg: &mut web::ServiceConfig) {
    pc::configure(cfg);
    hosted::configure(cfg);
    phone_page::configure(cfg);
    ws::configure(cfg);
    website::configure(cfg);
    miniprogram::configure(cfg);
    tickets::configure(cfg);
    admin::configure(cfg);
    oidc::configure(cfg);
    ops::configure(cfg);
}

/// A session id from the path; a malformed one is simply not found.
pub fn scene_id(raw: &str) -> Result<SceneId, ApiError> {
    SceneId::parse(raw).ok_or_else(ApiError::session_not_found)
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing_credentials", "Send Authorization: Bearer <secret>."))
}

/// Checks the browser secret in constant time.
fn authorize_browser(session: &LoginSession, secret: &str) -> Result<(), ApiError> {
    if session.verify_secret(secret) {
        Ok(())
    } else {
        Err(wrong_secret())
    }
}

fn wrong_secret() -> ApiError {
    ApiError::unauthorized("invalid_secret", "This secret does not open this login session.")
}

/// Parses a JSON body that may be empty (then `T::default()`). A body of any other type is
/// refused (`415`): a page's CORS-simple `text/plain` post must not start anything.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    use actix_web::HttpMessage;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let content_type = req.content_type();
    if content_type != "application/json" && !content_type.ends_with("+json") {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("The JSON body is not valid: {e}")))
}
