//! The debug UI over HTTP: every endpoint, the security checks (Host,
//! Origin, token), the server-sent events stream, and a real sandbox (as
//! root) whose `ask`s are answered through the UI.

mod common;
mod ui_common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buntime::ui::{serve_background, UiHandle, UiOptions};
use common::{read, wait_until, Env};
use ui_common::{get, post, request, worker_bundle, Event, Events, UiProcess};

fn ui(roots: Vec<PathBuf>, only: Option<&str>) -> UiHandle {
    serve_background(UiOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        roots,
        only: only.map(String::from),
        token: None,
    })
    .expect("start the UI")
}

#[test]
fn the_page_is_served_whole_with_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let h = ui(vec![dir.path().to_path_buf()], None);
    let a = h.addr();
    let page = get(a, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    let html = page.text();
    assert!(html.contains(r#"<script src="/page.js">"#));
    for (path, ct) in [("/page.js", "text/javascript"), ("/page.css", "text/css")] {
        let r = get(a, path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("Content-Type").unwrap().starts_with(ct), "{path}");
        // Nothing from elsewhere.
        assert!(!r.text().contains("http://") && !r.text().contains("https://"));
    }
    assert_eq!(get(a, "/nope").status, 404);
    assert_eq!(get(a, "/api/nope").status, 404);
    assert_eq!(post(a, "/", "{}").status, 405);
    assert_eq!(post(a, "/api/sandboxes", "{}").status, 405);
    let info = get(a, "/api/info").json();
    assert_eq!(info["listen"], a.to_string());
    assert_eq!(info["token_required"], false);
    assert_eq!(info["roots"][0], dir.path().to_str().unwrap());
    assert_eq!(get(a, "/api/sandboxes").json(), serde_json::json!([]));
    assert_eq!(get(a, "/api/asks").json(), serde_json::json!([]));
    assert_eq!(get(a, "/api/sandboxes/none").status, 404);
    assert_eq!(get(a, "/api/sandboxes/..%2Fx").status, 404);
    assert_eq!(get(a, "/api/sandboxes/.buntime/audit").status, 404);
    // The root is only read: a missing one is not created.
    let missing = dir.path().join("missing");
    let h2 = ui(vec![missing.clone()], None);
    assert_eq!(
        get(h2.addr(), "/api/sandboxes").json(),
        serde_json::json!([])
    );
    assert!(!missing.exists());
}

#[test]
fn other_hosts_and_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = ui(vec![dir.path().to_path_buf()], None);
    let a = h.addr();
    let port = a.port();
    let status = |method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>| {
        request(a, method, path, headers, body).status
    };
    // The listener's own names are fine.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(
            status("GET", "/api/sandboxes", &[("Host", &host)], None),
            200
        );
    }
    // DNS rebinding: another name for this address.
    for host in [
        "evil.example:80".to_string(),
        format!("evil.example:{port}"),
        "127.0.0.1".into(),
    ] {
        assert_eq!(
            status("GET", "/api/sandboxes", &[("Host", &host)], None),
            403,
            "{host}"
        );
        assert_eq!(status("GET", "/", &[("Host", &host)], None), 403, "{host}");
    }
    let ours = format!("http://{a}");
    let json = ("Content-Type", "application/json");
    // Another origin, by Origin or by Sec-Fetch-Site.
    let r = request(
        a,
        "GET",
        "/api/sandboxes",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(r.status, 403);
    assert!(r.text().contains("cross-origin"), "{}", r.text());
    assert_eq!(
        status(
            "GET",
            "/api/sandboxes",
            &[("Sec-Fetch-Site", "cross-site")],
            None
        ),
        403
    );
    assert_eq!(
        status(
            "GET",
            "/api/sandboxes",
            &[("Origin", &ours), ("Sec-Fetch-Site", "same-origin")],
            None
        ),
        200
    );
    // POSTs: same origin only, JSON only.
    let answer = "/api/asks/x/1";
    let body = Some(r#"{"result":"allow"}"#);
    assert_eq!(status("POST", answer, &[json], body), 403, "no Origin");
    assert_eq!(
        status(
            "POST",
            answer,
            &[json, ("Origin", "http://evil.example")],
            body
        ),
        403
    );
    assert_eq!(
        status("POST", answer, &[json, ("Origin", "null")], body),
        403
    );
    assert_eq!(
        status(
            "POST",
            answer,
            &[("Origin", &ours), ("Content-Type", "text/plain")],
            body
        ),
        415
    );
    assert_eq!(
        status("POST", answer, &[("Origin", &ours), json], body),
        404
    );
}

/// `curl` of `url` as user `uid` (root if None): the body, a newline and
/// the status code.
fn curl_as(uid: Option<u32>, url: &str) -> String {
    let mut c = std::process::Command::new("setpriv");
    if let Some(u) = uid {
        c.args([
            &format!("--reuid={u}"),
            &format!("--regid={u}"),
            "--clear-groups",
        ]);
    }
    let out = c
        .args(["curl", "-s", "-w", "\n%{http_code}", url])
        .output()
        .expect("setpriv curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// On loopback (no token) only the UI's own user and root are served:
/// another local user must not read the logs or answer root's asks.
#[test]
fn other_local_users_are_refused_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let h = ui(vec![dir.path().to_path_buf()], None);
    let url = format!("http://127.0.0.1:{}/api/sandboxes", h.addr().port());
    let nobody = curl_as(Some(65534), &url);
    assert!(nobody.ends_with("\n403"), "{nobody}");
    assert!(nobody.contains("other users"), "{nobody}");
    assert!(curl_as(None, &url).ends_with("\n200"), "root is served");
    // The page too, not only the API.
    assert_eq!(get(h.addr(), "/").status, 200);

    // A UI of an ordinary user (65534): that user and root are served,
    // a third one is not. The binary is copied where 65534 can run it.
    let pub_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(pub_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = pub_dir.path().join("buntime");
    std::fs::copy(ui_common::BUNTIME, &exe).expect("copy buntime");
    let p = UiProcess::start_as(
        65534,
        &exe,
        &[Path::new("/nonexistent")],
        &["--listen", "127.0.0.1:0"],
    );
    let url = format!("http://{}/api/info", p.addr);
    let own = curl_as(Some(65534), &url);
    assert!(own.ends_with("\n200"), "its own user: {own}");
    assert!(curl_as(None, &url).ends_with("\n200"), "root");
    let other = curl_as(Some(65533), &url);
    assert!(other.ends_with("\n403"), "another user: {other}");
}

#[test]
fn off_loopback_the_api_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let h = serve_background(UiOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        roots: vec![dir.path().to_path_buf()],
        only: None,
        token: None,
    })
    .unwrap();
    let token = h.token().expect("a token off loopback").to_string();
    assert!(token.len() >= 32, "{token}");
    assert!(h.url().ends_with(&format!("?token={token}")));
    // Reach it over loopback; the Host is any name then.
    let a = SocketAddr::from(([127, 0, 0, 1], h.addr().port()));
    let host = [("Host", "buntime-host.example:1234")];
    assert_eq!(
        request(a, "GET", "/", &host, None).status,
        200,
        "the page itself"
    );
    assert_eq!(get(a, "/page.js").status, 200);
    let r = request(a, "GET", "/api/sandboxes", &host, None);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("token"));
    assert_eq!(get(a, "/api/info?token=wrong").status, 401);
    assert_eq!(get(a, &format!("/api/info?token={token}x")).status, 401);
    assert_eq!(get(a, &format!("/api/info?token={token}")).status, 200);
    let hdr = [("X-Buntime-Token", token.as_str())];
    let info = request(a, "GET", "/api/info", &hdr, None).json();
    assert_eq!(info["token_required"], true);
    assert_eq!(
        request(a, "GET", "/api/sandboxes/x/events", &[], None).status,
        401,
        "streams too"
    );
    // A given token is used on loopback too.
    let h2 = serve_background(UiOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        roots: vec![dir.path().to_path_buf()],
        only: None,
        token: Some("a-token-of-my-own-choosing".into()),
    })
    .unwrap();
    assert_eq!(get(h2.addr(), "/api/info").status, 401);
    assert_eq!(
        get(h2.addr(), "/api/info?token=a-token-of-my-own-choosing").status,
        200
    );
}

