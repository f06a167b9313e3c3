//! Typed settings: a TOML file, overlaid by `QRLOGIN_*` environment variables, validated once at
//! start. Secrets are wrapped so they never print; unknown keys are refused.

use crate::codes::PreparedLogo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The settings file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address browsers and phones reach this relay at (code and WebSocket URLs are built on
    /// it). Defaults to `http://{listen}`.
    pub public_base_url: Option<String>,
    /// `redis://…` (`rediss://` for TLS), or a Redis Cluster as `redis+cluster://h1:p1,h2:p2`:
    /// the shared store for many instances. Without it, sessions live in memory.
    pub redis_url: Option<String>,
    /// PEM certificates a `rediss://` server's certificate must chain to (a private CA);
    /// the system's roots when absent.
    pub redis_ca_file: Option<PathBuf>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_wechat_api_base")]
    pub wechat_api_base: String,
    /// Where browsers find WeChat's website-login page (`/connect/qrconnect`).
    #[serde(default = "default_wechat_open_base")]
    pub wechat_open_base: String,
    /// Used when a PC page names no connection; the first connection otherwise.
    pub default_connection: Option<String>,
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl_secs: u64,
    /// How long finished sessions stay readable, so late pollers see `expired`, not 404.
    #[serde(default = "default_linger")]
    pub linger_secs: u64,
    /// Login sessions one client IP may start per minute (0: no limit).
    #[serde(default = "default_sessions_per_ip")]
    pub sessions_per_ip_per_minute: u64,
    /// Mini-program calls (scan, confirm, cancel) one WeChat user may make per minute (0: no limit).
    #[serde(default = "default_calls_per_openid")]
    pub calls_per_openid_per_minute: u64,
    /// Mini-program calls one client IP may make per minute, counted before any WeChat call,
    /// so junk login codes cannot spend an AppID's quota (0: no limit).
    #[serde(default = "default_mini_program_calls_per_ip")]
    pub mini_program_calls_per_ip_per_minute: u64,
    /// Scan attempts one login session takes per minute, whoever makes them (0: no limit).
    #[serde(default = "default_scans_per_session")]
    pub scans_per_session_per_minute: u64,
    /// WebSockets one client IP may hold open on an instance (0: no cap).
    #[serde(default = "default_websockets_per_ip")]
    pub websockets_per_ip: usize,
    /// WebSockets one login session may have open on an instance (0: no cap).
    #[serde(default = "default_websockets_per_session")]
    pub websockets_per_session: usize,
    /// Long-polls one client IP may have waiting on an instance (0: no cap).
    #[serde(default = "default_long_polls_per_ip")]
    pub long_polls_per_ip: usize,
    /// On SIGTERM: how long requests in flight may take to finish after waiting browsers are
    /// told to reconnect elsewhere.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// `getwxacodeunlimit` calls the code pools of one AppID may make per minute, all
    /// instances together (WeChat allows 5 000); 0: no budget.
    #[serde(default = "default_code_budget")]
    pub code_calls_per_appid_per_minute: u64,
    /// A request body must arrive within this long (`408 body_timeout` otherwise).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// WebSockets and long-polls this instance holds open at most, all clients together;
    /// past it they are answered `503 server_busy`. Default: the open-file limit less a reserve
    /// of 1 024 for everything else (health checks, ordinary requests, Redis, WeChat).
    pub max_open_sockets: Option<usize>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the real client.
    #[serde(default)]
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Mount the WeChat simulator at `/sandbox/wechat` on the same listener: the sandbox's
    /// alone, never a config file's (`mount_simulator = true` there is an unknown field).
    #[serde(skip)]
    pub mount_simulator: bool,
    /// The master keys that seal secrets in the store (one base64 32-byte key per line, the
    /// first seals). Required, except in the sandbox, which makes one up.
    pub master_key_file: Option<PathBuf>,
    /// The operator's token for `/v1/admin/…` (inline or as a file); no admin API without one.
    pub admin_token: Option<Secret>,
    pub admin_token_file: Option<PathBuf>,
    /// The operator's shared mini-program: one AppID serving many tenants, each shown with its
    /// own name and logo. A mini-program connection without an `appid` uses it.
    pub shared_miniprogram: Option<SharedMiniProgram>,
    /// Set by the sandbox command only: the made-up master key is acceptable.
    #[serde(skip)]
    pub sandbox: bool,
    pub connections: Vec<ConnectionSettings>,
}

