//! Issue 20: a policy takes away what it names; what it leaves unsaid follows
//! the bundle. Through real `buntime-runc create`/`start`/`exec` with a node
//! default policy (`BUNTIME_ETC`): a grant-everything policy runs the bundle
//! as it is (the effective spec is the bundle's but for the supervisor's
//! mount, the environment and annotations; the process has the bundle's
//! capabilities, no_new_privs, writable root and seccomp profile), and
//! `isolation.capabilities.keep` leaves exactly what it keeps. Needs root.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use buntime::spec::canonical_spec_json;
use libcontainer::oci_spec::runtime::Spec;
use serde_json::{json, Value};

use common::{read, wait_until, Env};

/// Grants everything and says nothing about kernel isolation.
const GRANT_EVERYTHING: &str = r#"{"version":1,"description":"identity test",
"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
"network":{"mode":"bundle"},"env":{"pass":["*"]},"landlock":"off"}"#;

/// The node default every bundle without an annotation gets.
fn node_default(env: &Env, policy: &str) {
    fs::write(env.etc().join("default.json"), policy).expect("write default.json");
}

fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json is JSON");
    f(&mut cfg);
    fs::write(&file, serde_json::to_vec_pretty(&cfg).expect("encode")).expect("write");
}

/// Prints what a user checks of a process's confinement.
const PROBE: &str = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status";

/// CapEff/CapBnd of {CHOWN (0), KILL (5), NET_BIND_SERVICE (10),
/// AUDIT_WRITE (29)}.
const ENGINE_CAPS_HEX: &str = "0000000020000421";

/// A bundle as an engine hands it over: capabilities, a seccomp profile of
/// its own (mkdir refused), rlimits, masked paths, a writable root and no
/// no_new_privs.
fn engine_like_bundle(env: &Env, name: &str, script: &str) -> std::path::PathBuf {
    let bundle = env.bundle(name, &["sh", "-c", script], &[("SECCOMP", "1")]);
    edit_config(&bundle, |c| {
        let caps = json!([
            "CAP_CHOWN",
            "CAP_KILL",
            "CAP_NET_BIND_SERVICE",
            "CAP_AUDIT_WRITE"
        ]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = caps.clone();
        }
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512},
            {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096}
        ]);
        c["root"]["readonly"] = json!(false);
        c["linux"]["maskedPaths"] = json!(["/proc/kcore", "/sys/firmware", "/proc/scsi"]);
        c["annotations"] = json!({"io.container.manager": "test"});
    });
    bundle
}

/// The canonical spec without what may differ: the environment,
/// annotations, the root's (made absolute) path, the cgroup path buntime
/// fills in, and the supervisor's `/run/buntime` mount.
fn comparable(spec: &Value) -> Value {
    let mut v = spec.clone();
    let o = v.as_object_mut().expect("object");
    o.remove("annotations");
    o["process"].as_object_mut().expect("process").remove("env");
    o["root"].as_object_mut().expect("root").remove("path");
    o["linux"]
        .as_object_mut()
        .expect("linux")
        .remove("cgroupsPath");
    if let Some(m) = o["mounts"].as_array_mut() {
        m.retain(|m| m["destination"] != "/run/buntime");
    }
    v
}

#[test]
fn grant_everything_runs_the_bundle_unchanged() {
    let env = Env::new();
    node_default(&env, GRANT_EVERYTHING);
    let script = format!(
        "{PROBE}; touch /written && echo root-writable; mkdir /made 2>/dev/null || echo mkdir-refused; \
         echo ready; exec sleep 1000"
    );
    let bundle = engine_like_bundle(&env, "b", &script);
    let log = env.dir.path().join("init.log");
    env.create_logged("ident", &bundle, &log);

    // The effective spec is the bundle's.
    let bundle_spec: Spec =
        serde_json::from_str(&read(&bundle.join("config.json"))).expect("bundle spec");
    let effective: Value =
        serde_json::from_str(&read(&env.root.join(".buntime/ident/effective-spec.json")))
            .expect("effective-spec.json");
    assert_eq!(
        serde_json::to_string_pretty(&comparable(&effective)).unwrap_or_default(),
        serde_json::to_string_pretty(&comparable(&canonical_spec_json(&bundle_spec)))
            .unwrap_or_default(),
        "effective spec differs from the bundle's"
    );
    let ann = env.state("ident")["annotations"].clone();
    assert_eq!(ann["buntime.dev/landlock"], "off by policy", "{ann}");
    assert_eq!(
        ann["buntime.dev/seccomp"], "libcontainer",
        "nothing stacked: {ann}"
    );

    // And the process is what the bundle asked for.
    env.ok(&["start", "ident"]);
    assert!(
        wait_until(Duration::from_secs(10), || read(&log).contains("ready")),
        "init never got ready: {}",
        read(&log)
    );
    let out = read(&log);
    assert!(
        out.contains(&format!("CapEff:\t{ENGINE_CAPS_HEX}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("CapBnd:\t{ENGINE_CAPS_HEX}")),
        "{out}"
    );
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "the bundle's profile: {out}");
    assert!(out.contains("root-writable"), "{out}");
    assert!(
        out.contains("mkdir-refused"),
        "the bundle's seccomp rule: {out}"
    );

    // An exec'd process gets init's capabilities. (Its seccomp profile is
    // loaded after the capability drop, libcontainer leaving it to us: that
    // needs no_new_privs without CAP_SYS_ADMIN, so exec'd processes of a
    // bundle with a profile run with it.)
    let exec = env.ok(&["exec", "ident", "sh", "-c", PROBE]);
    assert!(
        exec.contains(&format!("CapEff:\t{ENGINE_CAPS_HEX}")),
        "{exec}"
    );
    assert!(exec.contains("Seccomp:\t2"), "{exec}");
    env.ok(&["delete", "--force", "ident"]);
    env.assert_gone("ident");
}

#[test]
fn capabilities_keep_leaves_only_what_it_keeps() {
    let env = Env::new();
    let mut policy: Value = serde_json::from_str(GRANT_EVERYTHING).expect("policy");
    policy["isolation"] = json!({"capabilities": {"keep": ["CHOWN", "SYS_ADMIN"]}});
    node_default(&env, &policy.to_string());
    let bundle = engine_like_bundle(
        &env,
        "b",
        &format!("{PROBE}; chown 1:1 /tmp && echo chowned"),
    );
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "keep",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CHOWN only: SYS_ADMIN is kept only if the bundle gave it (it did not).
    assert!(stdout.contains("CapEff:\t0000000000000001"), "{stdout}");
    assert!(stdout.contains("CapBnd:\t0000000000000001"), "{stdout}");
    assert!(stdout.contains("chowned"), "{stdout}");
    // The rest of the bundle's settings stand.
    assert!(stdout.contains("NoNewPrivs:\t0"), "{stdout}");
    env.assert_gone("keep");

    // `drop` removes from the bundle's, and nnp when asked.
    policy["isolation"] = json!({"capabilities": {"drop": ["cap_kill", "AUDIT_WRITE"]},
        "no_new_privileges": true});
    node_default(&env, &policy.to_string());
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "drop",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // CHOWN (0) and NET_BIND_SERVICE (10).
    assert!(stdout.contains("CapEff:\t0000000000000401"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    env.assert_gone("drop");
}
