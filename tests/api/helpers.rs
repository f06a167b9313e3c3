//! `spawn_app` and friends: a real relay on a random port, the simulator it talks to, a real
//! `redis-server` (started once per test run on a free port, or `REDIS_URL`).

use futures_util::StreamExt;
use qrlogin_relay::config::Settings;
use qrlogin_relay::sandbox::{SandboxOptions, sandbox_settings};
use qrlogin_relay::startup::{Application, simulator_server};
use qrlogin_relay::token::random_base62;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The longest any awaited condition may take before the test fails (never a sleep).
pub const PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
}

/// Runs an async test body once per store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name($crate::helpers::Backend::Memory).await
            }
            #[tokio::test]
            async fn redis() {
                super::$name($crate::helpers::Backend::Redis).await
            }
        }
    )*};
}

static REDIS: OnceLock<String> = OnceLock::new();

/// `REDIS_URL`, or a private `redis-server` that lives as long as this test process.
#[allow(clippy::zombie_processes)] // the watchdog shell below is meant to outlive this call
pub fn redis_url() -> String {
    REDIS
        .get_or_init(|| {
            if let Ok(url) = std::env::var("REDIS_URL") {
                return url;
            }
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let found = std::process::Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok();
            assert!(
                found,
                "redis-server is not installed: apt-get install redis-server, or set REDIS_URL"
            );
            // The shell waits for this process to end, then stops the server; it is reaped by
            // init after we exit, so it is deliberately never waited on.
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null & r=$!; \
                 while kill -0 {} 2>/dev/null; do sleep 1; done; kill $r",
                std::process::id()
            );
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .spawn()
                .expect("start redis-server");
            let url = format!("redis://127.0.0.1:{port}/");
            let client = redis::Client::open(url.as_str()).unwrap();
            let ready = (0..500).any(|_| {
                let up = client
                    .get_connection()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok();
                if !up {
                    std::thread::sleep(Duration::from_millis(20));
                }
                up
            });
            assert!(ready, "redis-server on port {port} did not start");
            url
        })
        .clone()
}

pub struct TestApp {
    pub base: String,
    /// The WeChat API base the relay uses (the simulator).
    pub wechat: String,
    pub http: reqwest::Client,
}

pub fn settings(backend: Backend) -> Settings {
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(redis_url()),
    };
    let mut settings = sandbox_settings(SandboxOptions {
        listen: "127.0.0.1:0".into(),
        redis_url: redis,
        ..SandboxOptions::default()
    });
    // Each test gets its own keys in the shared Redis.
    settings.key_prefix = format!("test-{}:", random_base62(10));
    // No background code fetching, so tests can count WeChat calls; the pool tests turn it on.
    for connection in &mut settings.connections {
        connection.pool_size = 0;
    }
    settings
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(settings(backend)).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        qrlogin_relay::telemetry::init();
    }
    let wechat = (!settings.mount_simulator).then(|| settings.wechat_api_base.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::build(settings, listener)
        .await
        .expect("build the app");
    let base = app.public_base_url().to_owned();
    tokio::spawn(app.run_until_stopped());
    let wechat = wechat.unwrap_or_else(|| format!("{base}/sandbox/wechat"));
    TestApp {
        base,
        wechat,
        http: reqwest::Client::new(),
    }
}

/// The WeChat simulator alone, for tests where several relays share it.
pub fn spawn_simulator() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(simulator_server(listener).unwrap());
    base
}

/// Sends the request and reads its JSON answer.
pub async fn fetch_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A session as the PC page holds it.
pub struct PcSession {
    pub id: String,
    pub secret: String,
    pub body: Value,
}

/// What the mini-program holds after scanning.
pub struct Scan {
    pub scene: String,
    pub scan_token: String,
    pub body: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(self.url(path)).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_session(&self, body: Value) -> (StatusCode, Value) {
        self.post_json("/v1/login-sessions", &body).await
    }

