//! Reading a bundle and writing the effective spec libcontainer runs.
//!
//! libcontainer reads `config.json` from the bundle it is given, and `exec`
//! later reads it again. We never hand it the caller's bundle: we hand it our
//! own directory holding the effective spec (absolute rootfs, absolute bind
//! sources, a cgroup path of ours), so every later step sees what init saw.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompArgBuilder, LinuxSeccompOperator, Mount, Spec,
};

use super::error::{Result, RuntimeError};

/// A bundle the caller gave us, parsed.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    /// Loads `DIR/config.json`; every error names the file, and for a field
    /// that did not parse its JSON path and line:column.
    pub fn load(dir: &Path) -> Result<Self> {
        let abs = fs::canonicalize(dir).map_err(|e| RuntimeError::Bundle {
            path: dir.to_path_buf(),
            reason: format!("cannot open bundle directory: {e}"),
        })?;
        if !abs.is_dir() {
            return Err(RuntimeError::Bundle {
                path: dir.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let file = abs.join("config.json");
        let text = fs::read(&file).map_err(|e| RuntimeError::Bundle {
            path: dir.to_path_buf(),
            reason: format!("cannot read config.json: {e}"),
        })?;
        let spec = parse_spec(&file, &text)?;
        check_spec(&file, &spec)?;
        Ok(Self { dir: abs, spec })
    }

    /// The absolute rootfs path (relative paths are relative to the bundle).
    pub fn rootfs(&self) -> Result<PathBuf> {
        let root = self
            .spec
            .root()
            .as_ref()
            .ok_or_else(|| RuntimeError::Config {
                file: self.dir.join("config.json"),
                pointer: "/root".into(),
                message: "missing: the bundle must name its root filesystem".into(),
            })?;
        let path = if root.path().is_absolute() {
            root.path().clone()
        } else {
            self.dir.join(root.path())
        };
        fs::canonicalize(&path).map_err(|e| RuntimeError::Config {
            file: self.dir.join("config.json"),
            pointer: "/root/path".into(),
            message: format!("{}: {e}", path.display()),
        })
    }
}

/// Parses a spec with the JSON path of the first field that failed.
pub fn parse_spec(file: &Path, text: &[u8]) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize::<_, Spec>(de).map_err(|err| {
        let pointer = json_pointer(err.path());
        let inner = err.into_inner();
        RuntimeError::Config {
            file: file.to_path_buf(),
            pointer,
            message: inner.to_string(),
        }
    })
}

/// Renders serde_path_to_error's path as a JSON pointer (`/process/args/0`).
pub(crate) fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{key}")),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => out.push_str("/?"),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The checks runc makes before doing anything.
fn check_spec(file: &Path, spec: &Spec) -> Result<()> {
    if !spec.version().starts_with("1.") {
        return Err(RuntimeError::Config {
            file: file.to_path_buf(),
            pointer: "/ociVersion".into(),
            message: format!("unsupported version {:?}: expected 1.x.y", spec.version()),
        });
    }
    let process = spec.process().as_ref();
    let args_empty = process
        .and_then(|p| p.args().as_ref())
        .is_none_or(|a| a.is_empty());
    if args_empty {
        return Err(RuntimeError::Config {
            file: file.to_path_buf(),
            pointer: "/process/args".into(),
            message: "missing: the process needs at least one argument".into(),
        });
    }
    if spec.linux().is_none() {
        return Err(RuntimeError::Config {
            file: file.to_path_buf(),
            pointer: "/linux".into(),
            message: "missing: a Linux container needs the linux section".into(),
        });
    }
    let profile = process.and_then(|p| p.apparmor_profile().as_deref());
    if let Some(profile) = profile.filter(|p| !p.is_empty()) {
        // libcontainer would only say "io error: No such file or directory".
        if !apparmor_enabled() {
            return Err(RuntimeError::Config {
                file: file.to_path_buf(),
                pointer: "/process/apparmorProfile".into(),
                message: format!("profile {profile:?}: AppArmor is not enabled on this host"),
            });
        }
    }
    if let Some(want) = process.and_then(|p| p.oom_score_adj()) {
        check_oom_score_adj(file, want)?;
    }
    Ok(())
}

/// The kernel lets a process lower its `oom_score_adj` below the lowest
/// value a privileged process set for it only with CAP_SYS_RESOURCE;
/// libcontainer's failed write said only "io error" (a kubelet's pause
/// container asks for -998). That floor is not readable, so without the
/// capability the value is tried on this process and put back (raising it
/// again is always allowed; an unprivileged write moves no floor).
fn check_oom_score_adj(file: &Path, want: i32) -> Result<()> {
    const OWN: &str = "/proc/self/oom_score_adj";
    let privileged = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    let Some(own) = fs::read_to_string(OWN)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    if privileged || want >= own {
        return Ok(());
    }
    match fs::write(OWN, want.to_string()) {
        Ok(()) => {
            let _ = fs::write(OWN, own.to_string());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(RuntimeError::Config {
            file: file.to_path_buf(),
            pointer: "/process/oomScoreAdj".into(),
            message: format!(
                "{want} is below what this runtime may set (it runs at {own}); lowering it \
                 needs CAP_SYS_RESOURCE, which this runtime does not have (containerd: \
                 restrict_oom_score_adj = true)"
            ),
        }),
        // Anything else is libcontainer's to meet and report.
        Err(_) => Ok(()),
    }
}

/// Whether the kernel has AppArmor on (what libcontainer checks).
fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'))
}

/// Builds the effective spec of a container from its bundle: the rootfs and
/// relative bind sources made absolute, and a cgroup path of ours when the
/// bundle names none (libcontainer's default is a systemd-style name).
pub fn effective_spec(bundle: &Bundle, id: &str, systemd: bool) -> Result<Spec> {
    let mut spec = bundle.spec.clone();
    let rootfs = bundle.rootfs()?;
    if let Some(mut root) = spec.root().clone() {
        root.set_path(rootfs);
        spec.set_root(Some(root));
    }
    if let Some(mounts) = spec.mounts().clone() {
        let fixed: Vec<Mount> = mounts
            .into_iter()
            .map(|mut m| {
                let relative = m.source().as_ref().filter(|s| s.is_relative()).cloned();
                if let Some(src) = relative {
                    if crate::spec::is_bind(&m) {
                        m.set_source(Some(bundle.dir.join(src)));
                    }
                }
                m
            })
            .collect();
        spec.set_mounts(Some(fixed));
    }
    if systemd {
        // Before anything is made: the flag never falls back silently.
        super::cgroup::check_systemd_driver()?;
    }
    if let Some(mut linux) = spec.linux().clone() {
        if let (true, Some(path)) = (systemd, linux.cgroups_path()) {
            super::cgroup::systemd_cgroups_path(&path.to_string_lossy()).map_err(|message| {
                RuntimeError::Config {
                    file: bundle.dir.join("config.json"),
                    pointer: "/linux/cgroupsPath".into(),
                    message,
                }
            })?;
        }
        if linux.cgroups_path().is_none() {
            let path = if systemd {
                format!("system.slice:buntime:{id}")
            } else {
                format!("/buntime/{id}")
            };
            linux.set_cgroups_path(Some(PathBuf::from(path)));
        }
        spec.set_linux(Some(linux));
    }
    Ok(spec)
}

/// Older versions marked the stored spec with this annotation once its
/// seccomp arguments were in libcontainer's order. The mark is no longer
/// written (an annotation reaches the hooks' state, and a bundle could set
/// it to skip the swap); it is dropped from what a bundle brings.
const SECCOMP_ORDER_ANNOTATION: &str = "buntime.dev/seccomp-arg-order";

/// libcontainer 0.7 reads `SCMP_CMP_MASKED_EQ` the other way round from
/// runc: it takes `valueTwo` as the mask and `value` as the datum, while
/// runc, Docker's profiles and ours put the mask in `value`. Unconverted,
/// Docker's `clone` rule (mask = namespace flags, datum 0) becomes a mask of
/// 0 that matches any flags, letting a container create namespaces. We swap
/// the two before handing a spec to libcontainer, once: the stored spec
/// (`write_spec`) is in libcontainer's order, and rewriting it
/// (`write_stored_spec`) does not swap again.
pub fn to_libcontainer_seccomp_order(spec: &mut Spec) {
    if let Some(mut a) = spec.annotations().clone() {
        if a.remove(SECCOMP_ORDER_ANNOTATION).is_some() {
            spec.set_annotations(Some(a));
        }
    }
    let mut linux = match spec.linux().clone() {
        Some(l) => l,
        None => return,
    };
    if let Some(seccomp) = linux.seccomp().clone() {
        linux.set_seccomp(Some(libcontainer_arg_order(seccomp)));
        spec.set_linux(Some(linux));
    }
}

/// A profile with its masked-equality arguments in libcontainer's order
/// (see [`to_libcontainer_seccomp_order`]).
pub fn libcontainer_arg_order(mut seccomp: LinuxSeccomp) -> LinuxSeccomp {
    if let Some(mut syscalls) = seccomp.syscalls().clone() {
        for sc in syscalls.iter_mut() {
            if let Some(mut args) = sc.args().clone() {
                for arg in args.iter_mut() {
                    if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                        let swapped = LinuxSeccompArgBuilder::default()
                            .index(arg.index())
                            .op(arg.op())
                            .value(arg.value_two().unwrap_or(0))
                            .value_two(arg.value())
                            .build();
                        if let Ok(a) = swapped {
                            *arg = a;
                        }
                    }
                }
                sc.set_args(Some(args));
            }
        }
        seccomp.set_syscalls(Some(syscalls));
    }
    seccomp
}

