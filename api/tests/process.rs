//! The `ovasabi` binary as a process: bad configuration exits 64 naming the key; SIGTERM
//! closes WebSocket clients with 1001 and exits 0; `ovasabi migrate` applies migrations.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ovasabi");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ovasabi-proc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[test]
fn invalid_configuration_exits_64_naming_the_key() {
    let dir = temp_dir("cfg");
    for (args, key) in [
        (vec!["--send-queue-capacity", "lots"], "send_queue_capacity"),
        (vec!["--ping-interval", "often"], "ping_interval"),
        (vec!["--http-addr", "nowhere"], "http_addr"),
        (vec!["--config", "/definitely/missing.toml"], "config"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .env("OVASABI_SEND_QUEUE_CAPACITY", "0")
        .current_dir(&dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("send_queue_capacity"));
    let out = Command::new(BIN)
        .arg("--no-such-flag")
        .current_dir(&dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn migrate_applies_and_exits() {
    let dir = temp_dir("migrate");
    let out = Command::new(BIN)
        .arg("migrate")
        .current_dir(&dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("data/ovasabi.db").exists(),
        "default SQLite file under ./data/"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let dir = temp_dir("sigterm");
    let mut child = Command::new(BIN)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--dev",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(rest) = line.strip_prefix("ovasabi listening: http://") {
            break rest.split_whitespace().next().expect("addr").to_owned();
        }
    };
    // `--dev` prints the admin token on the line after its announcement.
    let token = loop {
        let line = lines.next().expect("a line").expect("utf-8");
        if line.starts_with("dev mode:") {
            break lines.next().expect("the token").expect("utf-8");
        }
    };
    let client = reqwest::Client::new();
    let c: serde_json::Value = client
        .post(format!("http://{addr}/api/campaigns"))
        .bearer_auth(token.trim())
        .json(&json!({"name": "term", "metadata": {"scheduling": {"frequency": 2}}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/term/u1"))
        .await
        .expect("upgrade");
    common::next_of(&mut ws, "tick").await;
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(common::close_code(&mut ws).await, 1001);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(c["id"].is_string());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = std::fs::remove_dir_all(dir);
}
