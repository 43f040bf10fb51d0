//! integration/kubernetes/: the RuntimeClass and example Pod pass the
//! offline check (integration/kubernetes/check.py: YAML, fields, types,
//! names, quantities, the policy named by the annotation is shipped), and
//! the check itself catches broken manifests.

mod engines;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn python_has_yaml() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn check(dir: &Path) -> engines::Out {
    engines::run(
        Command::new("python3")
            .arg(dir.join("check.py"))
            .arg(engines::MANIFEST_DIR),
        Duration::from_secs(30),
    )
}

#[test]
fn kubernetes_manifests_pass_the_offline_check() {
    if !python_has_yaml() {
        eprintln!("python3-yaml missing (hack/install-deps.sh): skipped");
        return;
    }
    let dir = Path::new(engines::MANIFEST_DIR).join("integration/kubernetes");
    let out = check(&dir);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok: 2 objects"), "{}", out.stdout);
    let rc = fs::read_to_string(dir.join("runtimeclass.yaml")).expect("runtimeclass.yaml");
    assert!(rc.contains("handler: buntime"));
    assert!(rc.contains("podFixed:"));
    let pod = fs::read_to_string(dir.join("example-pod.yaml")).expect("example-pod.yaml");
    assert!(pod.contains("runtimeClassName: buntime"));
    assert!(pod.contains("buntime.dev/policy-name: no-network"));
}

#[test]
fn kubernetes_check_rejects_broken_manifests() {
    if !python_has_yaml() {
        return;
    }
    let src = Path::new(engines::MANIFEST_DIR).join("integration/kubernetes");
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::copy(src.join("check.py"), tmp.path().join("check.py")).expect("copy");
    let rc = fs::read_to_string(src.join("runtimeclass.yaml"))
        .expect("read")
        .replace("handler: buntime", "handler: Bun_Time")
        .replace("memory: \"32Mi\"", "memory: \"lots\"");
    fs::write(tmp.path().join("runtimeclass.yaml"), rc).expect("write");
    let pod = fs::read_to_string(src.join("example-pod.yaml"))
        .expect("read")
        .replace("policy-name: no-network", "policy-name: no-such-policy")
        .replace("runtimeClassName: buntime", "runtimeClassName: other");
    fs::write(tmp.path().join("example-pod.yaml"), pod).expect("write");
    let out = check(tmp.path());
    assert!(!out.ok(), "{}", out.stdout);
    for want in [
        "handler 'Bun_Time' is not a DNS label",
        "'lots' is not a quantity",
        "no policies/no-such-policy.json",
        "runtimeClassName 'other' is not a RuntimeClass defined here",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
}