/// One connection: a tenant's mini-program, as the seed product calls it. Also the shape the
/// admin API takes, and (secrets left out) what the store keeps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Lower-case letters, digits and `-`, under 32 characters; fixed once chosen.
    pub identifier: String,
    /// `mini_program` (our mini-program confirms) or `website` (an Open Platform website
    /// application: WeChat's own QR page, `qrconnect`).
    #[serde(default)]
    pub kind: ConnectionKind,
    /// Website connections: the origin registered with WeChat as the callback domain
    /// (授权回调域); the relay's public base URL when absent.
    pub redirect_origin: Option<String>,
    pub display_name: String,
    /// A private deployment's own AppID (with its `app_secret`); absent, a mini-program
    /// connection runs on the operator's `[shared_miniprogram]`.
    pub appid: Option<String>,
    #[serde(default, skip_serializing)]
    pub app_secret: Option<Secret>,
    #[serde(default, skip_serializing)]
    pub app_secret_file: Option<PathBuf>,
    /// What the website backend presents as `Authorization: Bearer …` to redeem tickets (the
    /// connection's first credential; the admin API issues more).
    #[serde(default, skip_serializing)]
    pub backend_secret: Option<Secret>,
    #[serde(default, skip_serializing)]
    pub backend_secret_file: Option<PathBuf>,
    /// PNG or JPEG pasted over the code's centre; the bundled logo when absent.
    #[serde(default, skip_serializing)]
    pub logo: Option<PathBuf>,
    /// The mini-program page the code opens; the mini-program's home page when absent.
    pub page: Option<String>,
    #[serde(default = "default_env_version")]
    pub env_version: String,
    #[serde(default = "default_true")]
    pub check_path: bool,
    #[serde(default = "default_code_width")]
    pub code_width: u32,
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Web origins (`https://shop.example.com`) whose pages may call the PC endpoints (CORS),
    /// open the WebSocket and frame the hosted login page. The relay's own pages always may;
    /// no other origin when empty.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where the hosted login page may send the browser back with its ticket: exact URLs
    /// (no prefixes, no wildcards); a `/path` is on this relay's public base URL.
    #[serde(default)]
    pub callback_urls: Vec<String>,
    /// A mini-program connection may offer a website connection's QR beside its code: the
    /// hosted page and `qrlogin.js` then show both as tabs.
    pub companion: Option<String>,
    /// Accept scans of a forwarded or saved image (launch scenes 1048/1049). Off by default.
    #[serde(default)]
    pub allow_forwarded_scans: bool,
    /// Accept scans that send no `launch_scene` (a mini-program that cannot tell). Off by
    /// default: such a scan could be of a forwarded image.
    #[serde(default)]
    pub allow_missing_launch_scene: bool,
    /// The tenant's account hook: asked before every confirm, it allows (naming the tenant's
    /// user id) or denies the person.
    pub account_hook: Option<AccountHookSettings>,
    /// Only people the account hook names may log in (no sign-up through WeChat): needs a hook,
    /// and an `allow` without a `user_id` counts as a broken answer.
    #[serde(default)]
    pub login_only: bool,
    /// As an OpenID Connect client: public (a browser or native app with no secret, which must
    /// use PKCE and authenticates with `none`) rather than confidential (a backend credential).
    #[serde(default)]
    pub public_client: bool,
    /// `sun` (WeChat's mini-program code) or `link` (a standard QR code of `link_prefix` + id,
    /// opened by WeChat's "scan ordinary QR codes to open the mini-program" rule).
    #[serde(default)]
    pub code_type: CodeType,
    /// For `link` codes: an absolute URL, or a path (`/q/`) on this relay's public base URL.
    pub link_prefix: Option<String>,
    /// The sun code's centre disc, as a fraction of its width.
    #[serde(default = "default_disc_ratio")]
    pub disc_ratio: f32,
    /// Sun codes kept ready (pre-fetched for pre-minted ids), shared by all instances.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Refill the pool when fewer than this many are left.
    #[serde(default = "default_pool_low_water")]
    pub pool_low_water: usize,
}

