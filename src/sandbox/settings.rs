//! The sandbox: the relay configured for the built-in simulator's mini-program.

use super::{
    SANDBOX_APP_SECRET, SANDBOX_APPID, SANDBOX_LOGIN_PAGE, SANDBOX_WEBSITE_APP_SECRET, SANDBOX_WEBSITE_APPID,
};
use crate::config::{CodeType, ConnectionKind, ConnectionSettings, Secret, Settings};

/// What the `sandbox` command can change.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub listen: String,
    pub redis_url: Option<String>,
    /// A standalone simulator; the sandbox mounts its own when absent.
    pub wechat_api_base: Option<String>,
    pub backend_secret: String,
    pub session_ttl_secs: u64,
    /// A developer's own site, registered on every sandbox connection (with the defaults).
    pub allowed_origins: Vec<String>,
    pub callback_urls: Vec<String>,
    pub admin_token: String,
}

/// A site served on localhost:8000 (`python3 -m http.server 8000`) works with the sandbox as it
/// comes, as the README's example does; the sandbox page's own address is always registered.
pub const DEFAULT_SITE_ORIGINS: [&str; 2] = ["http://localhost:8000", "http://127.0.0.1:8000"];
pub const DEFAULT_SITE_CALLBACKS: [&str; 3] = [
    "http://localhost:8000/callback.html",
    "http://127.0.0.1:8000/callback.html",
    "/sandbox",
];

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            redis_url: None,
            wechat_api_base: None,
            backend_secret: "sandbox".into(),
            session_ttl_secs: 120,
            allowed_origins: DEFAULT_SITE_ORIGINS.map(String::from).to_vec(),
            callback_urls: DEFAULT_SITE_CALLBACKS.map(String::from).to_vec(),
            admin_token: "sandbox-admin".into(),
        }
    }
}

/// The sandbox's settings: the relay with a `default` connection on the sandbox mini-program,
/// the simulator mounted on the same listener unless `wechat_api_base` points elsewhere.
pub fn sandbox_settings(options: SandboxOptions) -> Settings {
    let SandboxOptions {
        listen,
        redis_url,
        wechat_api_base,
        backend_secret,
        session_ttl_secs,
        allowed_origins,
        callback_urls,
        admin_token,
    } = options;
    let mini_program = ConnectionSettings {
        identifier: "default".into(),
        kind: ConnectionKind::MiniProgram,
        redirect_origin: None,
        display_name: "Sandbox Mini Program".into(),
        appid: Some(SANDBOX_APPID.into()),
        app_secret: Some(Secret::new(SANDBOX_APP_SECRET)),
        app_secret_file: None,
        backend_secret: Some(Secret::new(backend_secret)),
        backend_secret_file: None,
        logo: None,
        page: Some(SANDBOX_LOGIN_PAGE.into()),
        env_version: "release".into(),
        check_path: true,
        code_width: 430,
        session_ttl_secs,
        allowed_origins,
        callback_urls,
        companion: Some("website".into()),
        allow_forwarded_scans: false,
        allow_missing_launch_scene: false,
        account_hook: None,
        login_only: false,
        public_client: false,
        code_type: CodeType::Sun,
        link_prefix: None,
        disc_ratio: crate::codes::DEFAULT_DISC_RATIO,
        pool_size: 16,
        pool_low_water: 4,
    };
    // The same mini-program, opened by a standard QR code of `{public base}/q/{id}`.
    let link = ConnectionSettings {
        identifier: "link".into(),
        display_name: "Sandbox Mini Program (link QR)".into(),
        code_type: CodeType::Link,
        link_prefix: Some("/q/".into()),
        companion: None,
        pool_size: 0,
        ..mini_program.clone()
    };
    // The sandbox Open Platform account's website application: WeChat's own QR login page.
    let website = ConnectionSettings {
        identifier: "website".into(),
        display_name: "Sandbox Website App".into(),
        kind: ConnectionKind::Website,
        appid: Some(SANDBOX_WEBSITE_APPID.into()),
        app_secret: Some(Secret::new(SANDBOX_WEBSITE_APP_SECRET)),
        companion: None,
        pool_size: 0,
        ..mini_program.clone()
    };
    Settings {
        listen,
        public_base_url: None,
        redis_url,
        redis_ca_file: None,
        key_prefix: "qrlogin:".into(),
        mount_simulator: wechat_api_base.is_none(),
        // A standalone simulator serves WeChat's login page too; a mounted one is placed at start.
        wechat_open_base: wechat_api_base.clone().unwrap_or_default(),
        wechat_api_base: wechat_api_base.unwrap_or_default(),
        default_connection: Some("default".into()),
        ticket_ttl_secs: 60,
        linger_secs: 300,
        // Generous, so scripted walk-throughs are not throttled; still bounded.
        sessions_per_ip_per_minute: 600,
        calls_per_openid_per_minute: 120,
        mini_program_calls_per_ip_per_minute: 1200,
        scans_per_session_per_minute: 60,
        websockets_per_ip: 1000,
        websockets_per_session: 5,
        long_polls_per_ip: 200,
        shutdown_grace_secs: 10,
        body_read_timeout_secs: 10,
        code_calls_per_appid_per_minute: 5000,
        max_open_sockets: None,
        trusted_proxies: Default::default(),
        master_key_file: None,
        admin_token: Some(Secret::new(admin_token)),
        admin_token_file: None,
        shared_miniprogram: None,
        sandbox: true,
        connections: vec![mini_program, link, website],
    }
}
