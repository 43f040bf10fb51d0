//! A short human summary of what a policy allows (`buntime policy explain`).

use std::fmt::Write;

use super::model::{LandlockRequirement, NetMode, Policy, SeccompChoice};

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Explain `policy` in a few lines of plain text.
pub fn explain(policy: &Policy) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let desc = if policy.description.is_empty() {
        "(no description)"
    } else {
        &policy.description
    };
    let _ = writeln!(o, "{desc}");
    let _ = writeln!(o);

    explain_files(policy, &mut o);
    explain_programs(policy, &mut o);
    explain_network(policy, &mut o);
    explain_env(policy, &mut o);
    explain_limits(policy, &mut o);

    let b = &policy.broker;
    let _ = writeln!(o, "At run time, beyond these rules:");
    let _ = writeln!(
        o,
        "  read a file: {}, write a file: {}, list a directory: {}, connect: {}, run a program: {}",
        b.fs_read.as_str(),
        b.fs_write.as_str(),
        b.list_dir.as_str(),
        b.net_connect.as_str(),
        b.exec.as_str()
    );
    explain_isolation(policy, &mut o);
    let _ = writeln!(
        o,
        "Kernel enforcement (Landlock): {}",
        match policy.landlock {
            LandlockRequirement::BestEffort => "used when available",
            LandlockRequirement::Required => "required; the sandbox is refused without it",
            LandlockRequirement::Off =>
                "off; the file and network rules rely on mounts, masks, namespaces and seccomp",
        }
    );
    o
}

/// The filesystem lists.
fn explain_files(policy: &Policy, o: &mut String) {
    let fs = &policy.filesystem;
    let _ = writeln!(o, "Files (each path includes everything below it):");
    if fs.read.is_empty() && fs.write.is_empty() && fs.exec.is_empty() {
        let _ = writeln!(o, "  nothing may be read, written or executed");
    }
    if !fs.read.is_empty() {
        let _ = writeln!(o, "  read:    {}", list(&fs.read));
    }
    if !fs.write.is_empty() {
        let _ = writeln!(o, "  write:   {}", list(&fs.write));
    }
    if !fs.exec.is_empty() {
        let _ = writeln!(o, "  execute: {}", list(&fs.exec));
    }
    if !fs.deny.is_empty() {
        let _ = writeln!(o, "  never:   {}", list(&fs.deny));
    }
}

/// `exec.allow` and the execute paths.
fn explain_programs(policy: &Policy, o: &mut String) {
    let fs = &policy.filesystem;
    let _ = writeln!(o, "Programs:");
    if policy.exec.allow.is_empty() {
        if fs.exec.is_empty() {
            let _ = writeln!(o, "  none may be started");
        } else {
            let _ = writeln!(o, "  any program under the execute paths");
        }
    } else {
        let _ = writeln!(o, "  {}", list(&policy.exec.allow));
        if !fs.exec.is_empty() {
            let _ = writeln!(o, "  and any program under the execute paths");
        }
    }
}

/// The network mode and rules.
fn explain_network(policy: &Policy, o: &mut String) {
    let net = &policy.network;
    let _ = writeln!(o, "Network:");
    match net.mode {
        NetMode::None => {
            let _ = writeln!(o, "  none: no network, only the sandbox's own loopback");
        }
        NetMode::Proxy => {
            if net.allow.is_empty() {
                let _ = writeln!(
                    o,
                    "  proxy: egress only through buntime's proxy, to nothing (no allow entries)"
                );
            } else {
                let _ = writeln!(
                    o,
                    "  proxy: egress only through buntime's proxy, to {}",
                    list(&net.allow)
                );
            }
            let _ = writeln!(
                o,
                "  loopback, private, link-local and cloud-metadata addresses stay blocked unless an address entry names them"
            );
        }
        NetMode::Pod => {
            let _ = writeln!(
                o,
                "  pod: the bundle's (the pod's) network namespace; egress through buntime's proxy in it, to {}",
                if net.allow.is_empty() { "nothing (no allow entries)".to_string() } else { list(&net.allow) }
            );
            let ports = net.direct_ports();
            if !ports.is_empty() {
                let _ = writeln!(
                    o,
                    "  direct TCP connects (no proxy) to ports {ports:?}, at any address (Landlock filters ports only)"
                );
            }
        }
        NetMode::Bundle => {
            let _ = writeln!(
                o,
                "  bundle: the network the bundle (or the engine) gives the container, no proxy"
            );
        }
        NetMode::Host => {
            let _ = writeln!(o, "  host: WARNING: the host's network, with no isolation");
        }
    }
    if !net.deny.is_empty() {
        let _ = writeln!(o, "  never:   {}", list(&net.deny));
    }
}

/// The environment passed in and set.
fn explain_env(policy: &Policy, o: &mut String) {
    let env = &policy.env;
    let _ = writeln!(o, "Environment:");
    if env.pass.is_empty() {
        let _ = writeln!(o, "  no host variables pass in");
    } else if env.pass.iter().any(|p| p.as_str() == "*") {
        let _ = writeln!(o, "  WARNING: every host variable passes in");
    } else {
        let _ = writeln!(
            o,
            "  passes in: {}; everything else is dropped",
            list(&env.pass)
        );
    }
    if !env.set.is_empty() {
        let set: Vec<String> = env
            .set
            .iter()
            .map(|(k, v)| format!("{}={v}", k.as_str()))
            .collect();
        let _ = writeln!(o, "  sets: {}", set.join(", "));
    }
}