#[test]
fn the_cli_prints_its_address_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let p = UiProcess::start(
        &[dir.path(), Path::new("/nonexistent")],
        &["--listen", "127.0.0.1:0"],
    );
    assert!(p.url.starts_with("http://127.0.0.1:"), "{}", p.url);
    let info = get(p.addr, "/api/info").json();
    assert_eq!(
        info["roots"],
        serde_json::json!([dir.path().to_str().unwrap(), "/nonexistent"])
    );
    drop(p);
    let p = UiProcess::start(&[dir.path()], &["--listen", "0.0.0.0:0"]);
    assert!(p.url.contains("?token="), "{}", p.url);
    assert!(p.extra[0].contains("token"), "{:?}", p.extra);
    drop(p);
    let out = std::process::Command::new(ui_common::BUNTIME)
        .args(["ui", "--listen", "127.0.0.1:0", "--token", "short"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    // The same token from the environment (kept out of `ps`) is checked too.
    let out = std::process::Command::new(ui_common::BUNTIME)
        .args(["ui", "--listen", "127.0.0.1:0"])
        .env("BUNTIME_UI_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    let out = std::process::Command::new(ui_common::BUNTIME)
        .args(["ui", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a bad address");
}

fn decision(events: &[Event], subject: &str) -> Option<serde_json::Value> {
    events
        .iter()
        .filter(|e| e.name == "decision")
        .map(Event::json)
        .find(|d| d["subject"] == subject)
}

/// The pending question about `subject`, waiting on the stream; with the
/// events seen until it came.
fn pending_ask(ev: &mut Events, subject: &str) -> (serde_json::Value, Vec<Event>) {
    let seen = ev.until(Duration::from_secs(20), |e| {
        e.name == "asks"
            && e.json()["pending"]
                .as_array()
                .is_some_and(|p| p.iter().any(|a| a["subject"] == subject))
    });
    let last = seen.last().unwrap().json();
    let ask = last["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["subject"] == subject)
        .cloned()
        .unwrap();
    assert_eq!(last["approver"], "connected");
    (ask, seen)
}

#[test]
fn a_real_sandbox_is_listed_streamed_and_answered() {
    let env = Env::new();
    let id = "uihttp";
    let b = worker_bundle(
        &env,
        id,
        &[
            "stdout:hello-from-the-sandbox",
            "read:/data/ok.txt",
            "read:/data/secret",
            "list:/opt",
            "read:/opt/allow-me",
            "read:/opt/deny-me",
            "read:/opt/always-me",
            "read:/opt/always-me",
            "sleep:60000",
        ],
        "30s",
    );
    let h = ui(vec![env.root.clone()], None);
    let only_other = ui(vec![env.root.clone()], Some("someone-else"));
    let a = h.addr();
    let log = env.dir.path().join("worker.log");
    env.create_logged(id, &b, &log);
    env.ok(&["start", id]);

    // The list.
    let rows = get(a, "/api/sandboxes").json();
    let row = &rows[0];
    assert_eq!(row["id"], id);
    assert_eq!(row["status"], "running");
    assert!(row["pid"].as_i64().unwrap() > 0);
    assert_eq!(row["policy"]["name"], "inline");
    assert_eq!(row["policy"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(row["supervisor"]["alive"], true);
    assert!(row["supervisor"]["pid"].as_i64().unwrap() > 0);
    assert!(row["memory"]["current"].as_u64().unwrap() > 0, "{row}");
    assert!(row["pids"]["current"].as_u64().unwrap() >= 1, "{row}");
    assert!(row["uptime_s"].is_u64());
    assert_eq!(
        row["root"],
        env.root.canonicalize().unwrap().to_str().unwrap()
    );
    // `only` hides every other sandbox.
    assert_eq!(
        get(only_other.addr(), "/api/sandboxes").json(),
        serde_json::json!([])
    );
    assert_eq!(
        get(only_other.addr(), &format!("/api/sandboxes/{id}")).status,
        404
    );

    // The detail: policy in words and as JSON.
    let d = get(a, &format!("/api/sandboxes/{id}")).json();
    assert_eq!(d["sandbox"]["id"], id);
    assert!(d["policy_text"].as_str().unwrap().contains("/data"), "{d}");
    assert_eq!(d["policy"]["broker"]["fs_read"], "ask");
    assert_eq!(d["ask_timeout_ms"], 30_000);
    assert_eq!(
        d["annotations"]["buntime.dev/policy-origin"],
        "annotation buntime.dev/policy"
    );

    // The stream: decisions as they happen, then the first ask.
    let path = format!("/api/sandboxes/{id}/events");
    let mut ev = Events::open(a, &path, &[]);
    assert_eq!(ev.status, 200);
    assert!(ev
        .headers
        .iter()
        .any(|(k, v)| k == "Content-Type" && v.starts_with("text/event-stream")));
    let (ask, mut all) = pending_ask(&mut ev, "/opt/allow-me");
    assert_eq!(ask["kind"], "fs_read");
    assert!(ask["expires_in_ms"].as_u64().unwrap() <= 30_000);
    let ok = decision(&all, "/data/ok.txt").expect("ok.txt decision");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["rule"], "filesystem.read /data");
    assert!(ok.get("why").is_none());
    let secret = decision(&all, "/data/secret").unwrap();
    assert_eq!(secret["decision"], "deny");
    assert_eq!(secret["why"]["rule"], "filesystem.deny /data/secret");
    assert!(
        secret["why"].get("entry").is_none(),
        "an explicit deny has no fix"
    );
    let listing = decision(&all, "/opt").unwrap();
    assert_eq!(listing["why"]["flag"], "--allow-read=/opt");
    let entry: serde_json::Value =
        serde_json::from_str(listing["why"]["entry"].as_str().unwrap()).unwrap();
    assert_eq!(entry, serde_json::json!({"filesystem": {"read": ["/opt"]}}));

    // All pending asks; answering: allow.
    let asks = get(a, "/api/asks").json();
    assert_eq!(asks.as_array().unwrap().len(), 1, "{asks}");
    assert_eq!(asks[0]["container"], id);
    let n = ask["id"].as_u64().unwrap();
    assert_eq!(
        post(a, &format!("/api/asks/{id}/{n}"), r#"{"result":"maybe"}"#).status,
        400
    );
    assert_eq!(
        post(a, &format!("/api/asks/{id}/x"), r#"{"result":"allow"}"#).status,
        400
    );
    assert_eq!(
        post(a, &format!("/api/asks/{id}/{n}"), "not json").status,
        400
    );
    let r = post(a, &format!("/api/asks/{id}/{n}"), r#"{"result":"allow"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        post(a, &format!("/api/asks/{id}/{n}"), r#"{"result":"allow"}"#).status,
        404
    );
    assert!(wait_until(Duration::from_secs(10), || read(&log)
        .contains("read /opt/allow-me ALLOW content of allow-me")));
    // Deny.
    let (ask, seen) = pending_ask(&mut ev, "/opt/deny-me");
    all.extend(seen);
    let r = post(
        a,
        &format!("/api/asks/{id}/{}", ask["id"]),
        r#"{"result":"deny"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(wait_until(Duration::from_secs(10), || read(&log)
        .contains("read /opt/deny-me DENY denied by the approver")));
    // Always: this one and the same question after it.
    let (ask, seen) = pending_ask(&mut ev, "/opt/always-me");
    all.extend(seen);
    let r = post(
        a,
        &format!("/api/asks/{id}/{}", ask["id"]),
        r#"{"result":"always"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || read(&log)
            .matches("read /opt/always-me ALLOW")
            .count()
            == 2),
        "{}",
        read(&log)
    );
    all.extend(ev.until(Duration::from_secs(10), |e| {
        e.name == "decision" && e.json()["subject"] == "/opt/always-me"
    }));
    let allowed = decision(&all, "/opt/allow-me").unwrap();
    assert_eq!(
        (allowed["decision"].as_str(), allowed["rule"].as_str()),
        (Some("allow"), Some("broker.fs_read=ask"))
    );
    let denied = decision(&all, "/opt/deny-me").unwrap();
    assert_eq!(denied["decision"], "deny");
    assert!(denied["why"]["explanation"]
        .as_str()
        .unwrap()
        .contains("approver said no"));
    let d = get(a, &format!("/api/sandboxes/{id}")).json();
    assert_eq!(
        d["always"],
        serde_json::json!([["fs_read", "/opt/always-me"]])
    );

    // The audit as JSON, filtered, with counts of everything.
    let all = get(a, &format!("/api/sandboxes/{id}/audit")).json();
    let total = all["counts"]["total"].as_u64().unwrap();
    // Output frames are tallied when the connection ends (still open here).
    assert!(total >= 7, "{all}");
    assert_eq!(all["records"].as_array().unwrap().len() as u64, total);
    let denies = get(a, &format!("/api/sandboxes/{id}/audit?decision=deny")).json();
    let d_recs = denies["records"].as_array().unwrap();
    assert_eq!(
        d_recs.len() as u64,
        denies["counts"]["decision"]["deny"].as_u64().unwrap()
    );
    assert!(d_recs
        .iter()
        .all(|r| r["decision"] == "deny" && r["why"].is_object()));
    let reads = get(
        a,
        &format!("/api/sandboxes/{id}/audit?kind=list_dir&limit=1"),
    )
    .json();
    assert_eq!(reads["records"].as_array().unwrap().len(), 1);
    assert_eq!(reads["records"][0]["subject"], "/opt");

    // Resuming a stream: Last-Event-ID is the offset after a record.
    let secret_end = secret["offset"].as_u64().unwrap().to_string();
    let mut resumed = Events::open(a, &path, &[("Last-Event-ID", &secret_end)]);
    let first = resumed.until(Duration::from_secs(5), |e| e.name == "decision");
    assert_eq!(first.last().unwrap().json()["subject"], "/opt");
    drop(resumed);
    // Filters on the stream.
    let mut only_denies = Events::open(a, &format!("{path}?decision=deny&kind=fs_read"), &[]);
    let first = only_denies.until(Duration::from_secs(5), |e| e.name == "decision");
    assert_eq!(first.last().unwrap().json()["subject"], "/data/secret");
    drop(only_denies);

    // The output log, from an offset.
    let o = get(a, &format!("/api/sandboxes/{id}/output")).json();
    assert!(
        o["text"]
            .as_str()
            .unwrap()
            .contains("hello-from-the-sandbox"),
        "{o}"
    );
    let next = o["next"].as_u64().unwrap();
    let o = get(a, &format!("/api/sandboxes/{id}/output?from={next}")).json();
    assert_eq!(o["text"], "");

    // Taking the approver role back (here: it already has it).
    let r = post(a, &format!("/api/sandboxes/{id}/approver"), "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["approver"], "connected");
    assert_eq!(get(a, &format!("/api/sandboxes/{id}/approver")).status, 405);

    // The sandbox ends: the stream says so and ends.
    env.ok(&["kill", id, "KILL"]);
    ev.until(Duration::from_secs(10), |e| e.name == "end");
    assert!(ev.next().is_none(), "the stream ends after `end`");
    let rows = get(a, "/api/sandboxes").json();
    assert_eq!(rows[0]["supervisor"]["alive"], false);
    assert_eq!(rows[0]["status"], "stopped");
    let r = post(a, &format!("/api/sandboxes/{id}/approver"), "{}");
    assert_eq!(r.status, 409);
    env.ok(&["delete", id]);
    assert_eq!(get(a, &format!("/api/sandboxes/{id}")).status, 404);
}
