use std::path::Path;

use libcontainer::oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxMemory, LinuxNamespaceType,
    PosixRlimitType, Process, Spec,
};

use super::*;
use crate::policy::{parse_policy, NetMode, BUILTIN_POLICIES};

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

/// The isolation section the shipped policies carry.
const SECURE: &str = r#""isolation":{"capabilities":{"keep":[]},"read_only_root":true,
    "no_new_privileges":true,"namespaces":["pid","ipc","uts","mount"],"seccomp":"buntime",
    "private_tmp":true,"mask_kernel_paths":true}"#;

fn secure(rest: &str) -> Policy {
    let sep = if rest.is_empty() { "" } else { "," };
    policy(&format!(r#"{{"version":1,{SECURE}{sep}{rest}}}"#))
}

fn process_of(s: &Spec) -> &Process {
    s.process().as_ref().unwrap()
}

fn linux_of(s: &Spec) -> &Linux {
    s.linux().as_ref().unwrap()
}

#[test]
fn unset_isolation_follows_the_bundle() {
    let mut b = bundle();
    b.root_mut().as_mut().unwrap().set_readonly(Some(false));
    b.process_mut()
        .as_mut()
        .unwrap()
        .set_no_new_privileges(Some(false));
    let eff = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(eff.root().as_ref().unwrap().readonly(), Some(false));
    assert_eq!(process_of(&eff).no_new_privileges(), Some(false));
    assert_eq!(
        process_of(&eff).capabilities(),
        process_of(&b).capabilities()
    );
    // Rlimits: the bundle's (no RLIMIT_CORE added).
    assert_eq!(process_of(&eff).rlimits(), process_of(&b).rlimits());
    // Paths, seccomp, namespaces other than the network's: the bundle's.
    assert_eq!(linux_of(&eff).masked_paths(), linux_of(&b).masked_paths());
    assert_eq!(
        linux_of(&eff).readonly_paths(),
        linux_of(&b).readonly_paths()
    );
    assert_eq!(linux_of(&eff).seccomp(), linux_of(&b).seccomp());
    assert_eq!(eff.mounts(), b.mounts());
}

#[test]
fn read_only_root_no_caps_no_new_privs() {
    let p = secure("");
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
fn capabilities_keep_and_drop() {
    let mut b = bundle();
    let all: Capabilities = [
        Capability::Chown,
        Capability::Setuid,
        Capability::SysAdmin,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(all.clone()));
    caps.set_effective(Some(all.clone()));
    caps.set_permitted(Some(all));
    b.process_mut()
        .as_mut()
        .unwrap()
        .set_capabilities(Some(caps));
    let eff = effective_spec(
        &policy(r#"{"version":1,"isolation":{"capabilities":{"keep":["chown","CAP_KILL"]}}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    let got = process_of(&eff).capabilities().clone().unwrap();
    let chown: Capabilities = [Capability::Chown].into_iter().collect();
    assert_eq!(got.effective().as_ref(), Some(&chown), "KILL not added");
    assert_eq!(got.bounding().as_ref(), Some(&chown));
    let eff = effective_spec(
        &policy(r#"{"version":1,"isolation":{"capabilities":{"drop":["SYS_ADMIN"]}}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    let got = process_of(&eff).capabilities().clone().unwrap();
    let eff_set = got.effective().clone().unwrap();
    assert_eq!(eff_set.len(), 3);
    assert!(!eff_set.contains(&Capability::SysAdmin));
}

#[test]
fn namespaces_are_added_never_removed() {
    let mut b = bundle();
    b.linux_mut()
        .as_mut()
        .unwrap()
        .namespaces_mut()
        .as_mut()
        .unwrap()
        .retain(|n| n.typ() != LinuxNamespaceType::Ipc && n.typ() != LinuxNamespaceType::Uts);
    let has = |s: &Spec, t: LinuxNamespaceType| {
        linux_of(s)
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t)
    };
    let eff = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    assert!(!has(&eff, LinuxNamespaceType::Ipc));
    let eff = effective_spec(
        &policy(r#"{"version":1,"isolation":{"namespaces":["ipc","cgroup"]}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    assert!(has(&eff, LinuxNamespaceType::Ipc));
    assert!(has(&eff, LinuxNamespaceType::Cgroup));
    assert!(!has(&eff, LinuxNamespaceType::Uts), "only what is named");
    assert!(has(&eff, LinuxNamespaceType::Pid), "the bundle's stay");
}

#[test]
fn core_limit_only_when_the_policy_sets_one() {
    let core = |s: &Spec| {
        process_of(s)
            .rlimits()
            .iter()
            .flatten()
            .find(|r| r.typ() == PosixRlimitType::RlimitCore)
            .map(|r| (r.soft(), r.hard()))
    };
    let mut b = bundle();
    b.process_mut().as_mut().unwrap().set_rlimits(None);
    let eff = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(process_of(&eff).rlimits(), &None, "absent stays absent");
    let eff = effective_spec(
        &policy(r#"{"version":1,"resources":{"core":0}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    assert_eq!(core(&eff), Some((0, 0)));
    let eff = effective_spec(
        &policy(r#"{"version":1,"resources":{"core":"1M"}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    assert_eq!(core(&eff), Some((1 << 20, 1 << 20)));
}

#[test]
fn kernel_path_masks_only_when_asked() {
    let mut b = bundle();
    b.linux_mut().as_mut().unwrap().set_masked_paths(None);
    b.linux_mut().as_mut().unwrap().set_readonly_paths(None);
    let eff = effective_spec(&policy(r#"{"version":1}"#), &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(linux_of(&eff).masked_paths(), &None);
    assert_eq!(linux_of(&eff).readonly_paths(), &None);
    let eff = effective_spec(
        &policy(r#"{"version":1,"isolation":{"mask_kernel_paths":true}}"#),
        &b,
        &ctx(SpecMode::Oci),
    )
    .unwrap();
    assert_eq!(
        linux_of(&eff).masked_paths().as_deref(),
        Some(
            &DEFAULT_MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()[..]
        )
    );
    assert_eq!(
        linux_of(&eff).readonly_paths().as_ref().map(Vec::len),
        Some(DEFAULT_READONLY_PATHS.len())
    );
}

#[test]
fn bundle_tmp_stays_without_private_tmp() {
    let p = policy(r#"{"version":1,"filesystem":{"write":["/tmp"]}}"#);
    let mut b = bundle();
    let mut m = Mount::default();
    m.set_destination("/tmp".into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some("/host/tmp".into()));
    m.set_options(Some(vec!["rbind".into()]));
    b.mounts_mut().as_mut().unwrap().push(m.clone());
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    let tmps: Vec<_> = eff
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/tmp"))
        .collect();
    assert_eq!(tmps, [&m]);
    // `buntime run` always has its own.
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Run)).unwrap();
    let tmp = eff
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/tmp"))
        .unwrap();
    assert_eq!(tmp.typ().as_deref(), Some("tmpfs"));
}

#[test]
fn private_tmp_replaces_bundle_tmp() {
    let p = secure(r#""filesystem":{"write":["/tmp"]}"#);
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
    let p = secure("");
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    assert!(eff.linux().as_ref().unwrap().seccomp().is_some());
    assert_eq!(stacked_seccomp(&p, &bundle()), None, "nothing to stack on");
    let mut b = bundle();
    let own = seccomp::default_seccomp(NetMode::Host);
    b.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(own.clone()));
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(eff.linux().as_ref().unwrap().seccomp().as_ref(), Some(&own));
    // Stacked at create: buntime's profile for mode none on the bundle's.
    assert_eq!(
        stacked_seccomp(&p, &b),
        Some(seccomp::default_seccomp(NetMode::None))
    );
    // The very same profile is not stacked twice.
    let mut same = bundle();
    same.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(seccomp::default_seccomp(NetMode::None)));
    assert_eq!(stacked_seccomp(&p, &same), None);
}

#[test]
fn seccomp_bundle_means_the_bundles_only() {
    let p = policy(r#"{"version":1,"isolation":{"seccomp":"bundle"}}"#);
    let eff = effective_spec(&p, &bundle(), &ctx(SpecMode::Oci)).unwrap();
    assert!(linux_of(&eff).seccomp().is_none(), "none added");
    let mut b = bundle();
    let own = seccomp::default_seccomp(NetMode::Host);
    b.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(own.clone()));
    let eff = effective_spec(&p, &b, &ctx(SpecMode::Oci)).unwrap();
    assert_eq!(linux_of(&eff).seccomp().as_ref(), Some(&own));
    assert_eq!(stacked_seccomp(&p, &b), None, "nothing stacked");
}

#[test]
fn rlimits_never_exceed_host_hard_limits() {
    let p = policy(r#"{"version":1,"resources":{"open_files":65536,"core":0}}"#);
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
    let p = secure(r#""filesystem":{"read":["/etc"],"deny":["/etc/shadow"]}"#);
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

/// A policy that grants everything and says nothing about isolation.
const GRANT_EVERYTHING: &str = r#"{"version":1,
    "filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
    "network":{"mode":"bundle"},"env":{"pass":["*"]},"landlock":"off"}"#;

#[test]
fn grant_everything_is_the_identity() {
    // What podman hands a runtime: its default capabilities, a seccomp
    // profile, masked paths, rlimits, a pod network joined by path, a
    // writable root, no no_new_privs, volumes, a /tmp of its own.
    let engine: Spec =
        serde_json::from_str(include_str!("../../tests/golden/engine-bundle.json")).unwrap();
    let p = policy(GRANT_EVERYTHING);
    let c = SpecContext {
        host_limits: HostLimits::unlimited(),
        ..ctx(SpecMode::Oci)
    };
    let eff = effective_spec(&p, &engine, &c).unwrap();
    check_only_narrows(&engine, &eff).unwrap();
    let strip = |s: &Spec| {
        let mut v = canonical_spec_json(s);
        let o = v.as_object_mut().unwrap();
        o.remove("annotations");
        o["process"].as_object_mut().unwrap().remove("env");
        v
    };
    assert_eq!(
        serde_json::to_string_pretty(&strip(&eff)).unwrap(),
        serde_json::to_string_pretty(&strip(&engine)).unwrap()
    );
    // The environment: all of it (PATH was there).
    assert_eq!(env_of(&eff), env_of(&engine));
    assert_eq!(stacked_seccomp(&p, &engine), None, "nothing stacked");
    // The small runc-like bundle too.
    let eff = effective_spec(&p, &bundle(), &c).unwrap();
    assert_eq!(strip(&eff), strip(&bundle()));
}

#[test]
fn the_shipped_isolation_on_an_engine_bundle() {
    let engine: Spec =
        serde_json::from_str(include_str!("../../tests/golden/engine-bundle.json")).unwrap();
    let p = secure(r#""filesystem":{"read":["/"],"write":["/"],"exec":["/"]}"#);
    let eff = effective_spec(&p, &engine, &ctx(SpecMode::Oci)).unwrap();
    check_only_narrows(&engine, &eff).unwrap();
    assert_eq!(eff.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(process_of(&eff).no_new_privileges(), Some(true));
    let caps = process_of(&eff).capabilities().clone().unwrap();
    assert!(caps.bounding().as_ref().unwrap().is_empty());
    // The engine's profile stays; buntime's is stacked at create.
    assert_eq!(linux_of(&eff).seccomp(), linux_of(&engine).seccomp());
    assert_eq!(
        stacked_seccomp(&p, &engine),
        Some(default_seccomp(NetMode::None))
    );
    // Mode none: a fresh network namespace instead of the pod's.
    assert!(has_netns(&eff));
    let masked = linux_of(&eff).masked_paths().clone().unwrap();
    assert!(
        masked.contains(&"/sys/dev/block".to_string()),
        "the bundle's kept"
    );
    assert!(
        masked.contains(&"/proc/interrupts".to_string()),
        "runc's added"
    );
}

/// A root bundle without `capabilities` keeps everything root holds; a
/// policy dropping some is narrower, not a bundle "without any" gaining
/// capabilities.
#[test]
fn dropping_from_a_bundle_without_capabilities_only_narrows() {
    let mut b = bundle();
    let mut p = b.process().clone().unwrap();
    p.set_capabilities(None);
    b.set_process(Some(p));
    let policy = parse_policy(
        r#"{"version":1,"filesystem":{"read":["/"]},
            "isolation":{"capabilities":{"drop":["SYS_ADMIN"]}}}"#,
        "p.json",
    )
    .unwrap();
    let eff = effective_spec(&policy, &b, &ctx(SpecMode::Oci)).unwrap();
    check_only_narrows(&b, &eff).unwrap();
    let caps = eff
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let bounding = caps.bounding().clone().unwrap();
    assert!(!bounding.is_empty());
    assert!(!bounding.contains(&libcontainer::oci_spec::runtime::Capability::SysAdmin));
}
