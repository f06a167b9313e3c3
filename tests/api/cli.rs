//! The binary: it says where it listens, and refuses bad flags, an unreachable Redis and an
//! unusable config with a one-line reason and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

fn relay(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

fn assert_one_line_refusal((code, stderr): (Option<i32>, String), expected: &str) {
    assert_ne!(code, Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn bad_flags_unreachable_redis_and_bad_configs_are_refused_in_one_line() {
    assert_one_line_refusal(relay(&["sandbox", "--bogus", "1"]), "unknown flag");
    assert_one_line_refusal(relay(&["launch"]), "unknown command");
    assert_one_line_refusal(
        relay(&[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:1/",
        ]),
        "redis",
    );
    assert_one_line_refusal(
        relay(&["serve", "--config", "/nonexistent.toml"]),
        "cannot read config",
    );

    let dir = std::env::temp_dir().join(format!("qrlogin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    // Port 0: the refusal must not depend on 8080 being free.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n[[connections]]\nidentifier = \"UPPER\"\ndisplay_name = \"x\"\nappid = \"wx0123456789abcdef\"\napp_secret = \"a\"\nbackend_secret = \"b\"\n").unwrap();
    assert_one_line_refusal(
        relay(&["serve", "--config", config.to_str().unwrap()]),
        "identifier",
    );
    let logo = dir.join("logo.png");
    std::fs::write(&logo, b"not an image").unwrap();
    let bad_logo = format!(
        "listen = \"127.0.0.1:0\"\n[[connections]]\nidentifier = \"shop\"\ndisplay_name = \"x\"\nappid = \"wx0123456789abcdef\"\napp_secret = \"a\"\nbackend_secret = \"b\"\nlogo = {:?}\n",
        logo.to_str().unwrap()
    );
    std::fs::write(&config, bad_logo).unwrap();
    assert_one_line_refusal(relay(&["serve", "--config", config.to_str().unwrap()]), "logo");
    // The simulator is the sandbox's alone.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmount_simulator = true\n").unwrap();
    assert_one_line_refusal(
        relay(&["serve", "--config", config.to_str().unwrap()]),
        "mount_simulator",
    );
}

#[test]
fn the_sandbox_says_where_it_listens_and_names_the_sandbox_appid() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.starts_with("qrlogin-relay listening on http://127.0.0.1:"),
        "{first}"
    );
    assert!(second.contains(qrlogin_relay::sandbox::SANDBOX_APPID), "{second}");
}

/// Starts the sandbox with `args`; returns the child and the address it listens on.
fn sandbox(args: &[&str]) -> (std::process::Child, String) {
    let (child, base, _) = logged_sandbox(args, "off");
    (child, base)
}

/// The same, logging at `level`; the third value collects every line it writes.
fn logged_sandbox(args: &[&str], level: &str) -> (std::process::Child, String, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", level)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("qrlogin-relay listening on ")
                .map(str::to_owned)
        })
        .expect("the sandbox says where it listens");
    // Keep reading: a closed pipe would kill the sandbox at its next line.
    let log = Arc::new(Mutex::new(Vec::new()));
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    (child, base, log)
}

#[tokio::test]
async fn sandbox_flags_shorten_sessions_and_register_a_developers_site() {
    assert_one_line_refusal(relay(&["sandbox", "--session-ttl", "0"]), "--session-ttl");
    assert_one_line_refusal(
        relay(&[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--allow-origin",
            "https://a.example/",
        ]),
        "allowed_origins",
    );
    let (mut child, base) = sandbox(&[
        "--session-ttl",
        "7",
        "--allow-origin",
        "https://a.example",
        "--allow-origin",
        "https://b.example",
        "--callback-url",
        "https://a.example/cb",
    ]);
    let http = reqwest::Client::new();
    let create = |origin: &'static str| {
        http.post(format!("{base}/v1/login-sessions"))
            .header("origin", origin)
            .send()
    };
    let session: serde_json::Value = create("https://b.example").await.unwrap().json().await.unwrap();
    assert_eq!(session["expires_in"], 7);
    // The defaults stay registered beside the developer's own site.
    assert_eq!(create("http://localhost:8000").await.unwrap().status(), 201);
    assert_eq!(create("https://c.example").await.unwrap().status(), 403);
    let login = |callback: &str| {
        http.get(format!(
            "{base}/login?connection=default&redirect_uri={}",
            qrlogin_relay::markup::url_encode(callback)
        ))
        .send()
    };
    assert_eq!(login("https://a.example/cb").await.unwrap().status(), 200);
    assert_eq!(
        login("http://localhost:8000/callback.html")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(login("https://b.example/cb").await.unwrap().status(), 400);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let (mut child, base, log) = logged_sandbox(&[], "info");
    let secrets = ["tenant-app-secret-7781", "tenant-hook-secret-7781"];
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/admin/connections"))
        .bearer_auth("sandbox-admin")
        .json(&serde_json::json!({
            "identifier": "logged",
            "display_name": "Logged",
            "appid": "wx0000000000000777",
            "app_secret": secrets[0],
            "account_hook": { "url": "https://logged.example/hook", "secret": secrets[1] },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = created["credential"]["secret"].as_str().unwrap().to_owned();
    // The audit event is written (and awaited), and holds names, not values.
    let audit = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(line) = log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("create_connection"))
                .cloned()
            {
                return line;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an audit line");
    assert!(
        audit.contains("app_secret") && audit.contains("logged"),
        "{audit}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = log.lock().unwrap().clone();
    for line in &lines {
        for secret in secrets
            .iter()
            .copied()
            .chain([credential.as_str(), "sandbox-admin"])
        {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
}