/// `resources`.
fn explain_limits(policy: &Policy, o: &mut String) {
    let r = &policy.resources;
    let mut limits = Vec::new();
    if let Some(m) = r.memory {
        limits.push(format!("memory {m}"));
    }
    if let Some(c) = r.cpu {
        limits.push(format!("{} CPU", c.get()));
    }
    if let Some(p) = r.pids {
        limits.push(format!("{p} processes"));
    }
    if let Some(t) = r.timeout {
        limits.push(format!("timeout {t}"));
    }
    if let Some(s) = r.output {
        limits.push(format!("output {s}"));
    }
    if let Some(n) = r.open_files {
        limits.push(format!("{n} open files"));
    }
    let _ = writeln!(o, "Limits:");
    if limits.is_empty() {
        let _ = writeln!(o, "  none set by the policy");
    } else {
        let _ = writeln!(o, "  {}", limits.join(", "));
    }
}

/// The `isolation` section and `resources.core`: what is forced, and
/// what is left to the bundle.
fn explain_isolation(policy: &Policy, o: &mut String) {
    const BUNDLE: &str = "as the bundle says";
    let iso = &policy.isolation;
    let _ = writeln!(
        o,
        "Kernel isolation (what is not set here is the bundle's):"
    );
    let caps = &iso.capabilities;
    let caps_line = match (&caps.keep, caps.drop.is_empty()) {
        (Some(k), _) if k.is_empty() => "none".to_string(),
        (Some(k), true) => format!("only {} (of those the bundle gives)", list(k)),
        (Some(k), false) => format!(
            "only {} (of those the bundle gives), never {}",
            list(k),
            list(&caps.drop)
        ),
        (None, false) => format!("the bundle's, without {}", list(&caps.drop)),
        (None, true) => format!("the bundle's ({BUNDLE})"),
    };
    let _ = writeln!(o, "  capabilities: {caps_line}");
    let flag = |on: bool, yes: &str| -> String {
        if on {
            yes.to_string()
        } else {
            BUNDLE.to_string()
        }
    };
    let _ = writeln!(
        o,
        "  root filesystem: {}",
        flag(iso.read_only_root, "read-only")
    );
    let _ = writeln!(
        o,
        "  no new privileges (setuid programs gain nothing): {}",
        flag(iso.no_new_privileges, "always")
    );
    let ns = if iso.namespaces.is_empty() {
        BUNDLE.to_string()
    } else {
        let names: Vec<&str> = iso.namespaces.iter().map(|n| n.as_str()).collect();
        format!("its own {}, besides the bundle's", names.join(", "))
    };
    let _ = writeln!(o, "  namespaces: {ns}");
    let _ = writeln!(
        o,
        "  seccomp: {}",
        match iso.seccomp {
            SeccompChoice::Buntime =>
                "buntime's profile for the network mode, on top of the bundle's own",
            SeccompChoice::Bundle => "the bundle's own profile only (none if it has none)",
        }
    );
    let _ = writeln!(
        o,
        "  /tmp: {}",
        flag(iso.private_tmp, "a private tmpfs, emptied with the sandbox")
    );
    let _ = writeln!(
        o,
        "  kernel files in /proc and /sys: {}",
        flag(iso.mask_kernel_paths, "hidden or read-only (as runc does)")
    );
    let core = match policy.resources.core {
        Some(c) if c.bytes() == 0 => "none".to_string(),
        Some(c) => format!("at most {c}"),
        None => BUNDLE.to_string(),
    };
    let _ = writeln!(o, "  core dumps: {core}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{builtin_policy, parse_policy};

    #[test]
    fn explains_default() {
        let p = builtin_policy("default").unwrap().unwrap();
        let e = explain(&p);
        assert!(e.starts_with("Untrusted scripts"), "{e}");
        assert!(e.contains("write:   /tmp"), "{e}");
        assert!(e.contains("none: no network"), "{e}");
        assert!(e.contains("never:   /etc/shadow"), "{e}");
        assert!(e.contains("memory 512M"), "{e}");
        assert!(e.contains("capabilities: none"), "{e}");
        assert!(e.contains("root filesystem: read-only"), "{e}");
        assert!(e.contains("buntime's profile for the network mode"), "{e}");
        assert!(e.contains("core dumps: none"), "{e}");
    }

    #[test]
    fn explains_what_the_bundle_decides() {
        let p = parse_policy(
            r#"{"version":1,"network":{"mode":"bundle"},"landlock":"off",
                "isolation":{"capabilities":{"drop":["SYS_ADMIN","cap_bpf"]}}}"#,
            "t",
        )
        .unwrap();
        let e = explain(&p);
        assert!(e.contains("bundle: the network the bundle"), "{e}");
        assert!(e.contains("the bundle's, without SYS_ADMIN, BPF"), "{e}");
        assert!(e.contains("root filesystem: as the bundle says"), "{e}");
        assert!(e.contains("the bundle's own profile only"), "{e}");
        assert!(e.contains("Landlock): off"), "{e}");
    }

    #[test]
    fn explains_proxy_and_warnings() {
        let p = builtin_policy("python-dev").unwrap().unwrap();
        let e = explain(&p);
        assert!(
            e.contains("proxy: egress only through buntime's proxy, to pypi.org:443"),
            "{e}"
        );
        assert!(e.contains("cloud-metadata"), "{e}");
        let p = parse_policy(
            r#"{"version":1,"network":{"mode":"host"},"env":{"pass":["*"]}}"#,
            "t",
        )
        .unwrap();
        let e = explain(&p);
        assert!(e.contains("WARNING: the host's network"), "{e}");
        assert!(e.contains("WARNING: every host variable"), "{e}");
        assert!(e.contains("nothing may be read"), "{e}");
        assert!(e.contains("none may be started"), "{e}");
    }
}
