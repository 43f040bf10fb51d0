//! The people-facing policy commands, run as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn buntime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_buntime"))
        .args(args)
        .env_remove("BUNTIME_LOG")
        .output()
        .expect("run buntime")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn repo(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn version_and_help() {
    let o = buntime(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("buntime "), "{}", stdout(&o));
    let o = buntime(&["--help"]);
    assert!(o.status.success());
    for cmd in ["init-policy", "policy", "run"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
    let o = buntime(&["init-policy", "--help"]);
    assert!(stdout(&o).contains("--allow-net"), "{}", stdout(&o));
}

#[test]
fn init_policy_round_trips_through_check() {
    let dir = tempfile::tempdir().unwrap();
    let o = buntime(&[
        "init-policy",
        "--allow-read=/data,/srv",
        "--allow-write=/out",
        "--allow-net=pypi.org:443,*.pythonhosted.org",
        "--allow-run=python3",
        "--allow-env=PYTHON*",
        "--deny-read=/data/secret",
        "--deny-net=10.0.0.0/8",
        "--memory=1G",
        "--timeout=2m",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(&text).expect("init-policy prints JSON");
    assert_eq!(v["version"], 1);
    assert_eq!(v["network"]["mode"], "proxy");
    assert!(v["filesystem"]["read"]
        .as_array()
        .unwrap()
        .contains(&"/data".into()));
    assert_eq!(v["resources"]["memory"], "1G");
    assert_eq!(v["resources"]["timeout"], "2m");
    let f = write(dir.path(), "my-policy.json", &text);
    let o = buntime(&["policy", "check", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("{}: ok", f.display()));
}

#[test]
fn init_policy_from_none_is_minimal() {
    let o = buntime(&["init-policy", "--base=none", "--allow-read=/tmp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["filesystem"]["read"], serde_json::json!(["/tmp"]));
    assert_eq!(v["network"]["mode"], "none");
    assert!(v.get("resources").is_none());
}

#[test]
fn init_policy_bad_flag_names_flag_and_expectation() {
    let o = buntime(&["init-policy", "--allow-net=exa mple.com"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("--allow-net: expected a host name"), "{e}");
    let o = buntime(&["init-policy", "--memory=12X"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--memory: expected a size"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_error_names_file_pointer_position_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.json",
        "{\n  \"version\": 1,\n  \"network\": {\n    \"mode\": \"proxy\",\n    \"allow\": [\"pypi.org\", \"a.com\", \"not a host\"]\n  }\n}\n",
    );
    let o = buntime(&["policy", "check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let want_prefix = format!("error: {}:5:", f.display());
    assert!(e.starts_with(&want_prefix), "{e}");
    assert!(e.contains(": /network/allow/2: "), "{e}");
    assert!(e.contains("expected a host name"), "{e}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn check_reports_each_kind_of_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "{\"version\": 1, \"netwrok\": {}}",
            "/netwrok",
            "unknown field `netwrok`",
        ),
        ("{\"version\": 3}", "/version", "expected 1"),
        (
            "{\"version\": 1, \"resources\": {\"memory\": \"big\"}}",
            "/resources/memory",
            "expected a size",
        ),
        (
            "{\"version\": 1, \"resources\": {\"pids\": -4}}",
            "/resources/pids",
            "expected",
        ),
        (
            "{\"version\": 1, \"filesystem\": {\"deny\": [\"/\"]}}",
            "/filesystem/deny/0",
            "expected a path below /",
        ),
        ("{\"version\": 1,}", "/", "trailing comma"),
        (
            "{\"version\": 1, \"env\": {\"pass\": [\"BAD-NAME\"]}}",
            "/env/pass/0",
            "expected a variable name",
        ),
    ];
    for (i, (text, pointer, expect)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("c{i}.json"), text);
        let o = buntime(&["policy", "check", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let e = stderr(&o);
        assert!(e.contains(&f.display().to_string()), "{e}");
        assert!(e.contains(&format!(": {pointer}: ")), "{text}: {e}");
        assert!(e.contains(":1:"), "line:column missing: {e}");
        assert!(e.contains(expect), "{text}: {e}");
    }
}

#[test]
fn check_many_files_missing_file_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.json", "{\"version\": 1}");
    let bad = write(dir.path(), "bad.json", "{\"version\": 1, \"x\": 1}");
    let missing = dir.path().join("missing.json");
    let o = buntime(&[
        "policy",
        "check",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).trim(), format!("{}: ok", good.display()));
    let e = stderr(&o);
    assert!(e.contains("bad.json:1:"), "{e}");
    assert!(e.contains("missing.json: cannot read policy"), "{e}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_buntime"))
        .args(["policy", "check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"version\": 1}")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), "<stdin>: ok");
}

#[test]
fn check_warns_about_host_network_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "host.json",
        "{\n  \"version\": 1,\n  \"network\": { \"mode\": \"host\" }\n}\n",
    );
    let o = buntime(&["policy", "check", f.to_str().unwrap()]);
    assert!(o.status.success());
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!("warning: {}:3:", f.display())),
        "{e}"
    );
    assert!(e.contains("/network/mode"), "{e}");
    assert!(e.contains("no isolation"), "{e}");
}

#[test]
fn check_warns_about_credential_files_a_rule_exposes_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "etc.json",
        "{\n  \"version\": 1,\n  \"filesystem\": {\n    \"read\": [\"/usr\", \"/etc\"],\n    \"deny\": [\"/etc/shadow\", \"/etc/gshadow*\", \"/etc/ssh\"]\n  }\n}\n",
    );
    let o = buntime(&["policy", "check", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    // The rule (pointer, line and its path), the file and the deny entry.
    let shadow = e
        .lines()
        .find(|l| l.contains("/etc/shadow-"))
        .unwrap_or_else(|| panic!("no warning for /etc/shadow-:\n{e}"));
    assert!(
        shadow.starts_with(&format!("warning: {}:4:", f.display())),
        "{shadow}"
    );
    assert!(shadow.contains("/filesystem/read/1"), "{shadow}");
    assert!(
        shadow.contains("\"/etc\" gives the sandbox /etc/shadow-"),
        "{shadow}"
    );
    assert!(
        shadow.contains("expected \"/etc/shadow*\" in filesystem.deny"),
        "{shadow}"
    );
    assert!(e.contains("/etc/krb5.keytab"), "{e}");
    assert!(e.contains("/etc/security/opasswd"), "{e}");
    // Removed by a deny entry: no warning; nothing about /usr.
    for quiet in [
        "/etc/shadow,",
        "/etc/gshadow",
        "/etc/ssh/",
        "/filesystem/read/0",
    ] {
        assert!(!e.contains(quiet), "{quiet}: {e}");
    }
    assert!(e.lines().all(|l| l.starts_with("warning: ")), "{e}");
}

#[test]
fn deny_patterns_are_checked_where_written() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.json",
        "{\"version\": 1, \"filesystem\": {\"read\": [\"/usr\"], \"deny\": [\"/etc/*/key\"]}}",
    );
    let o = buntime(&["policy", "check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("/filesystem/deny/0"), "{e}");
    assert!(e.contains("ending in \"*\""), "{e}");
}

#[test]
fn every_shipped_policy_checks() {
    for name in ["default", "no-network", "strict", "python-dev"] {
        let path = repo(&format!("policies/{name}.json"));
        let o = buntime(&["policy", "check", &path]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{name} has warnings: {}", stderr(&o));
    }
}

#[test]
fn explain_summarises() {
    let o = buntime(&["policy", "explain", &repo("policies/python-dev.json")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("Python development"), "{out}");
    assert!(out.contains("pypi.org:443"), "{out}");
    assert!(out.contains("write:"), "{out}");
    assert!(out.contains("memory 2G"), "{out}");
    let o = buntime(&["policy", "explain", "/nonexistent.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent.json: cannot read policy"));
}

#[test]
fn schema_output_equals_committed_file() {
    let o = buntime(&["policy", "schema"]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(repo("policies/schema.json")).unwrap();
    assert_eq!(stdout(&o), committed);
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(v["additionalProperties"], false);
    assert!(v["properties"]["network"].is_object());
}

#[test]
fn run_reports_bad_flags_and_missing_scripts() {
    let o = buntime(&["run", "--allow-net=bad host", "x.py"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--allow-net"), "{}", stderr(&o));
    let o = buntime(&["run", "/nonexistent/script.py"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/script.py"),
        "{}",
        stderr(&o)
    );
}
