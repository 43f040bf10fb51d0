use std::path::Path;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};

use super::*;
use crate::policy::{parse_policy, BUILTIN_POLICIES};

const BUNDLE: &str = include_str!("../../tests/golden/bundle.json");

fn bundle() -> Spec {
    serde_json::from_str(BUNDLE).unwrap()
}

fn ctx(mode: SpecMode) -> SpecContext {
    SpecContext {
        mode,
        // Fixed limits so golden files do not depend on the machine.
        host_limits: HostLimits {
            hard: vec![(PosixRlimitType::RlimitNofile, 20_000)],
        },
        proxy_port: Some(3128),
        host_env: None,
    }
}

fn policy(src: &str) -> Policy {
    let mut p = parse_policy(src, "test.json").unwrap();
    p.resolve_relative(Path::new("/work"));
    p
}

fn env_of(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().env().clone().unwrap()
}

fn has_netns(s: &Spec) -> bool {
    s.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none())
}

#[test]
fn golden_effective_specs_for_shipped_policies() {
    let update = std::env::var_os("BUNTIME_UPDATE_GOLDEN").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, src) in BUILTIN_POLICIES {
        let p = policy(src);
        let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
        check_only_narrows(&bundle(), &eff).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut text = serde_json::to_string_pretty(&canonical_spec_json(&eff)).unwrap();
        text.push('\n');
        let file = dir.join(name.replace(".json", ".spec.json"));
        if update {
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run BUNTIME_UPDATE_GOLDEN=1 cargo test --lib spec",
                file.display()
            )
        });
        assert_eq!(
            want,
            text,
            "{} drifted; if intended, regenerate with BUNTIME_UPDATE_GOLDEN=1 cargo test --lib spec",
            file.display()
        );
    }
}

