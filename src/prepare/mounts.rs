//! Mount options libcontainer 0.7 would lose, and masks it would misplace.
//!
//! * A `cgroup` mount on cgroup v1 becomes a tmpfs plus one bind (or
//!   namespaced mount) per hierarchy, made `rw` whatever the spec says:
//!   a container whose policy grants writes to `/sys` could raise its own
//!   limits. runc gives them the spec's flags; we list the tmpfs and each
//!   hierarchy in `linux.readonlyPaths`, which libcontainer remounts
//!   read-only (with nosuid, nodev, noexec) after pivot_root, before any
//!   capability is dropped. The executor could not: by then it has none.
//! * A mask (`filesystem.deny` in `linux.maskedPaths` or a bind of the
//!   unreadable file) is a mount, and a mount follows a symlink at its
//!   destination: the mask would land where the image's link points (the
//!   supervisor's `/run/buntime`, say) and the denied name would stay as
//!   it is. A mount cannot be placed on the link itself, so such a deny
//!   entry fails `create`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::{Mount, Spec};

use super::PrepareError;

type Result<T> = std::result::Result<T, PrepareError>;

/// Where the cgroup v1 hierarchies are mounted on the host (libcontainer
/// binds each into the container under the same name).
const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True when the mount's options end up read-only (the last of `ro`/`rw`
/// wins, as in mount(8)).
pub fn is_readonly(m: &Mount) -> bool {
    m.options()
        .iter()
        .flatten()
        .rev()
        .find(|o| *o == "ro" || *o == "rw")
        .is_some_and(|o| o == "ro")
}

/// For each read-only `cgroup` mount, adds its destination and every
/// cgroup v1 hierarchy under it to `linux.readonlyPaths` (parents first).
/// On a cgroup v2 host the list of hierarchies is empty and libcontainer
/// mounts cgroup2 with the spec's flags; the extra entry is harmless.
pub fn keep_cgroup_readonly(spec: &mut Spec) -> Result<()> {
    let dests: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("cgroup") && is_readonly(m))
        .map(|m| m.destination().clone())
        .collect();
    if dests.is_empty() {
        return Ok(());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|err| PrepareError::Io {
        context: "read /proc/self/mountinfo".into(),
        err,
    })?;
    let names = v1_hierarchies(&mountinfo);
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let mut paths = linux.readonly_paths().clone().unwrap_or_default();
    for dest in dests {
        let all = std::iter::once(dest.clone()).chain(names.iter().map(|n| dest.join(n)));
        for p in all {
            let p = p.to_string_lossy().into_owned();
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    linux.set_readonly_paths(Some(paths));
    spec.set_linux(Some(linux));
    Ok(())
}

/// The names of the host's cgroup v1 hierarchies under `/sys/fs/cgroup`
/// (`memory`, `cpu,cpuacct`, `systemd`), as libcontainer names them in
/// the container: the last component of each mount point.
fn v1_hierarchies(mountinfo: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SRC SUPER"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup") {
            continue;
        }
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let Ok(rest) = Path::new(point).strip_prefix(HOST_CGROUP_ROOT) else {
            continue;
        };
        let mut parts = rest.components();
        if let (Some(Component::Normal(name)), None) = (parts.next(), parts.next()) {
            let name = name.to_string_lossy().into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Where a deny path is looked at when `create` checks it for symlinks.
pub enum MaskView<'a> {
    /// `buntime run`: host paths, bound at the same place. Only the
    /// masked name itself is checked: its parents are the host's, and the
    /// binds are made at the named paths, not through them.
    Host,
    /// The container's root as the bundle's mounts will show it: the
    /// image, with each bind's source at its destination. Every component
    /// is checked.
    Image {
        rootfs: &'a Path,
        mounts: &'a [Mount],
    },
}

/// What is at a container path at create time.
enum Seen {
    /// Look here (on the host's side).
    At(PathBuf),
    /// A mount's destination: the mount sits there, no link of the image.
    MountPoint,
    /// Beneath a filesystem made fresh (tmpfs, proc) or a source we cannot
    /// place: nothing of the image, nothing to mask yet.
    Nothing,
}

impl MaskView<'_> {
    fn seen(&self, p: &Path) -> Seen {
        let Self::Image { rootfs, mounts } = self else {
            return Seen::At(p.to_path_buf());
        };
        // Mounts are made in the spec's order: the last one covering `p`
        // is what the container sees there (a later bind of `/etc` hides
        // an earlier one of `/etc/ssh`).
        let under = mounts.iter().rev().find(|m| p.starts_with(m.destination()));
        let Some(m) = under else {
            return Seen::At(rootfs.join(p.strip_prefix("/").unwrap_or(p)));
        };
        let rest = p.strip_prefix(m.destination()).unwrap_or(Path::new(""));
        if rest.as_os_str().is_empty() {
            return Seen::MountPoint;
        }
        let bind = crate::spec::is_bind(m);
        match m.source() {
            Some(src) if bind && src.is_absolute() => Seen::At(src.join(rest)),
            _ => Seen::Nothing,
        }
    }
}

