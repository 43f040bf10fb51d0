//! `spec` (a default config.json like runc's) and `features`.

use std::fs;
use std::path::Path;

use libcontainer::oci_spec::runtime::Spec;
use serde_json::json;

use super::error::{Result, RuntimeError};

/// The default spec: runc's shape (a shell on a terminal in `rootfs`), or
/// the rootless variant with a user namespace mapping the caller.
pub fn default_spec(rootless: bool) -> Result<Spec> {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        Spec::default()
    };
    spec.set_hostname(Some("buntime".into()));
    if let Some(mut process) = spec.process().clone() {
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
    }
    Ok(spec)
}

/// Writes `config.json` into `bundle`, refusing to overwrite one (as runc).
pub fn write_default_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let file = bundle.join("config.json");
    if file.exists() {
        return Err(RuntimeError::Invalid(format!(
            "{} exists: remove it first",
            file.display()
        )));
    }
    let spec = default_spec(rootless)?;
    let body = serde_json::to_vec_pretty(&spec)
        .map_err(|e| RuntimeError::Invalid(format!("encode spec: {e}")))?;
    fs::write(&file, body).map_err(|e| RuntimeError::io(format!("write {}", file.display()), e))
}

/// What this runtime supports, in the OCI features format.
pub fn features() -> serde_json::Value {
    let namespaces = [
        "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
    ];
    let capabilities: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    let actions = [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ];
    let operators = [
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ];
    let archs = [
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ];
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "lazytime", "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime",
            "nomand", "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private",
            "rbind", "relatime", "remount", "ro", "rprivate", "rro", "rrw", "rshared",
            "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid",
            "symfollow", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": namespaces,
            "capabilities": capabilities,
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": actions,
                "operators": operators,
                "archs": archs,
                "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "io.github.seccomp.libseccomp.version": "2.5.4",
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "dev.buntime.landlock": "true",
            "dev.buntime.seccomp.notify": "true"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_as_oci_features() {
        let f: libcontainer::oci_spec::runtime::Features =
            serde_json::from_value(features()).expect("valid OCI features");
        let seccomp = f
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .expect("seccomp section");
        assert_eq!(seccomp.enabled(), &Some(true));
    }

    #[test]
    fn default_spec_is_runc_like() {
        let spec = default_spec(false).expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(p.terminal(), Some(true));
    }
}