/// `[shared_miniprogram]`: the operator's own mini-program, serving every tenant that brings
/// none of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedMiniProgram {
    pub appid: String,
    pub app_secret: Option<Secret>,
    pub app_secret_file: Option<PathBuf>,
}

/// `[connections.account_hook]`: where the tenant's hook listens and the secret its requests
/// are signed with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountHookSettings {
    pub url: String,
    #[serde(default, skip_serializing)]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing)]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    #[default]
    /// Written `mini_program` (or `miniprogram`).
    #[serde(alias = "miniprogram")]
    MiniProgram,
    Website,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeType {
    #[default]
    Sun,
    Link,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_key_prefix() -> String {
    "qrlogin:".into()
}
fn default_sessions_per_ip() -> u64 {
    30
}
fn default_calls_per_openid() -> u64 {
    20
}
fn default_mini_program_calls_per_ip() -> u64 {
    60
}
fn default_scans_per_session() -> u64 {
    10
}
fn default_websockets_per_ip() -> usize {
    200
}
fn default_websockets_per_session() -> usize {
    5
}
fn default_long_polls_per_ip() -> usize {
    50
}
fn default_shutdown_grace() -> u64 {
    10
}
fn default_code_budget() -> u64 {
    5000
}
fn default_body_read_timeout() -> u64 {
    10
}
fn default_wechat_open_base() -> String {
    "https://open.weixin.qq.com".into()
}
fn default_wechat_api_base() -> String {
    "https://api.weixin.qq.com".into()
}
fn default_ticket_ttl() -> u64 {
    60
}
fn default_linger() -> u64 {
    300
}
fn default_env_version() -> String {
    "release".into()
}
fn default_true() -> bool {
    true
}
fn default_code_width() -> u32 {
    430
}
fn default_session_ttl() -> u64 {
    120
}
fn default_disc_ratio() -> f32 {
    crate::codes::DEFAULT_DISC_RATIO
}
fn default_pool_size() -> usize {
    32
}
fn default_pool_low_water() -> usize {
    8
}

/// A WeChat app's credentials.
#[derive(Debug, Clone)]
pub struct WeChatApp {
    pub appid: String,
    pub secret: Secret,
}

/// A connection, validated and ready: secrets read, logo prepared.
#[derive(Debug, Clone)]
pub struct Connection {
    pub identifier: String,
    pub display_name: String,
    pub app: WeChatApp,
    /// The website backend's credentials (hashes): several at once, so rotation needs no downtime.
    pub credentials: Vec<Credential>,
    pub logo: Arc<PreparedLogo>,
    pub page: Option<String>,
    pub env_version: String,
    pub check_path: bool,
    pub code_width: u32,
    pub session_ttl_secs: u64,
    pub allowed_origins: Vec<String>,
    pub callback_urls: Vec<String>,
    pub companion: Option<String>,
    pub allow_forwarded_scans: bool,
    pub allow_missing_launch_scene: bool,
    pub account_hook: Option<AccountHook>,
    pub login_only: bool,
    pub public_client: bool,
    pub code: CodeSettings,
}

/// A backend credential: only its hash is kept; the raw value is shown once, at issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub hash: String,
    pub created_at: u64,
}

impl Credential {
    /// A new credential and its raw value.
    pub fn issue(now: u64) -> (Self, Secret) {
        let raw = format!("qrl_{}", crate::token::random_base62(40));
        (Self::for_value(&raw, now), Secret::new(raw))
    }

    /// The credential a configured `backend_secret` stands for.
    pub fn for_value(raw: &str, now: u64) -> Self {
        Self {
            id: crate::token::hash(raw)[..12].to_owned(),
            hash: crate::token::hash(raw),
            created_at: now,
        }
    }
}