/// Refuses a mask whose path passes through a symlink. `path` is the
/// container path to be masked (for a pattern, a name it matched), `rule`
/// the deny entry as the policy wrote it. A missing component ends the
/// walk: there is nothing to mask.
pub fn refuse_symlinked_mask(rule: &Path, path: &Path, view: &MaskView<'_>) -> Result<()> {
    let (prefixes, where_) = match view {
        MaskView::Host => (vec![path.to_path_buf()], "on the host"),
        MaskView::Image { .. } => {
            let mut all = Vec::new();
            let mut cur = PathBuf::from("/");
            for c in path.components() {
                if let Component::Normal(n) = c {
                    cur.push(n);
                    all.push(cur.clone());
                }
            }
            (all, "in the image")
        }
    };
    for p in prefixes {
        let seen = match view.seen(&p) {
            Seen::At(seen) => seen,
            Seen::MountPoint => continue,
            Seen::Nothing => return Ok(()),
        };
        match fs::symlink_metadata(&seen) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&seen)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".into());
                return Err(PrepareError::Refused(format!(
                    "filesystem.deny {:?}: {:?} is a symlink {where_} (to {target:?}); a mask \
                     is never placed through a symlink (the mount would land on its target): \
                     remove the link or deny the path it points to",
                    rule.display().to_string(),
                    p.display().to_string(),
                )));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_are_the_cgroup_mounts_under_sys_fs_cgroup() {
        let info = "\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
28 26 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
29 26 0:27 / /sys/fs/cgroup/cpu,cpuacct rw shared:3 - cgroup cgroup rw,cpu,cpuacct
30 26 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 1 0:28 /x /elsewhere/memory rw - cgroup cgroup rw,memory
32 30 0:28 /x /sys/fs/cgroup/memory/x rw - cgroup cgroup rw,memory
";
        assert_eq!(
            v1_hierarchies(info),
            vec!["systemd", "cpu,cpuacct", "memory"]
        );
    }

    #[test]
    fn the_last_of_ro_and_rw_wins() {
        let m = |opts: &[&str]| {
            let mut m = Mount::default();
            m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
            m
        };
        assert!(is_readonly(&m(&["nosuid", "ro"])));
        assert!(!is_readonly(&m(&["ro", "rw"])));
        assert!(!is_readonly(&m(&["nosuid"])));
    }

    #[test]
    fn a_symlink_on_the_masked_path_is_refused_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).expect("etc");
        fs::create_dir_all(root.join("run/buntime")).expect("run");
        std::os::unix::fs::symlink("/run/buntime", root.join("etc/sudoers.d")).expect("link");
        fs::write(root.join("etc/sudoers"), "x").expect("file");
        let image = MaskView::Image {
            rootfs: &root,
            mounts: &[],
        };
        let rule = Path::new("/etc/sudoers.d");
        let err = refuse_symlinked_mask(rule, rule, &image).expect_err("a symlink is refused");
        let text = err.to_string();
        assert!(text.contains("\"/etc/sudoers.d\""), "{text}");
        assert!(text.contains("/run/buntime"), "{text}");
        // Below the link: the parent is the link, refused too.
        let below = Path::new("/etc/sudoers.d/extra");
        assert!(refuse_symlinked_mask(rule, below, &image).is_err());
        // A plain file and a missing path are fine.
        let plain = Path::new("/etc/sudoers");
        assert!(refuse_symlinked_mask(plain, plain, &image).is_ok());
        let gone = Path::new("/etc/ssh/nothing");
        assert!(refuse_symlinked_mask(gone, gone, &image).is_ok());
    }

    #[test]
    fn binds_show_their_source_and_fresh_mounts_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        let vol = dir.path().join("volume");
        fs::create_dir_all(root.join("etc/ssh")).expect("etc");
        fs::create_dir_all(&vol).expect("volume");
        // A link in a volume bound at /etc/ssh, and one in the image under
        // the tmpfs at /tmp (hidden by it).
        std::os::unix::fs::symlink("/run/buntime", vol.join("keys")).expect("link");
        fs::create_dir_all(root.join("tmp")).expect("tmp");
        std::os::unix::fs::symlink("/run/buntime", root.join("tmp/x")).expect("link");
        let mount = |dest: &str, typ: &str, src: &Path| {
            let mut m = Mount::default();
            m.set_destination(PathBuf::from(dest));
            m.set_typ(Some(typ.into()));
            m.set_source(Some(src.to_path_buf()));
            m
        };
        let mounts = [
            mount("/etc/ssh", "bind", &vol),
            mount("/tmp", "tmpfs", Path::new("tmpfs")),
        ];
        let image = MaskView::Image {
            rootfs: &root,
            mounts: &mounts,
        };
        let keys = Path::new("/etc/ssh/keys");
        assert!(refuse_symlinked_mask(keys, keys, &image).is_err());
        let tmp = Path::new("/tmp/x");
        assert!(refuse_symlinked_mask(tmp, tmp, &image).is_ok());
        // A later bind of /etc hides the earlier one of /etc/ssh: the link
        // that counts is the one in the later source.
        let etc = dir.path().join("etc-volume");
        fs::create_dir_all(etc.join("ssh")).expect("etc volume");
        std::os::unix::fs::symlink("/run/buntime", etc.join("ssh/keys2")).expect("link");
        let later = [mount("/etc/ssh", "bind", &vol), mount("/etc", "bind", &etc)];
        let image = MaskView::Image {
            rootfs: &root,
            mounts: &later,
        };
        let keys2 = Path::new("/etc/ssh/keys2");
        assert!(refuse_symlinked_mask(keys2, keys2, &image).is_err());
        assert!(refuse_symlinked_mask(keys, keys, &image).is_ok());
        // `buntime run`: the name itself only, on the host.
        let host_link = vol.join("keys");
        assert!(refuse_symlinked_mask(&host_link, &host_link, &MaskView::Host).is_err());
        assert!(refuse_symlinked_mask(&vol, &host_link.join("x"), &MaskView::Host).is_ok());
    }
}
