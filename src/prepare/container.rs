//! The prepared spec finished for one container, once `create` knows its
//! root filesystem and where its state lies: deny masks over the files
//! the policy names (and a pattern matches now), cgroup mounts kept
//! read-only, the supervisor's directory, Landlock paths made canonical.
//! Still no side effects: what needs files made (the network hook, the
//! seccomp programs, the learning filter, staging binds) is `create`'s.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{Mount, MountBuilder, Spec};

use super::{PrepareError, PreparedContainer};
use crate::landlock::LandlockPlan;
use crate::spec::SpecMode;
use crate::statedir::{DENIED_FILE, RUN_DIR};

type Result<T> = std::result::Result<T, PrepareError>;

/// Where the container is made.
#[derive(Clone, Copy, Debug)]
pub struct ContainerSite<'a> {
    /// The container's root filesystem on the host.
    pub rootfs: &'a Path,
    /// Where what the container binds from buntime lies: its state
    /// directory, or a user namespace's gate (`runtime::userns`).
    pub bind_dir: &'a Path,
}

/// What finishing decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Some deny entry is a file: `create` makes the unreadable file
    /// ([`DENIED_FILE`] in the bind directory).
    pub deny_files: bool,
    /// The container has a supervisor (`buntime.dev/supervisor` is not
    /// `off`): `create` makes its directory ([`RUN_DIR`]).
    pub supervised: bool,
}

/// Bundle annotation `buntime.dev/supervisor: off` runs the container
/// without a supervisor (no broker, no `/run/buntime`): it only removes
/// rights, so any bundle may ask for it.
pub const ANNOTATION_SUPERVISOR_OFF: &str = "buntime.dev/supervisor";

fn wants_supervisor(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SUPERVISOR_OFF))
        .is_none_or(|v| v != "off")
}

/// Finishes `prepared.effective` and `prepared.landlock` for the
/// container at `site`.
pub fn finish_for_container(
    prepared: &mut PreparedContainer,
    site: ContainerSite<'_>,
) -> Result<Finished> {
    let host_paths = prepared.mode == SpecMode::Run;
    let spec = &mut prepared.effective;
    let deny_files = unreadable_deny_files(
        spec,
        &prepared.resolved.policy,
        host_paths,
        site.rootfs,
        site.bind_dir,
    )?;
    super::mounts::keep_cgroup_readonly(spec)?;
    let supervised = wants_supervisor(spec);
    if supervised {
        add_supervisor(spec, &mut prepared.landlock, &site.bind_dir.join(RUN_DIR))?;
    }
    // Canonical paths now, so that applying the plan later (at every exec)
    // need not follow symlinks the container may have planted since.
    // (`buntime run` binds host paths at the same place: they are already
    // what the container sees; only program names need looking up.)
    if host_paths {
        prepared.landlock.resolve_names_in_root(Path::new("/"));
    } else {
        prepared.landlock.resolve_in_root(site.rootfs);
    }
    Ok(Finished {
        deny_files,
        supervised,
    })
}

