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
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "python3-yaml missing (hack/install-deps.sh installs it)"
        );
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
        .replace("memory: \"48Mi\"", "memory: \"lots\"");
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

/// Runs a Python module from the project-local .build/pylib
/// (hack/install-deps.sh installs yamllint and kubernetes-validate there).
fn pylib(module: &str, args: &[&str]) -> engines::Out {
    let lib = Path::new(engines::MANIFEST_DIR).join(".build/pylib");
    engines::run(
        Command::new("python3")
            .env("PYTHONPATH", lib)
            .args(["-m", module])
            .args(args),
        Duration::from_secs(60),
    )
}

#[test]
fn kubernetes_manifests_pass_yamllint_and_the_api_schema() {
    let dir = Path::new(engines::MANIFEST_DIR).join("integration/kubernetes");
    let files: Vec<String> = ["runtimeclass.yaml", "example-pod.yaml"]
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut lint = vec!["-d", "relaxed", "--strict"];
    lint.extend(&refs);
    let out = pylib("yamllint", &lint);
    assert!(out.ok(), "yamllint: {}{}", out.stdout, out.stderr);
    let mut schema = vec!["--strict"];
    schema.extend(&refs);
    let out = pylib("kubernetes_validate", &schema);
    assert!(
        out.ok(),
        "kubernetes-validate: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("passed") || out.stderr.contains("passed"),
        "{out:?}"
    );

    // The schema check can fail: a misspelt field is refused.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = fs::read_to_string(dir.join("runtimeclass.yaml"))
        .expect("read")
        .replace("handler: buntime", "handlr: buntime");
    let bad_file = tmp.path().join("bad.yaml");
    fs::write(&bad_file, bad).expect("write");
    let out = pylib(
        "kubernetes_validate",
        &["--strict", &bad_file.to_string_lossy()],
    );
    assert!(!out.ok(), "a misspelt field must fail: {out:?}");
}
