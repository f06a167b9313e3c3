//! The API contract: the committed OpenAPI document is what the code generates, and Schemathesis
//! (pinned in `tests/schemathesis/requirements.txt`) finds no 5xx, no undocumented status or
//! content type and no response that breaks the schema on a sandbox relay.

use crate::helpers::{Backend, run_to_pass, settings, spawn_app_with};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_openapi_document_is_what_the_code_generates() {
    let committed = std::fs::read_to_string(root().join("miniprogram-contract/openapi.json")).unwrap();
    assert!(
        committed == qrlogin_relay::openapi::document_text(),
        "miniprogram-contract/openapi.json is out of date: run \
         `cargo run -- openapi > miniprogram-contract/openapi.json` and commit it"
    );
}

/// Schemathesis's `st`: $SCHEMATHESIS, or the pinned one in tests/schemathesis/.venv (installed
/// from the hashed requirements when absent).
fn schemathesis() -> PathBuf {
    if let Some(st) = std::env::var_os("SCHEMATHESIS") {
        return st.into();
    }
    let dir = root().join("tests/schemathesis");
    let st = dir.join(".venv/bin/st");
    if !st.exists() {
        let venv = Command::new("python3")
            .args(["-m", "venv", ".venv"])
            .current_dir(&dir)
            .status()
            .expect("python3 is not installed: apt-get install python3 python3-venv");
        assert!(
            venv.success(),
            "python3 -m venv failed: apt-get install python3-venv"
        );
        let pip = Command::new(dir.join(".venv/bin/pip"))
            .args(["install", "--quiet", "--require-hashes", "-r", "requirements.txt"])
            .current_dir(&dir)
            .status()
            .expect("run pip");
        assert!(
            pip.success(),
            "pip install -r tests/schemathesis/requirements.txt failed"
        );
    }
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_running_relay() {
    let st = schemathesis();
    let relay = spawn_app_with(settings(Backend::Memory)).await.base;
    let spec = root().join("miniprogram-contract/openapi.json");
    let mut st = Command::new(st);
    st.arg("run")
        .arg(spec)
        .args(["--url", &relay])
        .args(["--checks", CHECKS])
        .args(["--header", "Authorization: Bearer sandbox-admin"])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "2"])
        .env("NO_COLOR", "1");
    run_to_pass(st, "Schemathesis", " passed").await;
}

/// No 5xx; every status, content type and body as documented.
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