/// A setting that is not acceptable, and which one (a `422` names it over the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// From a message that starts with the field's name (`"code_width must be …"`).
    pub fn new(message: String) -> Self {
        let field = message.split([' ', ':']).next().unwrap_or_default().to_owned();
        Self { field, message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A connection's account hook, ready: its URL and signing secret.
#[derive(Debug, Clone)]
pub struct AccountHook {
    pub url: String,
    pub secret: Secret,
}

/// How a connection's codes are made.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeSettings {
    Sun {
        disc_ratio: f32,
        pool_size: usize,
        pool_low_water: usize,
    },
    Link {
        prefix: String,
    },
    /// A website connection: WeChat's `qrconnect` page shows its own code, and sends the
    /// browser back to `callback_url`.
    QrConnect {
        callback_url: String,
    },
}

impl Connection {
    pub fn kind(&self) -> ConnectionKind {
        if self.is_website() {
            ConnectionKind::Website
        } else {
            ConnectionKind::MiniProgram
        }
    }

    /// Whether a backend credential belongs to this connection (hashes compared in constant time).
    pub fn accepts_credential(&self, raw: &str) -> bool {
        self.credentials
            .iter()
            .fold(false, |found, c| crate::token::matches_hash(raw, &c.hash) | found)
    }

    pub fn is_website(&self) -> bool {
        matches!(self.code, CodeSettings::QrConnect { .. })
    }

    /// Whether pages of this foreign web origin may use this connection (the relay's own
    /// origin is decided by the caller, which knows the request).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }

    /// Whether the hosted page may send a browser back to this URL: an exact match only.
    pub fn allows_callback(&self, url: &str) -> bool {
        self.callback_urls.iter().any(|registered| registered == url)
    }
}

/// The connections by identifier, with the default one.
#[derive(Debug, Clone)]
pub struct Connections {
    by_id: HashMap<String, Arc<Connection>>,
    default: String,
}

impl Connections {
    pub fn new(by_id: HashMap<String, Arc<Connection>>, default: String) -> Self {
        Self { by_id, default }
    }

    pub fn get(&self, identifier: &str) -> Option<&Arc<Connection>> {
        self.by_id.get(identifier)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Connection>> {
        self.by_id.values()
    }

    pub fn default_connection(&self) -> Option<&Arc<Connection>> {
        self.by_id.get(&self.default)
    }

    /// Whether any connection lets pages of this origin call the relay (CORS preflights are
    /// answered before the connection is known).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.by_id.values().any(|c| c.allows_origin(origin))
    }

    /// Whether the backend credential belongs to any connection (checked before anything is
    /// said about a ticket, so a stranger learns nothing about sessions).
    pub fn any_accepts_credential(&self, raw: &str) -> bool {
        self.by_id
            .values()
            .fold(false, |found, c| c.accepts_credential(raw) | found)
    }
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Reads the file, then overlays `QRLOGIN_LISTEN`, `QRLOGIN_PUBLIC_BASE_URL`,
    /// `QRLOGIN_REDIS_URL`, `QRLOGIN_KEY_PREFIX` and `QRLOGIN_WECHAT_API_BASE`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let mut settings: Settings = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("config {}: {}", path.display(), e.message())))?;
        settings.overlay_env(|name| std::env::var(name).ok());
        Ok(settings)
    }

    pub fn overlay_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("QRLOGIN_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("QRLOGIN_PUBLIC_BASE_URL") {
            self.public_base_url = Some(v);
        }
        if let Some(v) = var("QRLOGIN_REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = var("QRLOGIN_KEY_PREFIX") {
            self.key_prefix = v;
        }
        if let Some(v) = var("QRLOGIN_WECHAT_API_BASE") {
            self.wechat_api_base = v;
        }
        if let Some(v) = var("QRLOGIN_WECHAT_OPEN_BASE") {
            self.wechat_open_base = v;
        }
    }

    /// Checks every connection and prepares it (reads secret files, decodes the logo).
    /// `public_base_url` completes relative link prefixes.
    pub fn connections(&self, public_base_url: &str) -> Result<Connections, ConfigError> {
        if self.connections.is_empty() {
            return Err(ConfigError("the config names no connection".into()));
        }
        let shared = self.shared_app()?;
        let mut by_id = HashMap::new();
        for c in &self.connections {
            let mut connection = c
                .resolve(public_base_url, shared.as_ref(), None)
                .map_err(|e| ConfigError(format!("connection {:?}: {e}", c.identifier)))?;
            let backend_secret = read_secret(&c.backend_secret, &c.backend_secret_file)
                .map_err(|e| ConfigError(format!("connection {:?}: backend_secret: {e}", c.identifier)))?;
            connection.credentials = vec![Credential::for_value(backend_secret.expose(), 0)];
            if by_id.insert(c.identifier.clone(), Arc::new(connection)).is_some() {
                return Err(ConfigError(format!(
                    "connection {:?} is defined twice",
                    c.identifier
                )));
            }
        }
        for c in &self.connections {
            let kind_of = |id: &str| by_id.get(id).map(|w| w.kind());
            check_companion(c, kind_of)
                .map_err(|e| ConfigError(format!("connection {:?}: {e}", c.identifier)))?;
        }
        let default = match &self.default_connection {
            Some(d) if by_id.contains_key(d) => d.clone(),
            Some(d) => {
                return Err(ConfigError(format!(
                    "default_connection {d:?} is not a connection"
                )));
            }
            None => self.connections[0].identifier.clone(),
        };
        Ok(Connections { by_id, default })
    }
}

