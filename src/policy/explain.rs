//! A short human summary of what a policy allows (`buntime policy explain`).

use std::fmt::Write;

use super::model::{LandlockRequirement, NetMode, Policy};

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