    pub async fn start(&self) -> PcSession {
        let (status, body) = self.create_session(json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        PcSession {
            id: body["id"].as_str().unwrap().into(),
            secret: body["secret"].as_str().unwrap().into(),
            body,
        }
    }

    pub async fn get_session(&self, session: &PcSession, query: &str) -> (StatusCode, Value) {
        let url = self.url(&format!("/v1/login-sessions/{}{query}", session.id));
        let response = self
            .http
            .get(url)
            .bearer_auth(&session.secret)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn mint(&self, what: &str, body: Value) -> String {
        let url = format!("{}/_sim/{what}", self.wechat);
        let answer = fetch_json(self.http.post(url).json(&body)).await;
        answer["code"].as_str().expect("a code").to_owned()
    }

    /// What `wx.login` would give `user`'s mini-program.
    pub async fn login_code(&self, user: &str) -> String {
        self.mint("login-code", json!({ "user": user })).await
    }

    /// What the phone-number button would give `user`.
    pub async fn phone_code(&self, user: &str, phone: &str) -> String {
        self.mint("phone-code", json!({ "user": user, "phone": phone }))
            .await
    }

    /// `DELETE` the session as the browser holding `secret`.
    pub async fn give_up(&self, session: &PcSession, secret: &str) -> StatusCode {
        let url = self.url(&format!("/v1/login-sessions/{}", session.id));
        self.http
            .delete(url)
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn scan_as(&self, scene: &str, user: &str) -> (StatusCode, Value) {
        let login_code = self.login_code(user).await;
        self.post_json(
            "/v1/mp/scan",
            &json!({ "scene": scene, "login_code": login_code, "launch_scene": 1047 }),
        )
        .await
    }

    pub async fn scan(&self, session: &PcSession, user: &str) -> Scan {
        let (status, body) = self.scan_as(&session.id, user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Scan {
            scene: session.id.clone(),
            scan_token: body["scan_token"].as_str().unwrap().into(),
            body,
        }
    }

    pub async fn confirm(&self, scan: &Scan, phone_code: &str) -> (StatusCode, Value) {
        let body = json!({ "scene": scan.scene, "scan_token": scan.scan_token, "phone_code": phone_code });
        self.post_json("/v1/mp/confirm", &body).await
    }

    /// Scans and confirms as `user` with `phone`.
    pub async fn log_in(&self, session: &PcSession, user: &str, phone: &str) -> Scan {
        let scan = self.scan(session, user).await;
        let phone_code = self.phone_code(user, phone).await;
        let (status, body) = self.confirm(&scan, &phone_code).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        scan
    }

    pub async fn redeem(&self, ticket: &str, credential: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/v1/tickets/redeem"))
            .bearer_auth(credential)
            .json(&json!({ "ticket": ticket }))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Verifies an ID token as a website backend would: with the relay's JWKS and an ordinary
    /// JWT library (`jsonwebtoken`), checking issuer and audience. Returns the claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Value, jsonwebtoken::errors::Error> {
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(fetch_json(self.http.get(self.url("/.well-known/jwks.json"))).await)
                .unwrap();
        let kid = jsonwebtoken::decode_header(token)?.kid.unwrap_or_default();
        let jwk = jwks
            .find(&kid)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.base]);
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
        Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
    }

    pub async fn sim_calls(&self, api: &str) -> u64 {
        let stats = fetch_json(self.http.get(format!("{}/_sim/stats", self.wechat))).await;
        stats["calls"][api].as_u64().unwrap_or(0)
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Asserts that starting a session is refused with a 503 carrying `Retry-After` and `code`.
    pub async fn start_refused_503(&self, code: &str) {
        let response = self
            .http
            .post(self.url("/v1/login-sessions"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response.headers().contains_key("retry-after"),
            "503 without Retry-After"
        );
        assert_eq!(response.json::<Value>().await.unwrap()["error"], code);
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn until_readyz(&self, status: StatusCode) {
        let started = tokio::time::Instant::now();
        while self.http.get(self.url("/readyz")).send().await.unwrap().status() != status {
            assert!(started.elapsed() < PATIENCE, "/readyz never answered {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Waits until a browser is registered as waiting on this instance.
    pub async fn until_waiting(&self, count: u64) {
        tokio::time::timeout(PATIENCE, async {
            while self.metric("qrlogin_waiting_sessions").await < count {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the browser never started waiting");
    }

    pub async fn socket(&self, session: &PcSession) -> Socket {
        let mut socket = self.unauthenticated_socket(session, None).await;
        socket
            .send_json(json!({ "type": "auth", "secret": session.secret }))
            .await;
        socket
    }

    /// A WebSocket to the session that has not sent its secret yet (optionally with `Origin`).
    pub async fn unauthenticated_socket(&self, session: &PcSession, origin: Option<&str>) -> Socket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/v1/login-sessions/{}/ws",
            self.base.replacen("http", "ws", 1),
            session.id
        );
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().unwrap());
        }
        Socket::connect(request).await
    }
}

pub struct Socket {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Socket {
    pub async fn connect(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        Socket { stream }
    }

    pub async fn send_json(&mut self, value: Value) {
        use futures_util::SinkExt;
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send a frame");
    }

    /// Waits for the server to close the socket; returns the close code and reason.
    pub async fn closed_with(&mut self) -> (u16, String) {
        let frame = tokio::time::timeout(PATIENCE, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("the socket was not closed")
        .expect("a close code");
        (u16::from(frame.code), frame.reason.to_string())
    }

    /// The next JSON text frame (pings are answered by the library).
    pub async fn next_json(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("no frame arrived")
    }

    /// Closes from the client side.
    pub async fn close(&mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Skips frames until one with `status`; returns it.
    pub async fn until_status(&mut self, status: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["status"] == status {
                return frame;
            }
        }
    }

    /// Waits for the server's normal close.
    pub async fn expect_normal_close(&mut self) {
        assert_eq!(self.closed_with().await.0, 1000, "normal closure");
    }
}

/// Runs `node --test` on one test file with `env`, one test at a time, and fails with Node's
/// report unless every test passed. Node 20 needs a flag for its WebSocket client.
pub async fn run_node_tests(file: &std::path::Path, env: &[(&str, String)]) {
    let has_websocket = std::process::Command::new("node")
        .args(["-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
        .status()
        .expect("node is not installed: apt-get install nodejs npm")
        .success();
    let mut node = std::process::Command::new("node");
    if !has_websocket {
        node.arg("--experimental-websocket");
    }
    node.args(["--test", "--test-concurrency=1"]).arg(file);
    for (name, value) in env {
        node.env(name, value);
    }
    run_to_pass(node, "the Node tests", "# fail 0").await;
}

/// Runs an outside tool (off the async workers) and fails with its output unless it exits 0
/// and says `marker`.
pub async fn run_to_pass(mut command: std::process::Command, what: &str, marker: &str) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{report}");
    assert!(report.contains(marker), "{report}");
}