impl ConnectionSettings {
    /// Checks the settings and prepares the connection (secrets read; the `logo` given, else
    /// the `logo` file's, else the bundled one). Credentials are the caller's.
    pub fn resolve(
        &self,
        public_base_url: &str,
        shared: Option<&WeChatApp>,
        logo: Option<Arc<PreparedLogo>>,
    ) -> Result<Connection, FieldError> {
        let id = &self.identifier;
        let err = FieldError::new;
        if !is_valid_identifier(id) {
            return Err(err("identifier must be 1-31 characters of a-z, 0-9 and -".into()));
        }
        let app = match (&self.appid, shared) {
            (Some(appid), _) => {
                if !is_valid_appid(appid) {
                    return Err(err(format!(
                        "appid {appid:?} is not wx followed by 16 hex digits"
                    )));
                }
                WeChatApp {
                    appid: appid.clone(),
                    secret: read_secret(&self.app_secret, &self.app_secret_file)
                        .map_err(|e| err(format!("app_secret: {e}")))?,
                }
            }
            (None, Some(shared)) if self.kind == ConnectionKind::MiniProgram => {
                if self.app_secret.is_some() || self.app_secret_file.is_some() {
                    return Err(err(
                        "app_secret without an appid: give both (private) or neither (shared)".into(),
                    ));
                }
                shared.clone()
            }
            (None, _) => {
                return Err(err(
                    "appid is missing: give the connection's own appid and app_secret, or (mini-program connections) configure [shared_miniprogram]".into(),
                ));
            }
        };
        if !(280..=1280).contains(&self.code_width) {
            return Err(err("code_width must be between 280 and 1280".into()));
        }
        if !["release", "trial", "develop"].contains(&self.env_version.as_str()) {
            return Err(err("env_version must be release, trial or develop".into()));
        }
        if let Some(page) = &self.page
            && (page.starts_with('/') || page.contains('?') || page.is_empty())
        {
            return Err(err(
                "page must be a path like pages/login/login, without a leading / or query".into(),
            ));
        }
        if !(1..=3600).contains(&self.session_ttl_secs) {
            return Err(err("session_ttl_secs must be between 1 and 3600".into()));
        }
        let code = match (self.kind, self.code_type) {
            (ConnectionKind::Website, _) => {
                let origin = self
                    .redirect_origin
                    .as_deref()
                    .unwrap_or(public_base_url)
                    .trim_end_matches('/');
                if !(origin.starts_with("https://") || origin.starts_with("http://")) {
                    return Err(err("redirect_origin must be an http(s) origin".into()));
                }
                CodeSettings::QrConnect {
                    callback_url: format!("{origin}/v1/callbacks/wechat-website"),
                }
            }
            (_, CodeType::Sun) => {
                if !(0.1..=0.6).contains(&self.disc_ratio) {
                    return Err(err("disc_ratio must be between 0.1 and 0.6".into()));
                }
                if (self.pool_size > 0 && self.pool_low_water > self.pool_size) || self.pool_size > 10_000 {
                    return Err(err(
                        "pool_low_water must not exceed pool_size (at most 10000; 0 turns the pool off)"
                            .into(),
                    ));
                }
                CodeSettings::Sun {
                    disc_ratio: self.disc_ratio,
                    pool_size: self.pool_size,
                    pool_low_water: self.pool_low_water,
                }
            }
            (_, CodeType::Link) => {
                let prefix = match self.link_prefix.as_deref() {
                    Some(p) if p.starts_with('/') => format!("{}{p}", public_base_url.trim_end_matches('/')),
                    Some(p) if p.starts_with("https://") || p.starts_with("http://") => p.to_owned(),
                    _ => {
                        return Err(err(
                            "code_type = \"link\" needs link_prefix, a URL or a /path".into()
                        ));
                    }
                };
                CodeSettings::Link { prefix }
            }
        };
        for origin in &self.allowed_origins {
            if !is_origin(origin) {
                return Err(err(format!(
                    "allowed_origins: {origin:?} is not a web origin like https://shop.example.com (no path, no trailing /)"
                )));
            }
        }
        let mut callback_urls = Vec::with_capacity(self.callback_urls.len());
        for url in &self.callback_urls {
            let absolute = match url.strip_prefix('/') {
                Some(path) => format!("{}/{path}", public_base_url.trim_end_matches('/')),
                None => url.clone(),
            };
            if origin_of(&absolute).is_none() || absolute.contains('#') {
                return Err(err(format!(
                    "callback_urls: {url:?} is not an http(s) URL without a fragment (or a /path)"
                )));
            }
            callback_urls.push(absolute);
        }
        let account_hook = match &self.account_hook {
            Some(hook) => {
                if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
                    return Err(err("account_hook.url must be an http(s) URL".into()));
                }
                let secret = read_secret(&hook.secret, &hook.secret_file)
                    .map_err(|e| err(format!("account_hook.secret: {e}")))?;
                Some(AccountHook {
                    url: hook.url.clone(),
                    secret,
                })
            }
            None if self.login_only => {
                return Err(err(
                    "login_only needs an account_hook: only the tenant knows who has an account".into(),
                ));
            }
            None => None,
        };
        let logo = match (logo, &self.logo) {
            (Some(prepared), _) => prepared,
            (None, Some(path)) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| err(format!("logo: cannot read {}: {e}", path.display())))?;
                Arc::new(
                    PreparedLogo::prepare(&bytes)
                        .map_err(|e| err(format!("logo {}: {e}", path.display())))?,
                )
            }
            (None, None) => Arc::new(PreparedLogo::bundled()),
        };
        Ok(Connection {
            identifier: id.clone(),
            display_name: self.display_name.clone(),
            app,
            credentials: Vec::new(),
            logo,
            page: self.page.clone(),
            env_version: self.env_version.clone(),
            check_path: self.check_path,
            code_width: self.code_width,
            session_ttl_secs: self.session_ttl_secs,
            allowed_origins: self.allowed_origins.clone(),
            callback_urls,
            companion: self.companion.clone(),
            account_hook,
            login_only: self.login_only,
            public_client: self.public_client,
            allow_forwarded_scans: self.allow_forwarded_scans,
            allow_missing_launch_scene: self.allow_missing_launch_scene,
            code,
        })
    }
}

