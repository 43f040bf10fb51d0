//! The container's precompiled seccomp programs and Landlock plan in its
//! state directory: written by `create`, loaded again by every `exec`.

use std::fs;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::landlock::LandlockPlan;
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::state::{Meta, Root};
use crate::statedir::{
    StateDir, LANDLOCK_FILE, LEGACY_POLICY_SECCOMP_FILE, POLICY_SECCOMP_BPF_FILE, SECCOMP_BPF_FILE,
};

/// Compiles (or takes from the cache) the container's seccomp programs and
/// stores them in its state directory, in the order the executor loads
/// them; also returns the `buntime.dev/seccomp` annotation naming them
/// (`exec` refuses to run without one it names). The bundle's profile
/// leaves the spec (libcontainer would compile it again in init) when it
/// can be loaded late, right before exec: no notify action, no_new_privs
/// set (loading after the capability drop needs it; a bundle without it
/// keeps setuid binaries working and libcontainer's order), and no
/// startContainer hooks (libcontainer runs them after its filter, in the
/// container).
pub(super) fn precompile_seccomp(
    root: &Root,
    extra: &StateDir,
    spec: &mut Spec,
    policy: Option<&LinuxSeccomp>,
) -> Result<(Vec<crate::runtime::seccomp_bpf::Program>, String)> {
    use crate::runtime::seccomp_bpf::{cache_dir, precompilable, Program};
    let cache = cache_dir(&root.extra_root());
    let mut programs = Vec::new();
    let mut files = Vec::new();
    let nnp = spec
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false);
    let start_hooks = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().as_ref())
        .is_some_and(|v| !v.is_empty());
    if let Some(mut linux) = spec.linux().clone() {
        let late = |p: &&LinuxSeccomp| nnp && !start_hooks && precompilable(p);
        if let Some(profile) = linux.seccomp().as_ref().filter(late) {
            let p = Program::cached_at(&cache, profile, &extra.file(SECCOMP_BPF_FILE))?;
            programs.push(p);
            files.push(SECCOMP_BPF_FILE);
            linux.set_seccomp(None);
            spec.set_linux(Some(linux));
        }
    }
    if let Some(profile) = policy {
        let p = Program::cached_at(&cache, profile, &extra.file(POLICY_SECCOMP_BPF_FILE))?;
        programs.push(p);
        files.push(POLICY_SECCOMP_BPF_FILE);
    }
    let note = if files.is_empty() {
        "libcontainer".to_string()
    } else {
        format!("bpf: {}", files.join(" "))
    };
    Ok((programs, note))
}

/// The precompiled seccomp programs of a container, for `exec`. Every
/// program its `buntime.dev/seccomp` annotation names must be there: a
/// missing one fails the exec rather than run it less confined. A
/// container made before programs existed has its stacked profile as JSON.
pub fn load_seccomp_programs(
    root: &Root,
    id: &str,
    meta: &Meta,
) -> Result<Vec<crate::runtime::seccomp_bpf::Program>> {
    use crate::runtime::seccomp_bpf::Program;
    let dir = root.state_dir(id);
    let Some(note) = meta.annotations.get("buntime.dev/seccomp") else {
        let legacy = dir.file(LEGACY_POLICY_SECCOMP_FILE);
        return match fs::read(&legacy) {
            Ok(text) => {
                let profile: LinuxSeccomp = serde_json::from_slice(&text)
                    .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", legacy.display())))?;
                Ok(vec![Program::compile(
                    &crate::runtime::bundle::libcontainer_arg_order(profile),
                )?])
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RuntimeError::io(format!("read {}", legacy.display()), e)),
        };
    };
    let Some(names) = note.strip_prefix("bpf: ") else {
        return Ok(Vec::new());
    };
    names
        .split(' ')
        .map(|name| {
            if name != SECCOMP_BPF_FILE && name != POLICY_SECCOMP_BPF_FILE {
                return Err(RuntimeError::Invalid(format!(
                    "container {id:?}: unknown seccomp program {name:?}"
                )));
            }
            Program::load(&dir.file(name))
        })
        .collect()
}

/// The Landlock plan stored for a container, if Landlock applies to it.
pub fn load_landlock(root: &Root, id: &str, meta: &Meta) -> Result<Option<LandlockPlan>> {
    let applied = meta
        .annotations
        .get("buntime.dev/landlock")
        .is_some_and(|v| v.starts_with("abi-"));
    if !applied {
        return Ok(None);
    }
    Ok(Some(root.state_dir(id).read_json(LANDLOCK_FILE)?))
}
