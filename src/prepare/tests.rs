//! The pipeline end to end: sources, translation, Landlock plan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;

use super::*;
use crate::policy::{
    builtin_default, HostAddrs, PolicyOrigin, ANNOTATION_POLICY, ANNOTATION_POLICY_NAME,
};
use crate::spec::{HostLimits, SpecMode};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("buntime-prep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("policies")).unwrap();
    d
}

fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bundle() -> Spec {
    serde_json::from_str(include_str!("../../tests/golden/bundle.json")).unwrap()
}

fn ctx() -> SpecContext {
    SpecContext {
        mode: SpecMode::Oci,
        host_limits: HostLimits::unlimited(),
        proxy_port: None,
        host_env: None,
    }
}

#[test]
fn prepare_container_end_to_end() {
    let d = tmpdir("prepare");
    // python-dev asks the broker: the node must ask too.
    std::fs::write(
        d.join("default.json"),
        r#"{"version":1,"broker":{"fs_read":"ask","fs_write":"ask","list_dir":"ask","net_connect":"ask"}}"#,
    )
    .unwrap();
    let s = PolicySources::from_dir(&d, None).unwrap();
    let mut b = bundle();
    b.set_annotations(Some(ann(&[(ANNOTATION_POLICY_NAME, "python-dev")])));
    let p = prepare_container(&b, &s, &ctx()).unwrap();
    assert!(p.resolved.from_annotation);
    assert!(
        p.landlock.write.contains(&PathBuf::from("/")),
        "'.' resolved against cwd /"
    );
    assert!(p.effective.linux().as_ref().unwrap().seccomp().is_some());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn landlock_off_plans_nothing_and_annotations_meet_the_node_isolation() {
    let d = tmpdir("isolation");
    std::fs::write(
        d.join("default.json"),
        r#"{"version":1,"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
            "network":{"mode":"bundle"},"landlock":"off",
            "isolation":{"capabilities":{"drop":["SYS_ADMIN"]},"no_new_privileges":true}}"#,
    )
    .unwrap();
    let s = PolicySources::from_dir(&d, None).unwrap();
    let p = prepare_container(&bundle(), &s, &ctx()).unwrap();
    assert_eq!(p.landlock_abi, None, "off: no plan applied");
    // An annotation that says nothing about isolation gets the node's;
    // one that asks for less Landlock gets the node's too.
    let mut b = bundle();
    b.set_annotations(Some(ann(&[(
        ANNOTATION_POLICY,
        r#"{"version":1,"filesystem":{"read":["/"]},"landlock":"off",
            "isolation":{"capabilities":{"keep":["CHOWN","SYS_ADMIN"]}}}"#,
    )])));
    let r = s
        .resolve_with(
            b.annotations().as_ref(),
            Path::new("/"),
            &HostAddrs::default(),
        )
        .unwrap();
    let iso = &r.policy.isolation;
    assert!(iso.no_new_privileges);
    assert_eq!(iso.capabilities.drop.len(), 1);
    assert_eq!(iso.capabilities.keep.as_ref().map(Vec::len), Some(2));
    assert_eq!(r.policy.landlock, crate::policy::LandlockRequirement::Off);
    // The shipped strict default (secure) as the reference: its values
    // win.
    std::fs::write(
        d.join("default.json"),
        include_str!("../../policies/default.json"),
    )
    .unwrap();
    let s = PolicySources::from_dir(&d, None).unwrap();
    let r = s
        .resolve_with(
            b.annotations().as_ref(),
            Path::new("/"),
            &HostAddrs::default(),
        )
        .unwrap();
    assert_eq!(
        r.policy.isolation,
        crate::policy::builtin_run_default()
            .isolation
            .meet(&r.policy.isolation)
    );
    assert_eq!(r.policy.isolation.capabilities.keep, Some(vec![]));
    assert!(r.policy.isolation.read_only_root);
    assert_eq!(
        r.policy.landlock,
        crate::policy::LandlockRequirement::BestEffort
    );
    assert_eq!(r.policy.resources.core.map(|c| c.bytes()), Some(0));
    // The built-in engine default as the reference: its dropped
    // capabilities and no_new_privileges win; keep and Landlock stay
    // the annotation's (the engine keeps the bundle's, Landlock off).
    std::fs::remove_file(d.join("default.json")).unwrap();
    let s = PolicySources::from_dir(&d, None).unwrap();
    let r = s
        .resolve_with(
            b.annotations().as_ref(),
            Path::new("/"),
            &HostAddrs::default(),
        )
        .unwrap();
    assert_eq!(r.origin, PolicyOrigin::Inline);
    let iso = &r.policy.isolation;
    assert_eq!(iso, &builtin_default().isolation.meet(iso));
    assert!(iso.no_new_privileges && !iso.read_only_root);
    assert_eq!(iso.capabilities.keep.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        iso.capabilities.drop,
        builtin_default().isolation.capabilities.drop
    );
    assert_eq!(r.policy.landlock, crate::policy::LandlockRequirement::Off);
    let _ = std::fs::remove_dir_all(&d);
}

/// The mode travels in the prepared container (and from there in the
/// metadata), never in the spec a bundle could also write.
#[test]
fn the_mode_is_the_prepared_containers_not_an_annotation() {
    let d = tmpdir("mode");
    let s = PolicySources::from_dir(&d, None).unwrap();
    let oci = prepare_container(&bundle(), &s, &ctx()).unwrap();
    assert_eq!(oci.mode, SpecMode::Oci);
    let run = RunSandbox {
        policy: crate::policy::builtin_run_default(),
        origin: "test".into(),
        ..RunSandbox::default()
    };
    let p = prepare_run(&bundle(), &run).unwrap();
    assert_eq!(p.mode, SpecMode::Run);
    let annotations = p.effective.annotations().clone().unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k == "buntime.dev/paths"),
        "{annotations:?}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// buntime's seccomp profile is chosen once: into the spec when the bundle
/// has none, stacked on a profile of the bundle's own.
#[test]
fn the_seccomp_profile_goes_into_the_spec_or_is_stacked() {
    let d = tmpdir("seccomp");
    std::fs::write(
        d.join("default.json"),
        r#"{"version":1,"isolation":{"seccomp":"buntime"}}"#,
    )
    .unwrap();
    let s = PolicySources::from_dir(&d, None).unwrap();
    let p = prepare_container(&bundle(), &s, &ctx()).unwrap();
    let ours = crate::spec::default_seccomp(p.resolved.policy.network.mode);
    let in_spec = p.effective.linux().as_ref().unwrap().seccomp().clone();
    assert_eq!(in_spec, Some(ours.clone()));
    assert_eq!(p.stacked_seccomp, None);
    let mut own = bundle();
    let mut linux = own.linux().clone().unwrap();
    linux.set_seccomp(Some(crate::spec::default_seccomp(
        crate::policy::NetMode::Host,
    )));
    own.set_linux(Some(linux));
    let p = prepare_container(&own, &s, &ctx()).unwrap();
    assert_eq!(p.stacked_seccomp, Some(ours));
    assert_eq!(
        p.effective.linux().as_ref().unwrap().seccomp(),
        own.linux().as_ref().unwrap().seccomp(),
        "the bundle's own profile stays in the spec"
    );
    let _ = std::fs::remove_dir_all(&d);
}