#[test]
fn read_only_root_no_caps_no_new_privs() {
    let p = policy(r#"{"version":1}"#);
    let mut b = bundle();
    b.root_mut().as_mut().unwrap().set_readonly(Some(false));
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(eff.root().as_ref().unwrap().readonly(), Some(true));
    let proc_ = eff.process().as_ref().unwrap();
    assert_eq!(proc_.no_new_privileges(), Some(true));
    let caps = proc_.capabilities().as_ref().unwrap();
    assert!(caps.bounding().as_ref().unwrap().is_empty());
    assert!(caps.effective().as_ref().unwrap().is_empty());
    assert!(caps.ambient().as_ref().unwrap().is_empty());
    let v = serde_json::to_value(&eff).unwrap();
    assert_eq!(v["process"]["noNewPrivileges"], true);
}

#[test]
fn private_tmp_replaces_bundle_tmp() {
    let p = policy(r#"{"version":1,"filesystem":{"write":["/tmp"]}}"#);
    let mut b = bundle();
    let mut m = Mount::default();
    m.set_destination("/tmp".into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some("/host/tmp".into()));
    m.set_options(Some(vec!["rbind".into()]));
    b.mounts_mut().as_mut().unwrap().push(m);
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    let tmps: Vec<_> = eff
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/tmp"))
        .collect();
    assert_eq!(tmps.len(), 1);
    assert_eq!(tmps[0].typ().as_deref(), Some("tmpfs"));
    assert!(tmps[0]
        .options()
        .as_ref()
        .unwrap()
        .contains(&"noexec".to_string()));
}

#[test]
fn network_modes_translate() {
    let mut b = bundle();
    // A bundle that shares the host network.
    b.linux_mut()
        .as_mut()
        .unwrap()
        .namespaces_mut()
        .as_mut()
        .unwrap()
        .retain(|n| n.typ() != LinuxNamespaceType::Network);
    let none = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    assert!(has_netns(&none));
    let proxy = effective_spec(
        &policy(r#"{"version":1,"network":{"mode":"proxy","allow":["pypi.org"]}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    assert!(has_netns(&proxy));
    // host mode in OCI mode keeps the bundle's choice; it never adds host
    // networking to a bundle that has its own namespace.
    let host = policy(r#"{"version":1,"network":{"mode":"host"}}"#);
    assert!(has_netns(
        &effective_spec(&host, &bundle(), &ctx(SpecMode::Oci)).unwrap()
    ));
    assert!(!has_netns(
        &effective_spec(&host, &bundle(), &ctx(SpecMode::Run)).unwrap()
    ));
}

#[test]
fn seccomp_default_only_when_bundle_has_none() {
    let p = policy(r#"{"version":1}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    assert!(eff.linux().as_ref().unwrap().seccomp().is_some());
    let mut b = bundle();
    let own = seccomp::default_seccomp(NetMode::Host);
    b.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(own.clone()));
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(eff.linux().as_ref().unwrap().seccomp().as_ref(), Some(&own));
}

#[test]
fn rlimits_never_exceed_host_hard_limits() {
    let p = policy(r#"{"version":1,"resources":{"open_files":65536}}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    let rl = eff.process().as_ref().unwrap().rlimits().clone().unwrap();
    let nofile = rl
        .iter()
        .find(|r| r.typ() == PosixRlimitType::RlimitNofile)
        .unwrap();
    // The bundle's 1024 is lower than the policy's, and stays.
    assert_eq!(nofile.hard(), 1024);
    let mut b = bundle();
    b.process_mut().as_mut().unwrap().set_rlimits(None);
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    let rl = eff.process().as_ref().unwrap().rlimits().clone().unwrap();
    let nofile = rl
        .iter()
        .find(|r| r.typ() == PosixRlimitType::RlimitNofile)
        .unwrap();
    assert_eq!(nofile.hard(), 20_000, "clamped to the host's hard limit");
    assert!(nofile.soft() <= nofile.hard());
    let core = rl
        .iter()
        .find(|r| r.typ() == PosixRlimitType::RlimitCore)
        .unwrap();
    assert_eq!(core.hard(), 0);
}

#[test]
fn host_limits_are_read_from_the_system() {
    let h = HostLimits::current();
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit into a local.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    let want = if r.rlim_max == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_max
    };
    assert_eq!(h.hard(PosixRlimitType::RlimitNofile), want);
}

#[test]
fn cgroup_limits_from_resources() {
    let p = policy(r#"{"version":1,"resources":{"memory":"256M","pids":64,"cpu":1.5}}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    let r = eff.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(256 << 20));
    assert_eq!(r.pids().unwrap().limit(), 64);
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.quota(), Some(150_000));
    assert_eq!(cpu.period(), Some(100_000));
    // A bundle limit that is already lower stays.
    let mut b = bundle();
    let mut res = b.linux().as_ref().unwrap().resources().clone().unwrap();
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(100 << 20));
    res.set_memory(Some(mem));
    b.linux_mut().as_mut().unwrap().set_resources(Some(res));
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    let r = eff.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(100 << 20));
}

#[test]
fn environment_is_filtered() {
    let p = policy(r#"{"version":1,"env":{"pass":["PATH","LC_*"],"set":{"HOME":"/tmp"}}}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    let env = env_of(&eff);
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    assert!(env.contains(&"LC_ALL=C.UTF-8".to_string()));
    assert!(
        env.contains(&"HOME=/tmp".to_string()),
        "fixed value wins: {env:?}"
    );
    assert!(!env.iter().any(|e| e.starts_with("AWS_SECRET")), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("TERM=")));
    // Run mode filters the caller's environment instead.
    let mut c = ctx(SpecMode::Run);
    c.host_env = Some(vec![
        ("LC_CTYPE".into(), "x".into()),
        ("SECRET".into(), "y".into()),
    ]);
    let env = env_of(&effective_spec(&p, &bundle(), &c).unwrap());
    assert!(env.contains(&"LC_CTYPE=x".to_string()));
    assert!(!env.iter().any(|e| e.starts_with("SECRET")));
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "a default PATH is kept"
    );
}

#[test]
fn deny_paths_are_masked() {
    let p = policy(r#"{"version":1,"filesystem":{"read":["/etc"],"deny":["/etc/shadow"]}}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    let masked = eff
        .linux()
        .as_ref()
        .unwrap()
        .masked_paths()
        .clone()
        .unwrap();
    assert!(masked.contains(&"/etc/shadow".to_string()));
    for d in DEFAULT_MASKED_PATHS {
        assert!(masked.contains(&d.to_string()), "{d}");
    }
    let ro = eff
        .linux()
        .as_ref()
        .unwrap()
        .readonly_paths()
        .clone()
        .unwrap();
    for d in DEFAULT_READONLY_PATHS {
        assert!(ro.contains(&d.to_string()), "{d}");
    }
}

#[test]
fn run_mode_binds_host_paths_oci_mode_never_does() {
    let p = policy(
        r#"{"version":1,"filesystem":{"read":["/usr","/proc","/tmp/scripts"],"write":["/work/out","/tmp"],"exec":["/usr/bin"]}}"#,
    );
    let run = effective_spec(&p, &bundle(), &ctx(SpecMode::Run)).unwrap();
    let find = |s: &Spec, d: &str| {
        s.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new(d))
            .cloned()
    };
    let usr = find(&run, "/usr").expect("read path bound");
    assert!(usr.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert_eq!(usr.source().as_deref(), Some(Path::new("/usr")));
    let out = find(&run, "/work/out").expect("write path bound");
    assert!(out.options().as_ref().unwrap().contains(&"rw".to_string()));
    // Inside a read-only bind: comes with it (rbind), no second mount.
    assert!(find(&run, "/usr/bin").is_none());
    // Under the private /tmp: the host's directory, bound read-only.
    let scripts = find(&run, "/tmp/scripts").expect("host path under /tmp bound");
    assert!(scripts
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
    assert_eq!(find(&run, "/tmp").unwrap().typ().as_deref(), Some("tmpfs"));
    // /proc comes from the container's own proc mount, never the host's.
    assert_eq!(find(&run, "/proc").unwrap().typ().as_deref(), Some("proc"));
    let oci = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    assert!(find(&oci, "/usr").is_none());
    assert!(find(&oci, "/work/out").is_none());
    check_only_narrows(&bundle(), &oci).unwrap();
    assert!(check_only_narrows(&bundle(), &run).is_err());
}

#[test]
fn bundle_binds_outside_write_paths_become_read_only() {
    let mut b = bundle();
    let mut m = Mount::default();
    m.set_destination("/data".into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some("/srv/data".into()));
    m.set_options(Some(vec!["rbind".into(), "rw".into()]));
    b.mounts_mut().as_mut().unwrap().push(m);
    let eff = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    let data = eff
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap();
    let opts = data.options().clone().unwrap();
    assert!(opts.contains(&"ro".to_string()) && !opts.contains(&"rw".to_string()));
    let eff = effective_spec(
        &policy(r#"{"version":1,"filesystem":{"write":["/data"]}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    let data = eff
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap();
    assert!(data.options().clone().unwrap().contains(&"rw".to_string()));
    check_only_narrows(&b, &eff).unwrap();
}

#[test]
fn relative_paths_are_refused() {
    let p = parse_policy(r#"{"version":1,"filesystem":{"read":["data"]}}"#, "t").unwrap();
    assert!(matches!(
        effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)),
        Err(SpecError::RelativePath(_))
    ));
}

mod narrowing {
    use super::*;
    use libcontainer::oci_spec::runtime::{Capability, LinuxDevice};

    fn eff() -> Spec {
        effective_spec(&policy(r#"{"version":1}"#), &bundle(), &ctx(SpecMode::Oci)).unwrap()
    }

    fn violations(e: &Spec) -> String {
        check_only_narrows(&bundle(), e).unwrap_err().to_string()
    }

    #[test]
    fn added_host_bind_is_refused() {
        let mut e = eff();
        e.mounts_mut()
            .as_mut()
            .unwrap()
            .push(super::bind_mount(Path::new("/etc"), false));
        let msg = violations(&e);
        assert!(msg.contains("host mount /etc -> /etc"), "{msg}");
        assert!(
            msg.starts_with("an annotation policy may only take rights away"),
            "{msg}"
        );
    }

    #[test]
    fn added_device_is_refused() {
        let mut e = eff();
        let mut d = LinuxDevice::default();
        d.set_path("/dev/kvm".into());
        e.linux_mut().as_mut().unwrap().set_devices(Some(vec![d]));
        assert!(violations(&e).contains("device /dev/kvm"));
    }

    #[test]
    fn added_capability_is_refused() {
        let mut e = eff();
        let mut caps = LinuxCapabilities::default();
        let set: Capabilities = [Capability::SysAdmin].into_iter().collect();
        caps.set_bounding(Some(set));
        e.process_mut()
            .as_mut()
            .unwrap()
            .set_capabilities(Some(caps));
        let msg = violations(&e);
        assert!(msg.contains("bounding capabilities CAP_SYS_ADMIN"), "{msg}");
    }

    #[test]
    fn host_network_is_refused() {
        let mut e = eff();
        e.linux_mut()
            .as_mut()
            .unwrap()
            .namespaces_mut()
            .as_mut()
            .unwrap()
            .retain(|n| n.typ() != LinuxNamespaceType::Network);
        let msg = violations(&e);
        assert!(msg.contains("the host's net namespace"), "{msg}");
    }

    #[test]
    fn weaker_process_settings_are_refused() {
        let mut e = eff();
        e.process_mut()
            .as_mut()
            .unwrap()
            .set_no_new_privileges(Some(false));
        e.root_mut().as_mut().unwrap().set_readonly(Some(false));
        let msg = violations(&e);
        assert!(msg.contains("noNewPrivileges"), "{msg}");
        assert!(msg.contains("writable root"), "{msg}");
    }
}