impl Settings {
    /// The operator's shared mini-program, ready.
    pub fn shared_app(&self) -> Result<Option<WeChatApp>, ConfigError> {
        let Some(shared) = &self.shared_miniprogram else {
            return Ok(None);
        };
        if !is_valid_appid(&shared.appid) {
            return Err(ConfigError(format!(
                "shared_miniprogram: appid {:?} is not wx followed by 16 hex digits",
                shared.appid
            )));
        }
        Ok(Some(WeChatApp {
            appid: shared.appid.clone(),
            secret: read_secret(&shared.app_secret, &shared.app_secret_file)
                .map_err(|e| ConfigError(format!("shared_miniprogram: app_secret: {e}")))?,
        }))
    }

    /// The operator token, if the admin API is on.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        if self.admin_token.is_none() && self.admin_token_file.is_none() {
            return Ok(None);
        }
        let token = read_secret(&self.admin_token, &self.admin_token_file)
            .map_err(|e| ConfigError(format!("admin_token: {e}")))?;
        if token.expose().len() < 12 && !self.sandbox {
            return Err(ConfigError("admin_token: use at least 12 characters".into()));
        }
        Ok(Some(token))
    }

    /// The master keys: the file's, or the sandbox's made-up one.
    /// The private roots for `rediss://`, read from `redis_ca_file`.
    pub fn redis_ca(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.redis_ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| ConfigError(format!("cannot read redis_ca_file {}: {e}", path.display())))
            })
            .transpose()
    }

    pub fn master_keys(&self) -> Result<crate::crypto::MasterKeys, ConfigError> {
        match (&self.master_key_file, self.sandbox) {
            (Some(path), _) => crate::crypto::MasterKeys::from_file(path).map_err(|e| ConfigError(e.0)),
            (None, true) => Ok(crate::crypto::MasterKeys::sandbox()),
            (None, false) => Err(ConfigError(
                "master_key_file is required: one base64 32-byte key per line (head -c 32 /dev/urandom | base64)".into(),
            )),
        }
    }
}