/// libcontainer 0.7 loads the seccomp profile before dropping capabilities
/// only when `noNewPrivileges` is absent: a present `false` is taken for
/// `true` there, and loading after the drop fails without CAP_SYS_ADMIN.
/// Absent and `false` mean the same (OCI), so `false` is left out.
pub fn unset_false_no_new_privileges(spec: &mut Spec) {
    if let Some(mut p) = spec.process().clone() {
        if p.no_new_privileges() == Some(false) {
            p.set_no_new_privileges(None);
            spec.set_process(Some(p));
        }
    }
}

/// Writes the spec libcontainer runs as `config.json` in `dir`, its
/// seccomp arguments in libcontainer's order and without a `false`
/// `noNewPrivileges` (see [`unset_false_no_new_privileges`]).
pub fn write_spec(dir: &Path, spec: &Spec) -> Result<()> {
    let mut spec = spec.clone();
    to_libcontainer_seccomp_order(&mut spec);
    unset_false_no_new_privileges(&mut spec);
    write_stored_spec(dir, &spec)
}

/// Writes back a spec read from `dir/config.json` (already in
/// libcontainer's order).
pub fn write_stored_spec(dir: &Path, spec: &Spec) -> Result<()> {
    let file = dir.join(crate::statedir::SPEC_FILE);
    let body = serde_json::to_vec_pretty(spec)
        .map_err(|e| RuntimeError::Invalid(format!("encode {}: {e}", file.display())))?;
    fs::write(&file, body).map_err(|e| RuntimeError::io(format!("write {}", file.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_field_names_json_path() {
        let text =
            br#"{"ociVersion":"1.0.2","process":{"args":"sh","cwd":"/"},"root":{"path":"rootfs"}}"#;
        let err = parse_spec(Path::new("/b/config.json"), text).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/process/args"), "{msg}");
        assert!(msg.contains("line 1 column"), "{msg}");
    }

    #[test]
    fn invalid_json_is_reported_with_position() {
        let err = parse_spec(Path::new("/b/config.json"), b"{ not json").expect_err("must fail");
        assert!(err.to_string().contains("line 1 column"), "{err}");
    }
}
