//! The binary: it says where it listens, and refuses bad flags, an unreachable Redis and an
//! unusable config with a one-line reason and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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
    std::fs::write(&config, "[[connections]]\nidentifier = \"UPPER\"\ndisplay_name = \"x\"\nappid = \"wx0123456789abcdef\"\napp_secret = \"a\"\nbackend_secret = \"b\"\n").unwrap();
    assert_one_line_refusal(
        relay(&["serve", "--config", config.to_str().unwrap()]),
        "identifier",
    );
    let logo = dir.join("logo.png");
    std::fs::write(&logo, b"not an image").unwrap();
    let bad_logo = format!(
        "[[connections]]\nidentifier = \"shop\"\ndisplay_name = \"x\"\nappid = \"wx0123456789abcdef\"\napp_secret = \"a\"\nbackend_secret = \"b\"\nlogo = {:?}\n",
        logo.to_str().unwrap()
    );
    std::fs::write(&config, bad_logo).unwrap();
    assert_one_line_refusal(relay(&["serve", "--config", config.to_str().unwrap()]), "logo");
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_qrlogin-relay"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "off")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first
        .strip_prefix("qrlogin-relay listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    // Keep reading: a closed pipe would kill the sandbox at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
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