/// A read-only bind with nothing to run or open as a device: what buntime
/// itself puts into a container (the supervisor's directory, deny masks).
fn sealed_bind(src: &Path, dst: &Path) -> Result<Mount> {
    MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(
            ["bind", "ro", "nosuid", "nodev", "noexec"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| PrepareError::Invalid(format!("mount {}: {e}", dst.display())))
}

/// A denied *file* is masked with an unreadable file instead of
/// `/dev/null`, so that reading it fails (`EACCES`: no capability in the
/// sandbox overrides the mode) instead of looking empty. Directories stay
/// masked by an empty read-only tmpfs. A deny pattern (`/etc/shadow*`)
/// is masked as the entries it matches now, in the container's view.
/// Returns whether any file was found.
fn unreadable_deny_files(
    spec: &mut Spec,
    policy: &crate::policy::Policy,
    host_paths: bool,
    rootfs: &Path,
    extra: &Path,
) -> Result<bool> {
    let (files, masked) = deny_matches(spec, policy, host_paths, rootfs)?;
    if !masked.is_empty() {
        if let Some(mut linux) = spec.linux().clone() {
            let mut all = linux.masked_paths().clone().unwrap_or_default();
            all.extend(masked);
            linux.set_masked_paths(Some(all));
            spec.set_linux(Some(linux));
        }
    }
    if files.is_empty() {
        return Ok(false);
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for p in &files {
        mounts.push(sealed_bind(&extra.join(DENIED_FILE), p)?);
    }
    spec.set_mounts(Some(mounts));
    if let Some(mut linux) = spec.linux().clone() {
        if let Some(mut masked) = linux.masked_paths().clone() {
            masked.retain(|m| !files.iter().any(|f| Path::new(m) == f));
            linux.set_masked_paths(Some(masked));
        }
        spec.set_linux(Some(linux));
    }
    Ok(true)
}

/// What the policy's deny entries name in the container's view now: the
/// regular files (to get the unreadable file) and the other entries a
/// pattern matches (for libcontainer's masking).
fn deny_matches(
    spec: &Spec,
    policy: &crate::policy::Policy,
    host_paths: bool,
    rootfs: &Path,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    use super::mounts::{refuse_symlinked_mask, MaskView};
    let view = |p: &Path| {
        if host_paths {
            p.to_path_buf()
        } else {
            rootfs.join(p.strip_prefix("/").unwrap_or(p))
        }
    };
    let mut files = Vec::new();
    let mut masked = Vec::new();
    // A mask is a mount, and mounts follow symlinks: one in the way of a
    // deny path fails create (`super::mounts`).
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let mask_view = if host_paths {
        MaskView::Host
    } else {
        MaskView::Image {
            rootfs,
            mounts: &spec_mounts,
        }
    };
    let no_link = |rule: &Path, p: &Path| refuse_symlinked_mask(rule, p, &mask_view);
    for p in &policy.filesystem.deny {
        let p = crate::policy::normalize_path(p.as_path());
        let Some((dir, prefix)) = crate::policy::paths::deny_pattern(&p) else {
            no_link(&p, &p)?;
            if fs::symlink_metadata(view(&p)).is_ok_and(|m| m.is_file()) {
                files.push(p);
            }
            continue;
        };
        // The pattern's directory must be the one the policy names (not a
        // link in the image), and listable: else the pattern would mask
        // nothing while the names resolve elsewhere inside.
        no_link(&p, dir)?;
        let Some(found) = pattern_entries(&p, dir, prefix, &view(dir))? else {
            continue;
        };
        for found in found {
            no_link(&p, &found)?;
            // As for an ordinary entry: a regular file gets the
            // unreadable file, anything else libcontainer's masking.
            match fs::symlink_metadata(view(&found)) {
                Ok(m) if m.is_file() => files.push(found),
                Ok(_) => masked.push(found.to_string_lossy().into_owned()),
                Err(_) => {}
            }
        }
    }
    Ok((files, masked))
}

/// The entries of `dir` (seen at `listed`) a deny pattern's `prefix`
/// matches; `None` when the directory does not exist.
fn pattern_entries(
    rule: &Path,
    dir: &Path,
    prefix: &[u8],
    listed: &Path,
) -> Result<Option<Vec<PathBuf>>> {
    use std::os::unix::ffi::OsStrExt;
    let entries = match fs::read_dir(listed) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PrepareError::Refused(format!(
                "filesystem.deny {:?}: cannot list {} to mask what it matches: {e}",
                rule.display(),
                dir.display()
            )))
        }
    };
    Ok(Some(
        entries
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(prefix))
            .map(|e| dir.join(e.file_name()))
            .collect(),
    ))
}

/// Binds the supervisor's directory (socket and segment; `source`)
/// read-only at `/run/buntime`, points the worker at it through the
/// environment (which `exec` inherits: it reads the same effective
/// config.json), and lets Landlock read it.
fn add_supervisor(spec: &mut Spec, plan: &mut LandlockPlan, source: &Path) -> Result<()> {
    use crate::statedir::{CONTAINER_CONTROL, CONTAINER_DIR, CONTAINER_IPC};
    let mount = sealed_bind(source, Path::new(CONTAINER_DIR))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| !m.destination().starts_with(CONTAINER_DIR));
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    if let Some(mut process) = spec.process().clone() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("BUNTIME_IPC=") && !e.starts_with("BUNTIME_CONTROL="));
        env.push(format!("{}={CONTAINER_IPC}", crate::ipc::ENV_IPC));
        env.push(format!("{}={CONTAINER_CONTROL}", crate::ipc::ENV_CONTROL));
        process.set_env(Some(env));
        spec.set_process(Some(process));
    }
    plan.read.push(PathBuf::from(CONTAINER_DIR));
    Ok(())
}
