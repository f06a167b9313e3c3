//! The PC side as people use it: the hosted page, the popup and `qrlogin.js` on another
//! origin, driven in headless Chromium (Debian's `chromium`) by `playwright-core` from Node.
//! This test starts a relay and a second local origin serving `tests/browser/site/` (the
//! README's snippet among them), then runs the Node tests of `tests/browser/` (the PC side, and
//! the OIDC face through openid-client); screenshots of every state land in
//! `target/browser-screenshots/`.

use crate::helpers::{Backend, redis_url, run_node_tests, settings, spawn_app_with, spawn_simulator};
use crate::processes::{RelayProcess, TcpProxy, serve_config, temp_dir};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// Where the README's snippet expects the relay; the test site points its pages at ours.
const SNIPPET_RELAY: &str = "http://127.0.0.1:8080";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium and the pinned `playwright-core`, or a panic that says what to install.
fn prepare() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: apt-get install chromium (or set CHROMIUM)"
    );
    assert!(
        Command::new("node").arg("--version").output().is_ok(),
        "node is not installed: apt-get install nodejs npm"
    );
    let dir = browser_dir();
    let installed = ["playwright-core", "openid-client"]
        .iter()
        .all(|package| dir.join("node_modules").join(package).exists());
    if !installed {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is not installed: apt-get install npm");
        assert!(installed.success(), "npm ci in tests/browser failed");
    }
    chromium
}

/// Where the test site's pages find the relay, known once the relay (which must know the site's
/// origin first) has started.
type RelayAddress = Arc<OnceLock<String>>;

/// The test site: `tests/browser/site/` on its own origin, pointed at the relay; the callback
/// page also takes form posts (`response_mode=form_post`) and shows what it received.
fn spawn_site(relay: RelayAddress) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let relay = web::Data::from(relay);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(relay.clone())
            .route("/callback.html", web::post().to(form_post))
            .route("/hook", web::post().to(deny_everyone))
            .route("/{file}", web::get().to(site_file))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

async fn site_file(relay: web::Data<OnceLock<String>>, req: HttpRequest) -> HttpResponse {
    let name = req.match_info().query("file");
    let path = browser_dir().join("site").join(name);
    let safe = name.ends_with(".html") && !name.contains("..") && !name.contains('/');
    match std::fs::read_to_string(&path) {
        Ok(text) if safe => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(text.replace(SNIPPET_RELAY, relay.get().map(String::as_str).unwrap_or_default())),
        _ => HttpResponse::NotFound().finish(),
    }
}

async fn form_post(form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let received = serde_json::to_string(&form.into_inner()).unwrap();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>posted</title><pre id=\"received\">{}</pre>",
            qrlogin_relay::markup::escape_html(&received)
        ))
}

/// The account hook of the `members` connection: nobody has an account.
async fn deny_everyone() -> HttpResponse {
    HttpResponse::Ok()
        .json(serde_json::json!({ "allow": false, "reason": "No account for this WeChat user" }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pc_side_works_in_chromium() {
    let chromium = prepare();
    let relay_address = RelayAddress::default();
    let site = spawn_site(relay_address.clone());
    let mut settings = settings(Backend::Memory);
    for connection in &mut settings.connections {
        connection.allowed_origins = vec![site.clone()];
        connection.callback_urls = vec![format!("{site}/callback.html")];
    }
    // A connection whose codes expire fast, to watch the page renew them.
    let mut short = settings.connections[0].clone();
    short.identifier = "short".into();
    short.session_ttl_secs = 2;
    short.companion = None;
    settings.connections.push(short);
    // A login-only connection whose account hook refuses everyone.
    let mut members = settings.connections[0].clone();
    members.identifier = "members".into();
    members.companion = None;
    members.login_only = true;
    members.account_hook = Some(qrlogin_relay::config::AccountHookSettings {
        url: format!("{site}/hook"),
        secret: Some(qrlogin_relay::config::Secret::new("browser-test-hook")),
        secret_file: None,
    });
    settings.connections.push(members);
    // A public OIDC client (a single-page app): PKCE, no secret.
    let mut spa = settings.connections[0].clone();
    spa.identifier = "spa".into();
    spa.companion = None;
    spa.public_client = true;
    settings.connections.push(spa);
    let relay = spawn_app_with(settings).await.base;
    relay_address.set(relay.clone()).unwrap();

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let env = [
        ("RELAY", relay.clone()),
        ("SITE", site),
        ("WECHAT", format!("{relay}/sandbox/wechat")),
        ("CHROMIUM", chromium),
        ("SHOTS", shots.display().to_string()),
    ];
    run_node_tests(&browser_dir().join("pc_side.test.mjs"), &env).await;
    run_node_tests(&browser_dir().join("oidc.test.mjs"), &env).await;
}

/// Two relay processes on one Redis behind a balancer (the test's TCP proxy, which sends new
/// connections to the first instance that accepts them); the hosted page waits on the first,
/// which is sent SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_waiting_on_a_stopping_instance_reconnects_to_another_and_logs_in() {
    let chromium = prepare();
    let relay_address = RelayAddress::default();
    let site = spawn_site(relay_address.clone());
    let simulator = spawn_simulator();
    let (first_port, second_port) = (crate::processes::free_port(), crate::processes::free_port());
    let balancer = TcpProxy::start(vec![
        ([127, 0, 0, 1], first_port).into(),
        ([127, 0, 0, 1], second_port).into(),
    ])
    .await;
    let relay = format!("http://{}", balancer.addr);
    relay_address.set(relay.clone()).unwrap();
    let dir = temp_dir("restart");
    let config = serve_config(
        &dir,
        &format!(
            "public_base_url = \"{relay}\"\nredis_url = \"{}\"\nkey_prefix = \"test-{}:\"\n\
             wechat_api_base = \"{simulator}\"\nshutdown_grace_secs = 5",
            redis_url(),
            qrlogin_relay::token::random_base62(8),
        ),
        &format!(
            "identifier = \"default\"\ndisplay_name = \"Restart test\"\npool_size = 0\n\
             callback_urls = [\"{site}/callback.html\"]"
        ),
    );
    let mut first = RelayProcess::start(&config, &dir, "first", first_port).await;
    let _second = RelayProcess::start(&config, &dir, "second", second_port).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let env = [
        ("RELAY", relay),
        ("SITE", site),
        ("WECHAT", simulator),
        ("CHROMIUM", chromium),
        ("SHOTS", shots.display().to_string()),
        ("STOPPING_PID", first.pid().to_string()),
    ];
    run_node_tests(&browser_dir().join("restart.test.mjs"), &env).await;
    let status = first.exited().await;
    assert!(status.success(), "the stopped instance exits cleanly: {status}");
}
