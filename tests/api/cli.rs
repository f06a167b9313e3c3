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