pub fn read_secret(inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<Secret, String> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => return Err("give the value or a file, not both".into()),
        (Some(s), None) => s.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Err("missing".into()),
    };
    if value.is_empty() {
        return Err("empty".into());
    }
    Ok(Secret(value))
}

/// The companion rule: only a mini-program connection may name one, and it must be a website
/// connection (`kind_of` tells the kind of a connection by identifier).
pub fn check_companion(
    settings: &ConnectionSettings,
    kind_of: impl Fn(&str) -> Option<ConnectionKind>,
) -> Result<(), FieldError> {
    match &settings.companion {
        Some(c)
            if settings.kind != ConnectionKind::MiniProgram
                || kind_of(c) != Some(ConnectionKind::Website) =>
        {
            Err(FieldError::new(format!(
                "companion {c:?} must be a website connection, named by a mini-program connection"
            )))
        }
        _ => Ok(()),
    }
}

pub fn is_valid_identifier(id: &str) -> bool {
    (1..32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `scheme://host[:port]` of an http(s) URL, as browsers write an `Origin`.
pub fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    valid.then(|| &url[..url.len() - rest.len() + authority_len])
}

/// Whether `text` is exactly a web origin (no path, query or trailing `/`).
pub fn is_origin(text: &str) -> bool {
    origin_of(text) == Some(text)
}

pub fn is_valid_appid(appid: &str) -> bool {
    appid.len() == 18 && appid.starts_with("wx") && appid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }

    const GOOD: &str = r#"
        [[connections]]
        identifier = "shop"
        display_name = "Shop"
        appid = "wx0123456789abcdef"
        app_secret = "s3cret-app"
        backend_secret = "s3cret-backend"
    "#;

    #[test]
    fn a_minimal_config_resolves_with_defaults_and_redacts_secrets() {
        let settings = parse(GOOD).unwrap();
        let connections = settings.connections("http://relay").unwrap();
        let shop = connections.default_connection().unwrap();
        assert_eq!(shop.identifier, "shop");
        assert_eq!(shop.session_ttl_secs, 120);
        let printed = format!("{settings:?} {shop:?}");
        assert!(!printed.contains("s3cret"), "secrets leak into Debug: {printed}");
    }

    #[test]
    fn unknown_keys_and_bad_fields_are_refused() {
        assert!(parse(&format!("{GOOD}\nsurprise = 1")).is_err());
        let bad_appid = GOOD.replace("wx0123456789abcdef", "wx123");
        assert!(
            parse(&bad_appid)
                .unwrap()
                .connections("http://relay")
                .unwrap_err()
                .0
                .contains("appid")
        );
        let bad_id = GOOD.replace("\"shop\"", "\"Shop!\"");
        assert!(
            parse(&bad_id)
                .unwrap()
                .connections("http://relay")
                .unwrap_err()
                .0
                .contains("identifier")
        );
        let no_secret = GOOD.replace("app_secret = \"s3cret-app\"", "");
        assert!(
            parse(&no_secret)
                .unwrap()
                .connections("http://relay")
                .unwrap_err()
                .0
                .contains("app_secret")
        );
    }

    #[test]
    fn origins_and_callback_urls_are_checked() {
        assert_eq!(
            origin_of("https://a.example:8443/cb?x=1"),
            Some("https://a.example:8443")
        );
        assert_eq!(origin_of("http://127.0.0.1:8000"), Some("http://127.0.0.1:8000"));
        assert_eq!(origin_of("https://user@evil.example/"), None);
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert!(is_origin("https://shop.example"));
        assert!(!is_origin("https://shop.example/"));
        let resolve = |extra: &str| {
            parse(&format!("{GOOD}\n{extra}"))
                .unwrap()
                .connections("http://relay")
        };
        assert!(resolve(r#"allowed_origins = ["https://shop.example/"]"#).is_err());
        assert!(resolve(r#"callback_urls = ["https://shop.example/cb#x"]"#).is_err());
        let ok = resolve(r#"callback_urls = ["https://shop.example/cb", "/back"]"#).unwrap();
        let shop = ok.default_connection().unwrap();
        assert!(shop.allows_callback("https://shop.example/cb"));
        assert!(shop.allows_callback("http://relay/back"));
        assert!(!shop.allows_callback("https://shop.example/cb/"));
        assert!(!shop.allows_callback("https://shop.example/cb?x=1"));
        assert!(
            resolve(r#"companion = "shop""#)
                .unwrap_err()
                .0
                .contains("companion")
        );
    }

    #[test]
    fn tenants_run_on_the_shared_mini_program_or_their_own() {
        let shared = r#"
            [shared_miniprogram]
            appid = "wx00000000000000aa"
            app_secret = "operator-secret"
            [[connections]]
            identifier = "tenant"
            display_name = "Tenant"
            backend_secret = "b"
            [[connections]]
            identifier = "private"
            display_name = "Private"
            appid = "wx00000000000000bb"
            app_secret = "own-secret"
            backend_secret = "b"
        "#;
        let connections = parse(shared).unwrap().connections("http://relay").unwrap();
        let tenant = connections.get("tenant").unwrap();
        assert_eq!(tenant.app.appid, "wx00000000000000aa");
        assert_eq!(tenant.app.secret.expose(), "operator-secret");
        assert_eq!(
            connections.get("private").unwrap().app.appid,
            "wx00000000000000bb"
        );

        let without_shared = shared
            .replace("[shared_miniprogram]", "")
            .replace("appid = \"wx00000000000000aa\"\n", "")
            .replace("app_secret = \"operator-secret\"", "");
        assert!(parse(&without_shared).is_ok_and(|s| {
            s.connections("http://relay")
                .unwrap_err()
                .0
                .contains("appid is missing")
        }));
        let website = shared.replace(
            "display_name = \"Tenant\"",
            "display_name = \"Tenant\"\nkind = \"website\"",
        );
        assert!(
            parse(&website)
                .unwrap()
                .connections("http://relay")
                .unwrap_err()
                .0
                .contains("appid is missing")
        );
        let half = shared.replace(
            "display_name = \"Tenant\"",
            "display_name = \"Tenant\"\napp_secret = \"x\"",
        );
        assert!(
            parse(&half)
                .unwrap()
                .connections("http://relay")
                .unwrap_err()
                .0
                .contains("give both")
        );
    }

    #[test]
    fn environment_overlays_the_file() {
        let mut settings = parse(GOOD).unwrap();
        settings.overlay_env(|name| (name == "QRLOGIN_REDIS_URL").then(|| "redis://x".to_owned()));
        assert_eq!(settings.redis_url.as_deref(), Some("redis://x"));
    }
}
