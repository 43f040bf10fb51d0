//! The debug UI in a real browser: headless Chromium (Debian's `chromium`,
//! `--headless --no-sandbox --disable-gpu`), driven through its DevTools
//! protocol by tests/ui_browser.py, loads the page of `buntime ui` while
//! a sandbox runs, sees its decisions appear, clicks Allow on its pending
//! `ask`, and the sandboxed process gets the answer. Screenshots go to
//! `target/ui-artifacts/`. Skipped (with the reason printed) when
//! /usr/bin/chromium is missing (`hack/install-deps.sh` installs it).

mod common;
mod ui_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{read, wait_until, Env};
use ui_common::{worker_bundle_with, UiProcess};

const CHROMIUM: &str = "/usr/bin/chromium";

fn artifacts() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("ui-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn the_page_shows_decisions_and_a_click_answers_an_ask() {
    if !Path::new(CHROMIUM).exists() {
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "{CHROMIUM} is missing (hack/install-deps.sh installs it)"
        );
        eprintln!("skipping the browser test: {CHROMIUM} is missing (apt-get install chromium)");
        return;
    }
    let env = Env::new();
    let id = "uibrowser";
    let b = worker_bundle_with(
        &env,
        id,
        &[
            "stdout:hello from the sandbox",
            "read:/data/ok.txt",
            "read:/data/secret",
            "list:/opt/<b>bold</b>",
            "list:/opt",
            "read:/opt/allow-me",
            "sleep:60000",
        ],
        "60s",
        &[("buntime.dev/learn", "true")],
    );
    let ui = UiProcess::start(&[&env.root], &["--listen", "127.0.0.1:0"]);
    let log = env.dir.path().join("worker.log");
    env.create_logged(id, &b, &log);
    env.ok(&["start", id]);

    let shot = artifacts().join("ui-browser.png");
    let _ = std::fs::remove_file(&shot);
    let started = Instant::now();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui_browser.py"))
        .args(["--url", &ui.url, "--sandbox", id, "--ask", "/opt/allow-me"])
        .arg("--screenshot")
        .arg(&shot)
        .args(["--chromium", CHROMIUM, "--timeout", "90"])
        .output()
        .expect("run tests/ui_browser.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser driver failed ({:?}) after {:?}:\n{stderr}\n{stdout}\nworker:\n{}",
        out.status.code(),
        started.elapsed(),
        read(&log)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("driver's JSON line");
    eprintln!("browser saw: {seen:#}");

    // The sandboxed process got the answer the click gave.
    assert!(
        wait_until(Duration::from_secs(10), || read(&log)
            .contains("read /opt/allow-me ALLOW content of allow-me")),
        "worker:\n{}",
        read(&log)
    );
    assert_eq!(seen["markup_elements"], 0);
    let row = seen["list_row"].to_string();
    assert!(
        row.contains(id) && row.contains("running") && row.contains("inline"),
        "{row}"
    );
    assert!(seen["ask"]
        .as_str()
        .unwrap_or_default()
        .contains("/opt/allow-me"));
    let entry: serde_json::Value =
        serde_json::from_str(seen["why_entry"].as_str().unwrap_or("null")).expect("entry JSON");
    assert_eq!(entry, serde_json::json!({"filesystem": {"read": ["/opt"]}}));
    let rows = seen["rows"].as_array().expect("rows");
    assert!(rows
        .iter()
        .any(|r| r[2] == "/opt/allow-me" && r[3] == "allow" && r[4] == "broker.fs_read=ask"));
    assert!(
        seen["console"].as_array().is_some_and(|c| c.is_empty()),
        "page errors: {}",
        seen["console"]
    );
    // The learned policy so far: the worker's program, and (the page's
    // link) the policy as a file to save.
    let summary = seen["learned_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("learned policy for container uibrowser")
            && summary.contains("programs run"),
        "{summary}"
    );
    let href = seen["learned_href"].as_str().unwrap_or_default();
    assert!(
        href.starts_with("/api/sandboxes/uibrowser/learned-policy"),
        "{href}"
    );
    let addr: std::net::SocketAddr = ui
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("ui address");
    let resp = ui_common::get(addr, href);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("Content-Disposition"),
        Some("attachment; filename=\"uibrowser.learned.policy.json\"")
    );
    let learned = resp.json();
    assert_eq!(learned["version"], 1, "{learned}");
    assert!(
        learned["filesystem"]["exec"]
            .as_array()
            .is_some_and(|x| !x.is_empty()),
        "{learned}"
    );
    // Deleted (as an engine deletes a container that exited): the link
    // still downloads the policy, from the record `delete` kept.
    env.ok(&["delete", "--force", id]);
    env.assert_gone(id);
    let resp = ui_common::get(addr, href);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["filesystem"]["exec"],
        learned["filesystem"]["exec"]
    );
    let gone = ui_common::get(addr, &format!("/api/sandboxes/{id}"));
    assert_eq!(gone.status, 404, "{}", gone.text());
    let png = std::fs::read(&shot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("screenshot: {}", shot.display());
}
